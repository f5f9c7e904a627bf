package pidbox_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gopidbox/pidbox"
	"github.com/gopidbox/pidbox/internal/wire"
	"github.com/gopidbox/pidbox/reply"
	"github.com/gopidbox/pidbox/transport"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func nodesOf(rs []reply.Reply) []string {
	var out []string
	for _, r := range rs {
		out = append(out, r.Node)
	}
	sort.Strings(out)
	return out
}

func TestPingEveryNodeReturnsEarly(t *testing.T) {
	f := newFleet(t, pidbox.Options{}, "w1@h", "w2@h", "w3@h")
	start := time.Now()
	rs, err := replies(f.ctl.Call(context.Background(), "ping", nil, pidbox.Timeout(10*time.Second)))
	require.NoError(t, err)
	assert.Equal(t, []string{"w1@h", "w2@h", "w3@h"}, nodesOf(rs))
	assert.Less(t, time.Since(start), 5*time.Second, "a broadcast returns once every known node replied")
	for _, r := range rs {
		require.NoError(t, r.Err)
		v, err := reply.As[pidbox.OK](r)
		require.NoError(t, err)
		assert.Equal(t, "pong", v.OK)
		assert.False(t, r.Duplicate)
	}
}

func TestDestination(t *testing.T) {
	f := newFleet(t, pidbox.Options{}, "w1@h", "w2@h", "w3@h")
	start := time.Now()
	rs, err := replies(f.ctl.Call(context.Background(), "ping", nil, pidbox.To("w1@h", "w3@h"), pidbox.Timeout(10*time.Second)))
	require.NoError(t, err)
	assert.Equal(t, []string{"w1@h", "w3@h"}, nodesOf(rs))
	assert.Less(t, time.Since(start), 5*time.Second, "returns once both destinations replied")

	// A destination that does not exist: the call waits for it until the
	// deadline, and returns what it has, with an error that names it.
	rs, err = replies(f.ctl.Call(context.Background(), "ping", nil, pidbox.To("w1@h", "ghost@h"), pidbox.Timeout(200*time.Millisecond)))
	require.ErrorIs(t, err, pidbox.ErrIncomplete)
	assert.ErrorContains(t, err, "ghost@h")
	assert.Equal(t, []string{"w1@h"}, nodesOf(rs))
}

func TestPatterns(t *testing.T) {
	f := newFleet(t, pidbox.Options{}, "w1@a", "w2@a", "w11@b", "x1@a")
	cases := []struct {
		opt  pidbox.CallOption
		want []string
	}{
		{pidbox.Glob("w?@a"), []string{"w1@a", "w2@a"}},
		{pidbox.Glob("*@a"), []string{"w1@a", "w2@a", "x1@a"}},
		{pidbox.Glob("[!w]*"), []string{"x1@a"}},
		{pidbox.PCRE(`w.1`), []string{"w11@b"}},
		{pidbox.PCRE(`w\d@`), []string{"w1@a", "w2@a"}},
		{pidbox.PCRE(`1`), nil},
	}
	for _, tc := range cases {
		rs, err := replies(f.ctl.Call(context.Background(), "ping", nil, tc.opt, pidbox.Timeout(5*time.Second)))
		require.NoError(t, err)
		assert.Equal(t, tc.want, nodesOf(rs))
	}
}

func TestLimit(t *testing.T) {
	f := newFleet(t, pidbox.Options{}, "w1", "w2", "w3")
	rs, err := replies(f.ctl.Call(context.Background(), "ping", nil, pidbox.Limit(2), pidbox.Timeout(5*time.Second)))
	require.NoError(t, err)
	assert.Len(t, rs, 2)
}

func TestDeadlineIsTotal(t *testing.T) {
	f := newFleet(t, pidbox.Options{})
	slow := f.node("slow", pidbox.NodeOptions{})
	slow.RegisterFunc("wait", func(ctx context.Context, _ *pidbox.Request) (any, error) {
		<-ctx.Done()
		return nil, ctx.Err()
	})
	f.start(slow)
	f.add("fast", pidbox.NodeOptions{})
	f.nodes["fast"].RegisterFunc("wait", func(context.Context, *pidbox.Request) (any, error) { return "done", nil })

	start := time.Now()
	rs, err := replies(f.ctl.Call(context.Background(), "wait", nil, pidbox.Timeout(300*time.Millisecond)))
	elapsed := time.Since(start)
	require.ErrorIs(t, err, pidbox.ErrIncomplete, "the deadline ends a gather, naming the node missing")
	assert.ErrorContains(t, err, "no reply: slow")
	assert.Equal(t, []string{"fast"}, nodesOf(rs))
	assert.GreaterOrEqual(t, elapsed, 300*time.Millisecond)
	assert.Less(t, elapsed, 3*time.Second)

	// The context's own deadline works the same way.
	start = time.Now()
	_, err = replies(f.ctl.Call(ctxTimeout(t, 200*time.Millisecond), "wait", nil))
	require.ErrorIs(t, err, pidbox.ErrIncomplete)
	assert.Less(t, time.Since(start), 3*time.Second)
}

func TestCancellation(t *testing.T) {
	f := newFleet(t, pidbox.Options{})
	n := f.node("n", pidbox.NodeOptions{ShutdownGrace: 50 * time.Millisecond})
	n.RegisterFunc("wait", func(ctx context.Context, _ *pidbox.Request) (any, error) {
		<-ctx.Done()
		return nil, ctx.Err()
	})
	f.start(n)
	ctx, cancel := context.WithCancel(context.Background())
	go func() { time.Sleep(50 * time.Millisecond); cancel() }()
	_, err := replies(f.ctl.Call(ctx, "wait", nil, pidbox.Timeout(10*time.Second)))
	assert.ErrorIs(t, err, context.Canceled)
}

func TestStreamStopsEarly(t *testing.T) {
	f := newFleet(t, pidbox.Options{}, "a", "b", "c", "d")
	start := time.Now()
	seen := 0
	call, err := f.ctl.Send(context.Background(), "ping", nil, pidbox.Timeout(10*time.Second))
	require.NoError(t, err)
	for r, err := range call.Replies() {
		require.NoError(t, err)
		require.NoError(t, r.Err)
		seen++
		if seen == 2 {
			break
		}
	}
	assert.Equal(t, 2, seen)
	assert.Less(t, time.Since(start), 5*time.Second)
	// The mailbox still works after an abandoned stream.
	rs, err := replies(f.ctl.Call(context.Background(), "ping", nil, pidbox.Timeout(5*time.Second)))
	require.NoError(t, err)
	assert.Len(t, rs, 4)
}

type setLevel struct {
	Level string `json:"level"`
	Burst int    `json:"burst"`
}

type levelSet struct {
	Previous string `json:"previous"`
	Now      string `json:"now"`
}

func typedNode(f *fleet, name string) *pidbox.Node {
	n := f.node(name, pidbox.NodeOptions{})
	level := "info"
	n.Register("set_level", pidbox.Typed(func(ctx context.Context, a setLevel) (levelSet, error) {
		if a.Level == "" {
			return levelSet{}, errors.New("level is required")
		}
		req, ok := pidbox.RequestFrom(ctx)
		if !ok || req.Node.Hostname() != name {
			return levelSet{}, errors.New("request missing from context")
		}
		prev := level
		level = a.Level
		return levelSet{Previous: prev, Now: a.Level}, nil
	}))
	f.start(n)
	return n
}

func TestTypedHandler(t *testing.T) {
	for _, ser := range []string{"json", "msgpack"} {
		t.Run(ser, func(t *testing.T) {
			f := newFleet(t, pidbox.Options{Serializer: ser})
			typedNode(f, "w")
			rs, err := replies(f.ctl.Call(context.Background(), "set_level", setLevel{Level: "debug"}, pidbox.To("w")))
			require.NoError(t, err)
			require.Len(t, rs, 1)
			require.NoError(t, rs[0].Err)
			got, err := reply.As[levelSet](rs[0])
			require.NoError(t, err)
			assert.Equal(t, levelSet{Previous: "info", Now: "debug"}, got)
			assert.Equal(t, map[string]string{"json": "application/json", "msgpack": "application/x-msgpack"}[ser], rs[0].ContentType)

			// A map works as arguments too.
			rs, err = replies(f.ctl.Call(context.Background(), "set_level", map[string]any{"level": "warn"}, pidbox.To("w")))
			require.NoError(t, err)
			require.Len(t, rs, 1)
			got, err = reply.As[levelSet](rs[0])
			require.NoError(t, err)
			assert.Equal(t, "warn", got.Now)

			// Arguments of the wrong type: a clear error reply.
			rs, err = replies(f.ctl.Call(context.Background(), "set_level", map[string]any{"level": 42}, pidbox.To("w")))
			require.NoError(t, err)
			require.Len(t, rs, 1)
			var re *reply.RemoteError
			require.ErrorAs(t, rs[0].Err, &re)
			assert.Contains(t, re.Message, "bad arguments for set_level")

			// The handler's own error.
			rs, err = replies(f.ctl.Call(context.Background(), "set_level", nil, pidbox.To("w")))
			require.NoError(t, err)
			require.Len(t, rs, 1)
			assert.EqualError(t, rs[0].Err, "w: level is required")
		})
	}
}

func TestUnknownMethod(t *testing.T) {
	f := newFleet(t, pidbox.Options{}, "w")
	rs, err := replies(f.ctl.Call(context.Background(), "nosuch", nil, pidbox.To("w")))
	require.NoError(t, err)
	require.Len(t, rs, 1)
	assert.EqualError(t, rs[0].Err, `w: unknown method "nosuch"`)
}

func TestPanicBecomesErrorReply(t *testing.T) {
	f := newFleet(t, pidbox.Options{})
	n := f.node("w", pidbox.NodeOptions{})
	n.RegisterFunc("boom", func(context.Context, *pidbox.Request) (any, error) { panic("kaboom") })
	f.start(n)
	rs, err := replies(f.ctl.Call(context.Background(), "boom", nil, pidbox.To("w")))
	require.NoError(t, err)
	require.Len(t, rs, 1)
	require.Error(t, rs[0].Err)
	assert.Contains(t, rs[0].Err.Error(), "handler panicked: boom: kaboom")
	// Still serving.
	rs, err = replies(f.ctl.Call(context.Background(), "ping", nil, pidbox.To("w")))
	require.NoError(t, err)
	require.Len(t, rs, 1)
	assert.NoError(t, rs[0].Err)
	assert.Equal(t, uint64(1), n.Stats().Handlers["boom"].Errors)
}

func TestUnserializableReply(t *testing.T) {
	f := newFleet(t, pidbox.Options{})
	n := f.node("w", pidbox.NodeOptions{})
	n.RegisterFunc("nan", func(context.Context, *pidbox.Request) (any, error) { return math.NaN(), nil })
	n.RegisterFunc("chan", func(context.Context, *pidbox.Request) (any, error) { return make(chan int), nil })
	f.start(n)
	for _, m := range []string{"nan", "chan"} {
		rs, err := replies(f.ctl.Call(context.Background(), m, nil, pidbox.To("w")))
		require.NoError(t, err)
		require.Len(t, rs, 1, m)
		require.Error(t, rs[0].Err, m)
		assert.Contains(t, rs[0].Err.Error(), "cannot be serialized")
	}
}

func TestHandlerTimeout(t *testing.T) {
	f := newFleet(t, pidbox.Options{})
	n := f.node("w", pidbox.NodeOptions{HandlerTimeout: 100 * time.Millisecond})
	release := make(chan struct{})
	defer close(release)
	n.RegisterFunc("stuck", func(context.Context, *pidbox.Request) (any, error) {
		<-release // ignores its context
		return "late", nil
	})
	f.start(n)
	rs, err := replies(f.ctl.Call(context.Background(), "stuck", nil, pidbox.To("w"), pidbox.Timeout(5*time.Second)))
	require.NoError(t, err)
	require.Len(t, rs, 1)
	assert.ErrorContains(t, rs[0].Err, "handler timed out")
}

func TestSlowHandlerDoesNotBlockOthers(t *testing.T) {
	f := newFleet(t, pidbox.Options{})
	n := f.node("w", pidbox.NodeOptions{Concurrency: 2, Backlog: 1})
	release := make(chan struct{})
	var started atomic.Int32
	n.RegisterFunc("slow", func(ctx context.Context, _ *pidbox.Request) (any, error) {
		started.Add(1)
		select {
		case <-release:
		case <-ctx.Done():
		}
		return "ok", nil
	})
	f.start(n)
	for range 4 { // two run, one waits, one is refused
		require.NoError(t, f.ctl.Cast(context.Background(), "slow", nil))
	}
	require.Eventually(t, func() bool { return started.Load() == 2 }, 5*time.Second, 5*time.Millisecond)
	rs, err := replies(f.ctl.Call(context.Background(), "ping", nil, pidbox.To("w"), pidbox.Timeout(5*time.Second)))
	require.NoError(t, err)
	require.Len(t, rs, 1, "ping answers while slow holds its slots")
	st := n.Stats()
	assert.Equal(t, 2, st.Handlers["slow"].Running)
	assert.Equal(t, uint64(1), st.Rejected)
	close(release)
	require.Eventually(t, func() bool { return started.Load() == 3 }, 5*time.Second, 5*time.Millisecond, "the waiting one runs once a slot frees")
}

func TestExpiredRequestDropped(t *testing.T) {
	f := newFleet(t, pidbox.Options{})
	n := f.node("w", pidbox.NodeOptions{})
	var ran atomic.Int32
	n.RegisterFunc("count", func(context.Context, *pidbox.Request) (any, error) { ran.Add(1); return nil, nil })
	f.start(n)
	body, err := wire.EncodeRequest(wire.JSON{}, &wire.Request{Method: "count"})
	require.NoError(t, err)
	publish := func(expires time.Time) {
		msg := wire.Encode(&wire.Envelope{Body: body, ContentType: "application/json", Headers: wire.Headers{Clock: 1, Expires: wire.ExpiresAt(expires)}})
		require.NoError(t, f.tr.Publish(context.Background(), celeryExchange, "", msg))
	}
	publish(time.Now().Add(-time.Second))
	publish(time.Time{})               // never expires
	publish(time.Now().Add(time.Hour)) // not yet
	require.Eventually(t, func() bool { return n.Stats().Received == 3 }, 5*time.Second, 5*time.Millisecond)
	require.Eventually(t, func() bool { return ran.Load() == 2 }, 5*time.Second, 5*time.Millisecond)
	assert.Equal(t, uint64(1), n.Stats().Expired)
}

func TestShutdown(t *testing.T) {
	f := newFleet(t, pidbox.Options{}, "a", "b")
	// A call to shutdown gets no reply: it waits for its deadline, by
	// which the node has stopped and unbound.
	rs, err := replies(f.ctl.Call(context.Background(), "shutdown", nil, pidbox.To("a"), pidbox.Timeout(300*time.Millisecond)))
	require.ErrorIs(t, err, pidbox.ErrIncomplete)
	assert.Empty(t, rs)
	assert.NoError(t, f.done["a"].wait(t, 5*time.Second), "a remote shutdown is a clean stop")
	names, err := f.ctl.Nodes(context.Background())
	require.NoError(t, err)
	assert.Equal(t, []string{"b"}, names, "a stopped node unbinds its queue")
	rs, err = replies(f.ctl.Call(context.Background(), "ping", nil, pidbox.Timeout(5*time.Second)))
	require.NoError(t, err)
	assert.Equal(t, []string{"b"}, nodesOf(rs))
}

func TestHelloAndClock(t *testing.T) {
	f := newFleet(t, pidbox.Options{}, "a", "b")
	rs, err := replies(f.ctl.Call(context.Background(), "hello", pidbox.HelloArgs{FromNode: "a"}, pidbox.Timeout(300*time.Millisecond)))
	require.ErrorIs(t, err, pidbox.ErrIncomplete, "a is expected, but sends no hello to itself")
	assert.Equal(t, []string{"b"}, nodesOf(rs), "no hello reply to itself")
	h, err := reply.As[pidbox.HelloReply](rs[0])
	require.NoError(t, err)
	assert.Positive(t, h.Clock)

	// Clocks: a node moves past the clock it sees on a request.
	f.ctl.Clock().Adjust(1000)
	rs, err = replies(f.ctl.Call(context.Background(), "clock", nil, pidbox.To("a")))
	require.NoError(t, err)
	require.Len(t, rs, 1)
	c, err := reply.As[pidbox.ClockReply](rs[0])
	require.NoError(t, err)
	assert.Greater(t, c.Clock, uint64(1001))
	assert.Greater(t, f.ctl.Clock().Value(), c.Clock, "the caller moved past the reply's clock")
}

func TestStats(t *testing.T) {
	f := newFleet(t, pidbox.Options{}, "w")
	for range 3 {
		_, err := replies(f.ctl.Call(context.Background(), "ping", nil, pidbox.To("w")))
		require.NoError(t, err)
	}
	rs, err := replies(f.ctl.Call(context.Background(), "stats", nil, pidbox.To("w")))
	require.NoError(t, err)
	require.Len(t, rs, 1)
	st, err := reply.As[pidbox.NodeStats](rs[0])
	require.NoError(t, err)
	assert.Equal(t, "w", st.Hostname)
	assert.Positive(t, st.PID)
	assert.Equal(t, []string{"clock", "hello", "pidbox_stats", "ping", "shutdown", "stats"}, st.Registered)
	assert.Equal(t, uint64(3), st.Handlers["ping"].Calls)
	assert.Equal(t, uint64(0), st.Handlers["ping"].Errors)
	assert.Equal(t, 1, st.Handlers["stats"].Running, "stats counts itself running")
	assert.Equal(t, uint64(4), st.Received)
}

func TestReplaceAndRemoveBuiltins(t *testing.T) {
	f := newFleet(t, pidbox.Options{})
	n := f.node("w", pidbox.NodeOptions{})
	n.Unregister("shutdown")
	n.RegisterFunc("ping", func(context.Context, *pidbox.Request) (any, error) { return pidbox.OK{OK: "custom pong"}, nil })
	f.start(n)
	assert.Equal(t, []string{"clock", "hello", "pidbox_stats", "ping", "stats"}, n.Methods())
	rs, err := replies(f.ctl.Call(context.Background(), "ping", nil, pidbox.To("w")))
	require.NoError(t, err)
	require.Len(t, rs, 1)
	v, _ := reply.As[pidbox.OK](rs[0])
	assert.Equal(t, "custom pong", v.OK)
	rs, err = replies(f.ctl.Call(context.Background(), "shutdown", nil, pidbox.To("w")))
	require.NoError(t, err)
	require.Len(t, rs, 1)
	assert.ErrorContains(t, rs[0].Err, "unknown method")
}

func TestSendThenGather(t *testing.T) {
	f := newFleet(t, pidbox.Options{}, "a", "b")
	call, err := f.ctl.Send(context.Background(), "ping", nil, pidbox.Timeout(5*time.Second))
	require.NoError(t, err)
	assert.Equal(t, []string{"a", "b"}, sorted(call.Expected()))
	require.Eventually(t, func() bool { return f.ctl.ReplyStats().Delivered == 2 }, 5*time.Second, 5*time.Millisecond, "replies held for the call")
	var got []reply.Reply
	for r, err := range call.Replies() {
		require.NoError(t, err)
		got = append(got, r)
	}
	assert.Equal(t, []string{"a", "b"}, nodesOf(got))
	assert.Equal(t, map[string]pidbox.Outcome{"a": pidbox.Replied, "b": pidbox.Replied}, call.Outcomes())
	for _, err := range call.Replies() {
		assert.ErrorIs(t, err, pidbox.ErrBadCall, "a second range is refused")
	}
}

func TestNodeRepliesInItsOwnSerializer(t *testing.T) {
	f := newFleet(t, pidbox.Options{Serializer: "msgpack"})
	mb, err := pidbox.New(f.tr, pidbox.Options{Logger: quiet}) // json, as a Kombu node's default
	require.NoError(t, err)
	t.Cleanup(func() { _ = mb.Close() })
	n := mb.NewNode("w", pidbox.NodeOptions{})
	f.nodes["w"] = n
	f.start(n)
	rs, err := replies(f.ctl.Call(context.Background(), "ping", nil, pidbox.To("w"), pidbox.Timeout(5*time.Second)))
	require.NoError(t, err)
	require.Len(t, rs, 1)
	assert.Equal(t, "application/json", rs[0].ContentType, "a node replies in its mailbox's serializer, as Kombu's Node.reply")
}

func TestOutcomes(t *testing.T) {
	f := newFleet(t, pidbox.Options{}, "a", "b")
	f.nodes["b"].RegisterFunc("boom", func(context.Context, *pidbox.Request) (any, error) { return nil, errors.New("no") })
	slow := f.node("slow", pidbox.NodeOptions{})
	slow.RegisterFunc("boom", func(ctx context.Context, _ *pidbox.Request) (any, error) {
		<-ctx.Done()
		return nil, pidbox.ErrNoReply
	})
	f.start(slow)

	res, err := f.ctl.Call(context.Background(), "boom", nil, pidbox.To("a", "b", "slow", "ghost"), pidbox.Timeout(300*time.Millisecond))
	require.ErrorIs(t, err, pidbox.ErrIncomplete)
	assert.ErrorContains(t, err, "no reply: slow")
	assert.ErrorContains(t, err, "not known to the broker: ghost")
	assert.Equal(t, map[string]pidbox.Outcome{
		"a": pidbox.Failed, "b": pidbox.Failed, "slow": pidbox.NoReply, "ghost": pidbox.Unknown,
	}, res.Outcomes)
	assert.Equal(t, []string{"ghost", "slow"}, res.Missing())
	assert.Len(t, res.Replies, 2)

	// A clean finish is no error; a broadcast expects every live node.
	res, err = f.ctl.Call(context.Background(), "ping", nil, pidbox.Timeout(5*time.Second))
	require.NoError(t, err)
	assert.Empty(t, res.Missing())
	assert.Len(t, res.Outcomes, 3)

	// A limit that is reached is a clean finish too.
	_, err = f.ctl.Call(context.Background(), "boom", nil, pidbox.To("a", "slow"), pidbox.Limit(1), pidbox.Timeout(300*time.Millisecond))
	require.NoError(t, err)
}

func sorted(s []string) []string { s = slices.Clone(s); slices.Sort(s); return s }

func TestDirectMailbox(t *testing.T) {
	f := newFleet(t, pidbox.Options{Type: transport.Direct, Namespace: "app"}, "a", "b")
	rs, err := replies(f.ctl.Call(context.Background(), "ping", nil, pidbox.Timeout(5*time.Second)))
	require.NoError(t, err)
	assert.Equal(t, []string{"a", "b"}, nodesOf(rs))
	bs, err := f.tr.Bindings(context.Background(), transport.Exchange{Name: "app.pidbox", Kind: transport.Direct})
	require.NoError(t, err)
	assert.Len(t, bs, 2, "nodes bind to the namespace's exchange")
}

func TestBadCalls(t *testing.T) {
	f := newFleet(t, pidbox.Options{}, "w")
	ctx := context.Background()
	cases := map[string]error{}
	_, cases["destination and pattern"] = replies(f.ctl.Call(ctx, "ping", nil, pidbox.To("w"), pidbox.Glob("w*")))
	_, cases["negative limit"] = replies(f.ctl.Call(ctx, "ping", nil, pidbox.Limit(-1)))
	_, cases["args not a map"] = replies(f.ctl.Call(ctx, "ping", "just a string"))
	_, cases["args unserializable"] = replies(f.ctl.Call(ctx, "ping", map[string]any{"c": make(chan int)}))
	_, cases["bad pcre"] = replies(f.ctl.Call(ctx, "ping", nil, pidbox.PCRE(`(?<=x)w`)))
	_, cases["empty method"] = replies(f.ctl.Call(ctx, "", nil))
	cases["cast args not a map"] = f.ctl.Cast(ctx, "ping", 42)
	for name, err := range cases {
		assert.ErrorIs(t, err, pidbox.ErrBadCall, name)
	}
	_, err := pidbox.New(f.tr, pidbox.Options{Serializer: "pickle"})
	assert.ErrorIs(t, err, wire.ErrUnsupported)
	_, err = pidbox.New(f.tr, pidbox.Options{Type: "topic"})
	assert.ErrorIs(t, err, pidbox.ErrBadCall)
}

func TestCloseEndsCalls(t *testing.T) {
	f := newFleet(t, pidbox.Options{})
	n := f.node("w", pidbox.NodeOptions{ShutdownGrace: 50 * time.Millisecond})
	n.RegisterFunc("wait", func(ctx context.Context, _ *pidbox.Request) (any, error) { <-ctx.Done(); return nil, nil })
	f.start(n)
	errc := make(chan error, 1)
	go func() {
		_, err := replies(f.ctl.Call(context.Background(), "wait", nil, pidbox.Timeout(30*time.Second)))
		errc <- err
	}()
	time.Sleep(100 * time.Millisecond)
	require.NoError(t, f.ctl.Close())
	select {
	case err := <-errc:
		assert.ErrorIs(t, err, pidbox.ErrClosed)
	case <-time.After(5 * time.Second):
		t.Fatal("call still running after Close")
	}
	_, err := replies(f.ctl.Call(context.Background(), "ping", nil))
	assert.ErrorIs(t, err, pidbox.ErrClosed)
}

// Messages no Kombu client would send, published straight into a node:
// each is dropped and counted, and the node keeps serving.
func TestNodeSurvivesBadInput(t *testing.T) {
	f := newFleet(t, pidbox.Options{Accept: []string{"json"}, MaxMessageSize: 64 << 10})
	n := f.add("w", pidbox.NodeOptions{})
	env := func(ct string, body []byte) []byte {
		return wire.Encode(&wire.Envelope{Body: body, ContentType: ct})
	}
	mp, _ := wire.EncodeRequest(wire.Msgpack{}, &wire.Request{Method: "ping"})
	bad := [][]byte{
		[]byte("not json at all"),
		[]byte(`{"body": "%%%", "properties": {"body_encoding": "base64"}}`),
		[]byte(`[1, 2, 3]`),
		env("application/json", []byte(`"a string"`)),
		env("application/json", []byte(`{"method": "ping", "destination": "w"}`)),
		env("application/json", []byte(`{"method": "ping", "pattern": "w", "matcher": "regex"}`)),
		env("application/json", []byte(`{"method": "ping", "pattern": "(?=x)", "matcher": "pcre"}`)),
		env("application/json", []byte(`{"method": "ping", "ticket": "t", "reply_to": {"exchange": "celery", "routing_key": "x"}}`)),
		env("application/x-msgpack", mp),
		env("application/x-python-serialize", []byte("cos\nsystem\n")),
		env("application/json", make([]byte, 100<<10)),
	}
	for _, m := range bad {
		require.NoError(t, f.tr.Publish(context.Background(), celeryExchange, "", m))
	}
	require.Eventually(t, func() bool { return n.Stats().Received == uint64(len(bad)) }, 5*time.Second, 5*time.Millisecond)
	assert.Equal(t, uint64(len(bad)), n.Stats().Dropped)
	rs, err := replies(f.ctl.Call(context.Background(), "ping", nil, pidbox.To("w")))
	require.NoError(t, err)
	require.Len(t, rs, 1)
	assert.NoError(t, rs[0].Err)
}

func TestMatchTable(t *testing.T) {
	// Expected values are what Python 3.11's fnmatch.fnmatch and re.match
	// return for the same inputs.
	cases := []struct {
		name, pattern, matcher string
		want                   bool
	}{
		{"worker1@host", "worker*", "glob", true},
		{"worker1@host", "worker?@host", "glob", true},
		{"worker12@host", "worker?@host", "glob", false},
		{"Worker1@host", "worker*", "glob", false},
		{"w1", "w[0-9]", "glob", true},
		{"wa", "w[0-9]", "glob", false},
		{"wa", "w[!0-9]", "glob", true},
		{"w^", "w[^a]", "glob", true},
		{"w]", "w[]]", "glob", true},
		{"w[", "w[", "glob", true},
		{"wx", "w[!]", "glob", false},
		{"w[!]", "w[!]", "glob", true},
		{"w-", "w[a-]", "glob", true},
		{"wb", "w[z-a]", "glob", false},
		{"wb", "w[!b-a]", "glob", true},
		{"w.x", "w.*", "glob", true},
		{"w/x", "w*", "glob", true},
		{"a\nb", "a?b", "glob", true},
		{"wd", "w[a-c-e]", "glob", false},
		{"we", "w[a-c-e]", "glob", true},
		{"w-", "w[a-c-e]", "glob", true},
		{"w11", "w.1", "pcre", true},
		{"w11x", "w.1", "pcre", true},
		{"xw11", "w.1", "pcre", false},
		{"w11", `w1\Z`, "pcre", false},
		{"w1", `w1\Z`, "pcre", true},
		{"worker-3", `worker-(1|3)`, "pcre", true},
		{"celery@a", `(?P<n>celery)@`, "pcre", true},
	}
	for _, tc := range cases {
		got, err := pidbox.Match(tc.name, tc.pattern, tc.matcher)
		require.NoError(t, err, "%s %q", tc.matcher, tc.pattern)
		assert.Equal(t, tc.want, got, "%s %q on %q", tc.matcher, tc.pattern, tc.name)
	}
	for _, bad := range []struct{ pattern, matcher string }{
		{"x", "regex"}, {`(\w)\1`, "pcre"}, {`(?=x)`, "pcre"}, {strings.Repeat("a", 2000), "glob"},
	} {
		_, err := pidbox.Match("x", bad.pattern, bad.matcher)
		assert.ErrorIs(t, err, pidbox.ErrBadPattern, "%s %q", bad.matcher, bad.pattern)
	}
}

func TestNodeServesOnce(t *testing.T) {
	f := newFleet(t, pidbox.Options{})
	n := f.add("w", pidbox.NodeOptions{})
	err := n.Serve(context.Background())
	assert.ErrorContains(t, err, "already serving")
}

func ExampleMatch() {
	for _, p := range []string{"w[0-9]*", "celery@*"} {
		ok, _ := pidbox.Match("w1@host", p, "glob")
		fmt.Println(p, ok)
	}
	ok, _ := pidbox.Match("w11", "w.1", "pcre")
	fmt.Println("w.1", ok)
	// Output:
	// w[0-9]* true
	// celery@* false
	// w.1 true
}
