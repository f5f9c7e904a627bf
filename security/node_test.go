package security

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/gopidbox/pidbox"
	"github.com/gopidbox/pidbox/internal/testlog"
	"github.com/gopidbox/pidbox/internal/wire"
	"github.com/gopidbox/pidbox/transport"
	"github.com/gopidbox/pidbox/transport/memory"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var (
	bcast    = transport.Exchange{Name: "celery.pidbox", Kind: transport.Fanout}
	quietLog = slog.New(slog.DiscardHandler)
)

// fleet is one memory broker with helpers to start signed nodes and
// controllers on it, each on its own mailbox as separate processes are.
type fleet struct {
	t  *testing.T
	tr *memory.Broker
}

func newFleet(t *testing.T) *fleet {
	tr := memory.New(memory.Options{QueueLimit: 200_000, Logger: quietLog})
	t.Cleanup(func() { tr.Close() })
	return &fleet{t: t, tr: tr}
}

// mailbox returns a mailbox sealing with s (none when nil).
func (f *fleet) mailbox(s pidbox.Sealer, log *slog.Logger) *pidbox.Mailbox {
	if log == nil {
		log = quietLog
	}
	opts := pidbox.Options{Logger: log}
	if s != nil {
		opts.Sealer = s
	}
	mb, err := pidbox.New(f.tr, opts)
	require.NoError(f.t, err)
	f.t.Cleanup(func() { mb.Close() })
	return mb
}

// node serves a node on its own mailbox until the test ends; it answers
// "whoami" with the request's signer.
func (f *fleet) node(name string, s pidbox.Sealer, opts pidbox.NodeOptions, log *slog.Logger) (*pidbox.Node, <-chan error) {
	n := f.mailbox(s, log).NewNode(name, opts)
	n.RegisterFunc("whoami", func(_ context.Context, r *pidbox.Request) (any, error) {
		return map[string]string{"signer": r.Signer}, nil
	})
	ctx, cancel := context.WithCancel(context.Background())
	done, stopped := make(chan error, 1), make(chan struct{})
	go func() { done <- n.Serve(ctx); close(stopped) }()
	f.t.Cleanup(func() { cancel(); <-stopped })
	<-n.Ready()
	return n, done
}

func ping(t *testing.T, mb *pidbox.Mailbox, method string, node string) *pidbox.Result {
	t.Helper()
	res, err := mb.Call(context.Background(), method, nil, pidbox.To(node), pidbox.Timeout(2*time.Second))
	if len(res.Replies) == 0 {
		require.ErrorIs(t, err, pidbox.ErrIncomplete)
	} else {
		require.NoError(t, err)
	}
	return res
}

func TestSignedRoundTrip(t *testing.T) {
	f := newFleet(t)
	nodeSigner := newSigner(t, node, Config{RequireSigned: true})
	ctlSigner := newSigner(t, ctl, Config{RequireSigned: true, BindReplies: true})
	f.node("node1@host", nodeSigner, pidbox.NodeOptions{}, nil)
	ctlMb := f.mailbox(ctlSigner, nil)

	res := ping(t, ctlMb, "whoami", "node1@host")
	require.Len(t, res.Replies, 1)
	r := res.Replies[0]
	assert.Equal(t, nodeSigner.ID(), r.Signer, "the reply's verified signer")
	assert.JSONEq(t, `{"signer": "`+ctlSigner.ID()+`"}`, string(r.Value), "the request's verified signer")
}

func TestRequireSignedBothWays(t *testing.T) {
	f := newFleet(t)
	var nodeLog, ctlLog testlog.Buffer
	n, _ := f.node("node1@host", newSigner(t, node, Config{RequireSigned: true}), pidbox.NodeOptions{}, nodeLog.Logger())

	// An unsigned command is refused, and logged.
	plain := f.mailbox(nil, nil)
	assert.Empty(t, ping(t, plain, "ping", "node1@host").Replies)
	assert.Contains(t, nodeLog.String(), "unsigned message")
	assert.EqualValues(t, 1, n.Stats().Dropped)

	// An unsigned reply is refused by a controller that requires
	// signatures: this node verifies commands but replies unsigned.
	f.node("plain@host", openOnly{newSigner(t, node, Config{})}, pidbox.NodeOptions{}, nil)
	ctlMb := f.mailbox(newSigner(t, ctl, Config{RequireSigned: true}), ctlLog.Logger())
	assert.Empty(t, ping(t, ctlMb, "ping", "plain@host").Replies)
	assert.Contains(t, ctlLog.String(), "unsigned message")
	lax := f.mailbox(newSigner(t, ctl, Config{}), nil)
	assert.Len(t, ping(t, lax, "ping", "plain@host").Replies, 1, "without RequireSigned the unsigned reply passes")

	// Without RequireSigned, an unsigned command runs with no signer.
	ln, _ := f.node("lax@host", newSigner(t, node, Config{}), pidbox.NodeOptions{}, nil)
	signers := make(chan string, 1)
	ln.RegisterFunc("record", func(_ context.Context, r *pidbox.Request) (any, error) { signers <- r.Signer; return nil, nil })
	require.NoError(t, plain.Cast(context.Background(), "record", nil, pidbox.To("lax@host"), pidbox.Timeout(time.Second)))
	select {
	case s := <-signers:
		assert.Empty(t, s)
	case <-time.After(2 * time.Second):
		t.Fatal("the unsigned command did not run on a node that does not require signatures")
	}
}

// openOnly verifies what it receives and sends unsigned.
type openOnly struct{ *Signer }

func (openOnly) Seal(b pidbox.Body) (pidbox.Body, error) { return b, nil }

// raw publishes a request envelope whose body is sealed as given.
func raw(t *testing.T, f *fleet, sealed []byte, expires time.Time) {
	t.Helper()
	msg := wire.Encode(&wire.Envelope{
		Body: sealed, ContentType: ContentType, ContentEncoding: ContentEncoding,
		Headers:    wire.Headers{Clock: 1, Expires: wire.ExpiresAt(expires)},
		Properties: wire.Properties{DeliveryMode: wire.Persistent, Exchange: bcast.Name},
	})
	require.NoError(t, f.tr.Publish(context.Background(), bcast, "", msg))
}

// TestBadInputAtANode sends each hostile auth payload of the issue to a
// node: each is refused with its reason logged, no handler runs, and the
// node keeps serving.
func TestBadInputAtANode(t *testing.T) {
	f := newFleet(t)
	var log testlog.Buffer
	var ran sync.Mutex
	calls := 0
	n, _ := f.node("node1@host", newSigner(t, node, Config{RequireSigned: true}), pidbox.NodeOptions{}, log.Logger())
	n.RegisterFunc("shutdown", func(context.Context, *pidbox.Request) (any, error) {
		ran.Lock()
		calls++
		ran.Unlock()
		return nil, nil
	})
	ctlS := newSigner(t, ctl, Config{})
	evil := newSignerFor(t, outsider)
	body := []byte(`{"method": "shutdown", "arguments": {}, "destination": null, "pattern": null, "matcher": null}`)
	good, err := ctlS.Sign("application/json", "utf-8", body)
	require.NoError(t, err)
	o, err := ctlS.Verify(good) // the store holds the controller's certificate
	require.NoError(t, err)
	id, ct, ce := []byte(ctlS.ID()), []byte("application/json"), []byte("utf-8")
	evilSealed, err := evil.Sign("application/json", "utf-8", body)
	require.NoError(t, err)
	other := []byte(`{"method": "shutdown", "arguments": {"force": true}, "destination": null, "pattern": null, "matcher": null}`)

	exp := time.Now().Add(time.Minute)
	for _, c := range []struct {
		name, reason string
		sealed       []byte
	}{
		{"truncated signature", "truncated signature", pack(id, o.Signature[:128])},
		{"signer not in the store", "unknown signer", evilSealed},
		{"valid signature over a different body", "bad signature", pack(id, o.Signature, ct, ce, other)},
		{"not base64", "not base64", []byte("*** not base64 ***")},
	} {
		raw(t, f, c.sealed, exp)
		require.Eventually(t, func() bool { return strings.Contains(log.String(), c.reason) }, 2*time.Second, 5*time.Millisecond, c.name)
	}
	ran.Lock()
	assert.Zero(t, calls, "no refused command ran")
	ran.Unlock()
	assert.EqualValues(t, 4, n.Stats().Dropped)
	res := ping(t, f.mailbox(ctlS, nil), "ping", "node1@host")
	assert.Len(t, res.Replies, 1, "the node still serves")
}

// TestJunkFloodAtANode floods a node that requires signatures with 100,000
// junk auth messages: none runs, the node's heap does not grow with the
// flood, and it answers a signed ping afterwards.
func TestJunkFloodAtANode(t *testing.T) {
	f := newFleet(t)
	var log testlog.Buffer
	n, _ := f.node("node1@host", newSigner(t, node, Config{RequireSigned: true}), pidbox.NodeOptions{}, log.Logger())
	id := []byte(newSigner(t, ctl, Config{}).ID())
	body := []byte(`{"method": "shutdown", "arguments": {}}`)
	junkSig := bytes.Repeat([]byte{0x5a}, 256)
	const total = 100_000
	exp := time.Now().Add(time.Minute)
	var before, after runtime.MemStats
	for i := range total {
		var sealed []byte
		switch i % 4 {
		case 0:
			junkSig[i%256] ^= byte(i)
			sealed = pack(id, junkSig, []byte("application/json"), []byte("utf-8"), body)
		case 1:
			sealed = pack([]byte("Nobody CA 1"), junkSig, []byte("application/json"), []byte("utf-8"), body)
		case 2:
			sealed = pack(id, junkSig[:i%200])
		case 3:
			sealed = []byte("%%%")
		}
		raw(t, f, sealed, exp)
		if i%1000 == 999 { // the broker's queue holds what the node has not read: keep it short
			require.Eventually(t, func() bool { return n.Stats().Received > uint64(i) }, 30*time.Second, time.Millisecond)
		}
		if i == total/10-1 {
			runtime.GC()
			runtime.ReadMemStats(&before)
		}
	}
	require.Eventually(t, func() bool { return n.Stats().Received >= total }, 60*time.Second, 10*time.Millisecond)
	assert.EqualValues(t, total, n.Stats().Dropped, "every junk message is dropped")
	runtime.GC()
	runtime.ReadMemStats(&after)
	assert.Less(t, int64(after.HeapAlloc)-int64(before.HeapAlloc), int64(16<<20), "heap growth over 90,000 junk messages (keeping 180 bytes per message would fail this)")
	assert.Contains(t, log.String(), "suppressed", "the log is rate-limited")
	assert.Less(t, strings.Count(log.String(), "\n"), 2000, "log lines")
	res := ping(t, f.mailbox(newSigner(t, ctl, Config{}), nil), "ping", "node1@host")
	assert.Len(t, res.Replies, 1, "the node still serves")
}

func TestBindReplies(t *testing.T) {
	f := newFleet(t)
	// A node that signs with the controller's certificate (CN
	// "controller") cannot answer as node1@host; the real node can.
	f.node("node1@host", newSigner(t, ctl, Config{}), pidbox.NodeOptions{}, nil)
	var log testlog.Buffer
	bound := f.mailbox(newSigner(t, ctl, Config{BindReplies: true}), log.Logger())
	assert.Empty(t, ping(t, bound, "ping", "node1@host").Replies)
	assert.Contains(t, log.String(), "signer does not name the node")
	unbound := f.mailbox(newSigner(t, ctl, Config{}), nil)
	assert.Len(t, ping(t, unbound, "ping", "node1@host").Replies, 1, "without BindReplies the reply passes")

	f.node("node1.example", newSigner(t, node, Config{}), pidbox.NodeOptions{}, nil) // named by the SAN
	assert.Len(t, ping(t, bound, "ping", "node1.example").Replies, 1)
}

func TestPolicy(t *testing.T) {
	f := newFleet(t)
	var log testlog.Buffer
	nodeSigner := newSigner(t, node, Config{RequireSigned: true})
	policy := &Policy{Admins: []string{"controller"}, Store: nodeSigner.Store()}
	n, done := f.node("node1@host", nodeSigner, pidbox.NodeOptions{Authorize: policy.Authorize}, log.Logger())
	n.RegisterFunc("scale", func(context.Context, *pidbox.Request) (any, error) { return "scaled", nil })

	// The node's certificate is trusted, but not an admin.
	other := f.mailbox(newSigner(t, node, Config{}), nil)
	for _, m := range []string{"ping", "stats", "clock"} {
		res := ping(t, other, m, "node1@host")
		if assert.Len(t, res.Replies, 1, m) {
			assert.Nil(t, res.Replies[0].Err, m)
		}
	}
	for _, m := range []string{"scale", "shutdown", "whoami"} {
		res := ping(t, other, m, "node1@host")
		if assert.Len(t, res.Replies, 1, m) && assert.NotNil(t, res.Replies[0].Err, m) {
			assert.JSONEq(t, `{"error": "not authorized"}`, string(res.Replies[0].Value), m)
		}
	}
	assert.Contains(t, log.String(), "not authorized")
	assert.EqualValues(t, 3, n.Stats().Refused)
	select {
	case <-done:
		t.Fatal("a refused shutdown stopped the node")
	case <-time.After(50 * time.Millisecond):
	}

	admin := f.mailbox(newSigner(t, ctl, Config{}), nil)
	res := ping(t, admin, "scale", "node1@host")
	require.Len(t, res.Replies, 1)
	assert.JSONEq(t, `"scaled"`, string(res.Replies[0].Value))
	require.NoError(t, admin.Cast(context.Background(), "shutdown", nil, pidbox.To("node1@host"), pidbox.Timeout(time.Second)))
	select {
	case err := <-done:
		assert.NoError(t, err)
	case <-time.After(5 * time.Second):
		t.Fatal("the admin's shutdown did not stop the node")
	}
}

// TestReplayAtANode captures signed commands from the wire and sends them
// again, as is and with a fresh expiry written into the envelope.
func TestReplayAtANode(t *testing.T) {
	f := newFleet(t)
	var log testlog.Buffer
	nodeSigner := newSigner(t, node, Config{RequireSigned: true})
	policy := &Policy{Admins: []string{"controller"}, Store: nodeSigner.Store(), Replay: NewReplayGuard(ReplayOptions{})}
	n, _ := f.node("node1@host", nodeSigner, pidbox.NodeOptions{Authorize: policy.Authorize}, log.Logger())
	var mu sync.Mutex
	counts := map[string]int{}
	n.RegisterFunc("scale", func(_ context.Context, r *pidbox.Request) (any, error) {
		mu.Lock()
		defer mu.Unlock()
		counts[string(r.Arguments)]++
		return "ok", nil
	})
	var captured [][]byte
	spy, err := f.tr.Subscribe(context.Background(), transport.Binding{Exchange: bcast, Queue: "spy"}, func(msg []byte) {
		mu.Lock()
		captured = append(captured, bytes.Clone(msg))
		mu.Unlock()
	})
	require.NoError(t, err)
	defer spy.Close()

	admin := f.mailbox(newSigner(t, ctl, Config{}), nil)
	res, err := admin.Call(context.Background(), "scale", map[string]int{"n": 1}, pidbox.To("node1@host"), pidbox.Timeout(time.Second))
	require.NoError(t, err)
	require.Len(t, res.Replies, 1)
	require.NoError(t, admin.Cast(context.Background(), "scale", map[string]int{"n": 2}, pidbox.To("node1@host"), pidbox.Timeout(time.Second)))
	require.Eventually(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(captured) == 2 && counts[`{"n":2}`] == 1 }, 2*time.Second, 5*time.Millisecond)

	for _, msg := range captured {
		require.NoError(t, f.tr.Publish(context.Background(), bcast, "", msg))
		env, err := wire.Decode(msg, 1<<20)
		require.NoError(t, err)
		env.Headers.Expires = wire.ExpiresAt(time.Now().Add(30 * time.Second))
		require.NoError(t, f.tr.Publish(context.Background(), bcast, "", wire.Encode(env)))
	}
	require.Eventually(t, func() bool { return n.Stats().Refused == 4 }, 2*time.Second, 5*time.Millisecond)
	mu.Lock()
	assert.Equal(t, map[string]int{`{"n":1}`: 1, `{"n":2}`: 1}, counts, "each command ran once")
	mu.Unlock()
	assert.Contains(t, log.String(), "already served")

	// No expiry (a cast without a timeout), or one too far ahead.
	require.NoError(t, admin.Cast(context.Background(), "scale", map[string]int{"n": 3}, pidbox.To("node1@host")))
	res, err = admin.Call(context.Background(), "scale", map[string]int{"n": 4}, pidbox.To("node1@host"), pidbox.Timeout(5*time.Minute))
	require.NoError(t, err)
	require.Len(t, res.Replies, 1)
	assert.JSONEq(t, `{"error": "not authorized"}`, string(res.Replies[0].Value))
	require.Eventually(t, func() bool { return n.Stats().Refused == 6 }, 2*time.Second, 5*time.Millisecond)
	assert.Contains(t, log.String(), "has no expiry")
	assert.Contains(t, log.String(), "beyond the 1m0s allowed")
}

func TestReplayGuard(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	g := NewReplayGuard(ReplayOptions{MaxEntries: 1000})
	g.now = func() time.Time { return now }
	req := func(ticket string) *pidbox.Request {
		return &pidbox.Request{Method: "scale", Ticket: ticket, Signer: "CA 1", Expires: now.Add(10 * time.Second)}
	}
	require.NoError(t, g.Check(req("t1")))
	require.ErrorIs(t, g.Check(req("t1")), ErrReplay)
	require.NoError(t, g.Check(&pidbox.Request{Method: "scale", Ticket: "t1", Expires: now.Add(time.Second)}), "unsigned requests are not the guard's")

	// Remembered for MaxAhead (plus skew) whatever the expiry claims.
	now = now.Add(time.Minute)
	require.ErrorIs(t, g.Check(req("t1")), ErrReplay)
	now = now.Add(6 * time.Second)
	require.NoError(t, g.Check(req("t1")), "forgotten after the window")

	// Bounded: when full, new commands are refused until old ones go.
	for i := range 2000 {
		err := g.Check(req(strings.Repeat("x", i%7) + string(rune('a'+i%26)) + time.Duration(i).String()))
		if i >= 999 {
			require.ErrorIs(t, err, ErrReplay)
		}
	}
	assert.Equal(t, 1000, g.Len())
	now = now.Add(2 * time.Minute)
	require.NoError(t, g.Check(req("fresh")))
	assert.Equal(t, 1, g.Len())

	// A version-7 ticket carries a signed time.
	v7 := func(at time.Time) string {
		u := make([]byte, 16)
		ms := uint64(at.UnixMilli())
		for i := range 6 {
			u[i] = byte(ms >> (40 - 8*i))
		}
		u[6], u[8] = 0x70, 0x80
		id, err := uuid.FromBytes(u)
		require.NoError(t, err)
		return id.String()
	}
	require.NoError(t, g.Check(req(v7(now.Add(-10*time.Second)))))
	err := g.Check(req(v7(now.Add(-10 * time.Minute))))
	require.ErrorIs(t, err, ErrReplay)
	assert.Contains(t, err.Error(), "ticket made at")
	require.ErrorIs(t, g.Check(req(v7(now.Add(time.Hour)))), ErrReplay)
}

func TestPolicyUnit(t *testing.T) {
	p := &Policy{Admins: []string{"CA 9"}}
	assert.True(t, errors.Is(p.Authorize(context.Background(), &pidbox.Request{Method: "ping"}), ErrNotAuthorized), "unsigned")
	assert.NoError(t, p.Authorize(context.Background(), &pidbox.Request{Method: "ping", Signer: "CA 1"}))
	assert.NoError(t, p.Authorize(context.Background(), &pidbox.Request{Method: "active_queues", Signer: "CA 1"}))
	assert.ErrorIs(t, p.Authorize(context.Background(), &pidbox.Request{Method: "hello", Signer: "CA 1"}), ErrNotAuthorized)
	assert.NoError(t, p.Authorize(context.Background(), &pidbox.Request{Method: "shutdown", Signer: "CA 9"}))
	p.ReadOnly = []string{"status"}
	assert.ErrorIs(t, p.Authorize(context.Background(), &pidbox.Request{Method: "ping", Signer: "CA 1"}), ErrNotAuthorized)
	assert.NoError(t, p.Authorize(context.Background(), &pidbox.Request{Method: "status", Signer: "CA 1"}))
}

// Go callers' tickets are version-7 UUIDs: the time they were made is
// inside the signed body, so a command captured and replayed after the
// window, with a fresh expiry written into the envelope, is refused.
func TestGoTicketsCarryTheirTime(t *testing.T) {
	ticket := wire.NewID()
	u, err := uuid.Parse(ticket)
	require.NoError(t, err)
	require.Equal(t, uuid.Version(7), u.Version())

	g := NewReplayGuard(ReplayOptions{})
	later := time.Now().Add(2 * time.Minute)
	g.now = func() time.Time { return later }
	err = g.Check(&pidbox.Request{Method: "shutdown", Ticket: ticket, Signer: "CA 1", Expires: later.Add(10 * time.Second)})
	require.ErrorIs(t, err, ErrReplay)
	assert.ErrorContains(t, err, "has a ticket made at")
}
