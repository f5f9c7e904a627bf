package demux_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/gopidbox/pidbox/clock"
	"github.com/gopidbox/pidbox/internal/demux"
	"github.com/gopidbox/pidbox/internal/wire"
	"github.com/gopidbox/pidbox/reply"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type msg struct {
	ticket, node string
	value        any
	clock        uint64
	expires      time.Time
	codec        wire.Codec
}

func (m msg) encode(t testing.TB) []byte {
	c := m.codec
	if c == nil {
		c = wire.JSON{}
	}
	body, err := wire.EncodeReply(c, m.node, m.value)
	require.NoError(t, err)
	return wire.Encode(&wire.Envelope{
		Body: body, ContentType: c.ContentType(), ContentEncoding: c.ContentEncoding(),
		Headers: wire.Headers{Clock: m.clock, Ticket: m.ticket, Expires: wire.ExpiresAt(m.expires)},
	})
}

func pong(ticket, node string) msg {
	return msg{ticket: ticket, node: node, value: map[string]string{"ok": "pong"}}
}

func quietDemux(opts demux.Options) *demux.Demux {
	opts.Logger = slog.New(slog.DiscardHandler)
	return demux.New(opts)
}

func TestRoutesByTicket(t *testing.T) {
	clk := &clock.Lamport{}
	d := quietDemux(demux.Options{Clock: clk})
	a, b := d.Wait("A"), d.Wait("B")
	defer a.Close()
	defer b.Close()
	m := pong("A", "w1")
	m.clock = 41
	require.NoError(t, d.Dispatch(m.encode(t)))
	assert.Equal(t, uint64(42), clk.Value(), "clock adjusted past the reply's")
	require.NoError(t, d.Dispatch(pong("B", "w2").encode(t)))

	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	r, err := a.Next(ctx)
	require.NoError(t, err)
	assert.Equal(t, "w1", r.Node)
	assert.Equal(t, uint64(41), r.Clock)
	v, err := reply.As[map[string]string](r)
	require.NoError(t, err)
	assert.Equal(t, "pong", v["ok"])

	r, err = b.Next(ctx)
	require.NoError(t, err)
	assert.Equal(t, "w2", r.Node)
	assert.Equal(t, uint64(2), d.Stats().Delivered)
}

func TestUnclaimedKeptForLaterGather(t *testing.T) {
	d := quietDemux(demux.Options{})
	require.NoError(t, d.Dispatch(pong("later", "w1").encode(t)))
	require.NoError(t, d.Dispatch(pong("later", "w2").encode(t)))
	assert.Equal(t, 2, d.Unclaimed())

	in := d.Wait("later")
	var nodes []string
	for r, err := range demux.Collect(ctxTimeout(t, time.Second), in, demux.Rules{Limit: 2}) {
		require.NoError(t, err)
		nodes = append(nodes, r.Node)
	}
	assert.Equal(t, []string{"w1", "w2"}, nodes)
	assert.Equal(t, 0, d.Unclaimed())
}

func TestUnclaimedBoundedByCount(t *testing.T) {
	d := quietDemux(demux.Options{MaxUnclaimed: 50})
	for i := range 10_000 {
		require.NoError(t, d.Dispatch(pong(fmt.Sprintf("t%d", i), "w").encode(t)))
		require.LessOrEqual(t, d.Unclaimed(), 50)
	}
	assert.Equal(t, 50, d.Unclaimed())
	st := d.Stats()
	assert.Equal(t, uint64(10_000), st.Kept)
	assert.Equal(t, uint64(10_000-50), st.Evicted)

	// The newest are the ones kept.
	in := d.Wait("t9999")
	defer in.Close()
	r, err := in.Next(ctxTimeout(t, time.Second))
	require.NoError(t, err)
	assert.Equal(t, "w", r.Node)
	assert.Equal(t, 49, d.Unclaimed())
}

func TestUnclaimedBoundedByAge(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	d := quietDemux(demux.Options{UnclaimedAge: time.Minute, Now: func() time.Time { return now }})
	require.NoError(t, d.Dispatch(pong("old", "w").encode(t)))
	now = now.Add(30 * time.Second)
	require.NoError(t, d.Dispatch(pong("new", "w").encode(t)))
	assert.Equal(t, 2, d.Unclaimed())
	now = now.Add(31 * time.Second)
	assert.Equal(t, 1, d.Unclaimed(), "the old one aged out")
	now = now.Add(30 * time.Second)
	assert.Equal(t, 0, d.Unclaimed())
	assert.Equal(t, uint64(2), d.Stats().Evicted)
}

func TestDropped(t *testing.T) {
	now := time.Now()
	d := quietDemux(demux.Options{Open: accept("json"), MaxSize: 4096, Now: func() time.Time { return now }})
	in := d.Wait("T")
	defer in.Close()
	expired := pong("T", "late")
	expired.expires = now.Add(-time.Millisecond)
	noTicket := pong("", "w")
	msgpack := pong("T", "w")
	msgpack.codec = wire.Msgpack{}
	big := msg{ticket: "T", node: "w", value: string(make([]byte, 5000))}
	cases := map[string]struct {
		in   []byte
		want error
	}{
		"garbage":      {[]byte("not json"), wire.ErrMalformed},
		"no ticket":    {noTicket.encode(t), wire.ErrMalformed},
		"not accepted": {msgpack.encode(t), wire.ErrUnsupported},
		"too large":    {big.encode(t), wire.ErrTooLarge},
		"two nodes":    {msg{ticket: "T"}.encodeRaw(t, `{"a": 1, "b": 2}`), wire.ErrMalformed},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			assert.ErrorIs(t, d.Dispatch(tc.in), tc.want)
		})
	}
	err := d.Dispatch(expired.encode(t))
	assert.ErrorContains(t, err, "expired")
	assert.Equal(t, uint64(len(cases)+1), d.Stats().Dropped)
	assert.Equal(t, uint64(0), d.Stats().Delivered)
	// Nothing reached the waiting call.
	_, err = in.Next(ctxTimeout(t, 50*time.Millisecond))
	assert.ErrorIs(t, err, context.DeadlineExceeded)
}

// accept opens the envelopes of the named serializers only.
func accept(names ...string) func(*wire.Envelope) (wire.Codec, []byte, string, error) {
	return func(env *wire.Envelope) (wire.Codec, []byte, string, error) {
		c, err := wire.CodecFor(env.ContentType, names)
		return c, env.Body, "", err
	}
}

func (m msg) encodeRaw(t testing.TB, body string) []byte {
	return wire.Encode(&wire.Envelope{Body: []byte(body), ContentType: "application/json", Headers: wire.Headers{Ticket: m.ticket}})
}

func TestRemoteError(t *testing.T) {
	for _, c := range wire.Codecs() {
		d := quietDemux(demux.Options{})
		in := d.Wait("T")
		m := msg{ticket: "T", node: "w1", value: wire.ErrorValue{Error: "KeyError('nosuch')"}, codec: c}
		require.NoError(t, d.Dispatch(m.encode(t)))
		r, err := in.Next(ctxTimeout(t, time.Second))
		require.NoError(t, err)
		var re *reply.RemoteError
		require.ErrorAs(t, r.Err, &re, c.Name())
		assert.Equal(t, "w1", re.Node)
		assert.Equal(t, "KeyError('nosuch')", re.Message)
		assert.Equal(t, "w1: KeyError('nosuch')", r.Err.Error())
		in.Close()
	}
}

func TestPendingBounded(t *testing.T) {
	d := quietDemux(demux.Options{MaxPending: 3})
	in := d.Wait("T")
	defer in.Close()
	for i := range 5 {
		require.NoError(t, d.Dispatch(pong("T", fmt.Sprint(i)).encode(t)))
	}
	assert.Equal(t, uint64(3), d.Stats().Delivered)
	assert.Equal(t, uint64(2), d.Stats().Dropped)
}

func collect(t *testing.T, ctx context.Context, in *demux.Inbox, rules demux.Rules) ([]reply.Reply, error) {
	t.Helper()
	var out []reply.Reply
	for r, err := range demux.Collect(ctx, in, rules) {
		if err != nil {
			return out, err
		}
		out = append(out, r)
	}
	return out, nil
}

func TestCollectStopsAtLimit(t *testing.T) {
	d := quietDemux(demux.Options{})
	in := d.Wait("T")
	for i := range 5 {
		require.NoError(t, d.Dispatch(pong("T", fmt.Sprint(i)).encode(t)))
	}
	start := time.Now()
	got, err := collect(t, ctxTimeout(t, 10*time.Second), in, demux.Rules{Limit: 3})
	require.NoError(t, err)
	assert.Len(t, got, 3)
	assert.Less(t, time.Since(start), 5*time.Second, "returned at the limit, not the deadline")
	// The inbox is closed: further replies for T are unclaimed.
	assert.Equal(t, 0, d.Unclaimed())
	require.NoError(t, d.Dispatch(pong("T", "late").encode(t)))
	assert.Equal(t, 1, d.Unclaimed())
}

func TestCollectStopsWhenExpectedReplied(t *testing.T) {
	d := quietDemux(demux.Options{})
	in := d.Wait("T")
	go func() {
		for _, n := range []string{"a", "x", "b", "a"} {
			time.Sleep(10 * time.Millisecond)
			_ = d.Dispatch(pong("T", n).encode(t))
		}
	}()
	got, err := collect(t, ctxTimeout(t, 10*time.Second), in, demux.Rules{Expect: []string{"a", "b"}})
	require.NoError(t, err)
	var nodes []string
	for _, r := range got {
		nodes = append(nodes, r.Node)
	}
	assert.Equal(t, []string{"a", "x", "b"}, nodes, "returns as soon as a and b replied")
	time.Sleep(50 * time.Millisecond) // let the last dispatch finish before goleak

	// An empty expectation ends at once.
	got, err = collect(t, ctxTimeout(t, 10*time.Second), d.Wait("U"), demux.Rules{Expect: []string{}})
	require.NoError(t, err)
	assert.Empty(t, got)
}

func TestCollectDeadlineIsTotal(t *testing.T) {
	d := quietDemux(demux.Options{})
	in := d.Wait("T")
	// Steady replies every 20 ms would keep a per-message idle timer
	// (Kombu's) alive forever; ours is a total deadline.
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
				_ = d.Dispatch(pong("T", fmt.Sprint(i)).encode(t))
			}
		}
	}()
	start := time.Now()
	got, err := collect(t, ctxTimeout(t, 300*time.Millisecond), in, demux.Rules{})
	elapsed := time.Since(start)
	close(stop)
	<-done
	require.NoError(t, err, "the deadline is a normal end")
	assert.NotEmpty(t, got)
	assert.GreaterOrEqual(t, elapsed, 300*time.Millisecond)
	assert.Less(t, elapsed, 3*time.Second)
}

func TestCollectCancelled(t *testing.T) {
	d := quietDemux(demux.Options{})
	in := d.Wait("T")
	require.NoError(t, d.Dispatch(pong("T", "a").encode(t)))
	ctx, cancel := context.WithCancel(context.Background())
	go func() { time.Sleep(30 * time.Millisecond); cancel() }()
	got, err := collect(t, ctx, in, demux.Rules{})
	assert.True(t, errors.Is(err, context.Canceled))
	assert.Len(t, got, 1, "replies before the cancel are kept")
}

func TestCollectEarlyBreakAndDuplicates(t *testing.T) {
	d := quietDemux(demux.Options{})
	in := d.Wait("T")
	for _, n := range []string{"a", "a", "b", "c"} {
		require.NoError(t, d.Dispatch(pong("T", n).encode(t)))
	}
	var got []reply.Reply
	for r, err := range demux.Collect(ctxTimeout(t, 10*time.Second), in, demux.Rules{}) {
		require.NoError(t, err)
		got = append(got, r)
		if r.Node == "b" {
			break
		}
	}
	require.Len(t, got, 3)
	assert.False(t, got[0].Duplicate)
	assert.True(t, got[1].Duplicate, "second reply from a")
	assert.False(t, got[2].Duplicate)
	// Breaking out closed the inbox; c's reply was queued there and is
	// gone with it, and new replies for T are kept as unclaimed.
	require.NoError(t, d.Dispatch(pong("T", "d").encode(t)))
	assert.Equal(t, 1, d.Unclaimed())
}

func ctxTimeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func TestCollectQuietGap(t *testing.T) {
	d := quietDemux(demux.Options{})
	in := d.Wait("T")
	for _, n := range []string{"a", "b"} {
		require.NoError(t, d.Dispatch(pong("T", n).encode(t)))
	}
	start := time.Now()
	got, err := collect(t, ctxTimeout(t, 10*time.Second), in, demux.Rules{Quiet: 50 * time.Millisecond})
	require.NoError(t, err, "a quiet gap ends a gather normally")
	assert.Len(t, got, 2)
	assert.Less(t, time.Since(start), 5*time.Second, "ends after the gap, not at the deadline")

	// Before a first reply, the gap does not run: the deadline does.
	in = d.Wait("U")
	got, err = collect(t, ctxTimeout(t, 200*time.Millisecond), in, demux.Rules{Quiet: 10 * time.Millisecond})
	require.NoError(t, err)
	assert.Empty(t, got)
}

// Discarded hears of every reply dropped, with its reason.
func TestDiscardedReasons(t *testing.T) {
	got := map[string]int{}
	d := quietDemux(demux.Options{MaxUnclaimed: 2, MaxPending: 1, Discarded: func(reason string, n int) { got[reason] += n }})
	in := d.Wait("A")
	defer in.Close()
	require.NoError(t, d.Dispatch(pong("A", "w1").encode(t)))
	require.NoError(t, d.Dispatch(pong("A", "w2").encode(t))) // the call reads nothing: overflow
	old := pong("A", "w3")
	old.expires = time.Now().Add(-time.Second)
	require.Error(t, d.Dispatch(old.encode(t)))
	require.Error(t, d.Dispatch([]byte("{")))
	for _, ticket := range []string{"X", "Y", "Z"} { // the third evicts the first
		require.NoError(t, d.Dispatch(pong(ticket, "w").encode(t)))
	}
	assert.Equal(t, map[string]int{"overflow": 1, "expired": 1, "undecodable": 1, "unclaimed": 1}, got)
}
