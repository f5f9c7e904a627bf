// Package transporttest is the conformance suite every pidbox transport
// runs. A transport passes when it routes, keeps and drops messages the way
// Kombu's Redis transport does, as the package transport documentation
// describes.
//
// Use it from the transport's own tests:
//
//	func TestConformance(t *testing.T) {
//		transporttest.Run(t, func(t *testing.T) transport.Transport {
//			return mytransport.New(...)
//		})
//	}
package transporttest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/gopidbox/pidbox/internal/wire"
	"github.com/gopidbox/pidbox/transport"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Constructor returns a fresh transport for one test. The suite closes it.
type Constructor func(t *testing.T) transport.Transport

// quiet is how long the suite waits to be confident nothing else arrives.
const quiet = 150 * time.Millisecond

// Run runs the whole suite against transports made by newTransport. Tests
// use exchange and queue names unique to each run, so several runs may
// share one broker.
//
// Messages are Kombu envelopes, as the transport interface says: the suite
// wraps each test payload in one and checks that the envelope delivered
// carries the same body, content type and encoding, headers and
// delivery_info, whatever bytes the transport encodes it to (a broker
// without envelopes, such as AMQP, builds it back from its own frames).
// A transport whose Bindings returns transport.ErrUnsupported skips the
// checks that list bindings.
func Run(t *testing.T, newTransport Constructor) {
	tests := []struct {
		name string
		fn   func(t *testing.T, tr transport.Transport, ns string)
	}{
		{"FanoutReachesEveryListener", testFanout},
		{"FanoutSkipsOtherExchanges", testFanoutOtherExchange},
		{"FanoutDuplicateListenersEachGetACopy", testFanoutDuplicate},
		{"DirectRoutesByKey", testDirectRouting},
		{"DirectKeepsUntilReceived", testDirectKeeps},
		{"DirectConsumersCompete", testDirectCompete},
		{"PublishWithoutBindingIsNotAnError", testNoBinding},
		{"SubscribeIsConfirmedOnReturn", testConfirmed},
		{"CloseUnbinds", testCloseUnbinds},
		{"BindingsListsBoundQueues", testBindings},
		{"MessagesArriveIntact", testIntact},
		{"ConcurrentPublishersLoseNothing", testConcurrent},
		{"HandlerCallsAreSequential", testSequentialHandler},
		{"CloseWaitsForTheHandler", testCloseWaits},
		{"TransportCloseEndsSubscriptions", testTransportClose},
		{"TopicRoutesByPattern", testTopicRouting},
		{"TopicDeliversOncePerQueue", testTopicOncePerQueue},
		{"TopicKeepsUntilReceived", testTopicKeeps},
		{"TopicCloseUnbinds", testTopicCloseUnbinds},
		{"PublishedMessagesCanBeOverwritten", testOverwritten},
	}
	// Optional interfaces, tested where the transport has them.
	probe := newTransport(t)
	type test = struct {
		name string
		fn   func(t *testing.T, tr transport.Transport, ns string)
	}
	if _, ok := probe.(transport.Queuer); ok {
		tests = append(tests, test{"QueuedPublishesArriveOnce", testQueued})
	}
	if _, ok := probe.(transport.ListingPublisher); ok {
		tests = append(tests, test{"PublishListingListsThenPublishes", testPublishListing})
	}
	_ = probe.Close()
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			inner := newTransport(t)
			t.Cleanup(func() { _ = inner.Close() })
			tr := &enveloped{Transport: inner, t: t}
			tc.fn(t, tr, "tt"+uuid.NewString()[:8])
		})
	}
}

func ctxFor(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// sub is a subscription whose handler queues messages for the test.
type sub struct {
	transport.Subscription
	ch chan []byte
}

func subscribe(t *testing.T, tr transport.Transport, b transport.Binding) *sub {
	t.Helper()
	ch := make(chan []byte, 4096)
	s, err := tr.Subscribe(ctxFor(t), b, func(m []byte) { ch <- m })
	require.NoError(t, err, "subscribe %s", b.Queue)
	t.Cleanup(func() { _ = s.Close() })
	return &sub{Subscription: s, ch: ch}
}

func receive(t *testing.T, s *sub) []byte {
	t.Helper()
	select {
	case m := <-s.ch:
		return m
	case <-time.After(5 * time.Second):
		t.Fatal("no message within 5s")
		return nil
	}
}

func nothing(t *testing.T, s *sub) {
	t.Helper()
	select {
	case m := <-s.ch:
		t.Fatalf("unexpected message %q", m)
	case <-time.After(quiet):
	}
}

func fanout(ns string) transport.Exchange {
	return transport.Exchange{Name: ns + ".pidbox", Kind: transport.Fanout}
}

func direct(name string) transport.Exchange {
	return transport.Exchange{Name: name, Kind: transport.Direct}
}

func testFanout(t *testing.T, tr transport.Transport, ns string) {
	ex := fanout(ns)
	var subs []*sub
	for i := range 3 {
		subs = append(subs, subscribe(t, tr, transport.Binding{Exchange: ex, Queue: fmt.Sprintf("n%d.%s", i, ex.Name)}))
	}
	require.NoError(t, tr.Publish(ctxFor(t), ex, "", []byte("hello")))
	for _, s := range subs {
		assert.Equal(t, "hello", string(receive(t, s)))
	}
	for _, s := range subs {
		nothing(t, s)
	}
}

func testFanoutOtherExchange(t *testing.T, tr transport.Transport, ns string) {
	mine := subscribe(t, tr, transport.Binding{Exchange: fanout(ns), Queue: "a." + ns})
	other := subscribe(t, tr, transport.Binding{Exchange: fanout(ns + "x"), Queue: "b." + ns})
	require.NoError(t, tr.Publish(ctxFor(t), fanout(ns), "", []byte("m")))
	assert.Equal(t, "m", string(receive(t, mine)))
	nothing(t, other)
}

func testFanoutDuplicate(t *testing.T, tr transport.Transport, ns string) {
	b := transport.Binding{Exchange: fanout(ns), Queue: "same." + ns}
	s1, s2 := subscribe(t, tr, b), subscribe(t, tr, b)
	require.NoError(t, tr.Publish(ctxFor(t), b.Exchange, "", []byte("m")))
	assert.Equal(t, "m", string(receive(t, s1)))
	assert.Equal(t, "m", string(receive(t, s2)))
	// Closing one listener leaves the other bound and listening.
	require.NoError(t, s1.Close())
	require.NoError(t, tr.Publish(ctxFor(t), b.Exchange, "", []byte("m2")))
	assert.Equal(t, "m2", string(receive(t, s2)))
}

func testDirectRouting(t *testing.T, tr transport.Transport, ns string) {
	ex := direct("reply." + ns)
	a1 := subscribe(t, tr, transport.Binding{Exchange: ex, RoutingKey: "a", Queue: "a1." + ns})
	a2 := subscribe(t, tr, transport.Binding{Exchange: ex, RoutingKey: "a", Queue: "a2." + ns})
	b := subscribe(t, tr, transport.Binding{Exchange: ex, RoutingKey: "b", Queue: "b." + ns})
	require.NoError(t, tr.Publish(ctxFor(t), ex, "a", []byte("for a")))
	assert.Equal(t, "for a", string(receive(t, a1)))
	assert.Equal(t, "for a", string(receive(t, a2)))
	nothing(t, b)
	require.NoError(t, tr.Publish(ctxFor(t), ex, "b", []byte("for b")))
	assert.Equal(t, "for b", string(receive(t, b)))
	nothing(t, a1)
}

func testDirectKeeps(t *testing.T, tr transport.Transport, ns string) {
	ex := direct(ns)
	s := subscribe(t, tr, transport.Binding{Exchange: ex, RoutingKey: "k", Queue: "q." + ns})
	for i := range 5 {
		require.NoError(t, tr.Publish(ctxFor(t), ex, "k", fmt.Appendf(nil, "m%d", i)))
	}
	time.Sleep(quiet) // nobody receiving meanwhile: the queue keeps them
	for i := range 5 {
		assert.Equal(t, fmt.Sprintf("m%d", i), string(receive(t, s)), "FIFO order")
	}
}

func testDirectCompete(t *testing.T, tr transport.Transport, ns string) {
	ex := direct(ns)
	b := transport.Binding{Exchange: ex, RoutingKey: "k", Queue: "q." + ns}
	s1, s2 := subscribe(t, tr, b), subscribe(t, tr, b)
	const n = 40
	for i := range n {
		require.NoError(t, tr.Publish(ctxFor(t), ex, "k", fmt.Appendf(nil, "%d", i)))
	}
	got := map[string]int{}
	for {
		var m []byte
		select {
		case m = <-s1.ch:
		case m = <-s2.ch:
		case <-time.After(2 * quiet):
		}
		if m == nil {
			break
		}
		got[string(m)]++
	}
	assert.Len(t, got, n)
	for m, c := range got {
		assert.Equal(t, 1, c, "message %s delivered %d times", m, c)
	}
}

func testNoBinding(t *testing.T, tr transport.Transport, ns string) {
	assert.NoError(t, tr.Publish(ctxFor(t), fanout(ns), "", []byte("lost")))
	assert.NoError(t, tr.Publish(ctxFor(t), direct(ns), "nobody", []byte("lost")))
}

func testConfirmed(t *testing.T, tr transport.Transport, ns string) {
	// Repeat: a race between subscribe and publish shows up only sometimes.
	for i := range 20 {
		ex := fanout(fmt.Sprintf("%s%d", ns, i))
		s := subscribe(t, tr, transport.Binding{Exchange: ex, Queue: "n." + ex.Name})
		require.NoError(t, tr.Publish(ctxFor(t), ex, "", []byte("first")))
		assert.Equal(t, "first", string(receive(t, s)), "round %d", i)
		require.NoError(t, s.Close())
	}
}

func testCloseUnbinds(t *testing.T, tr transport.Transport, ns string) {
	for _, ex := range []transport.Exchange{fanout(ns), direct(ns + ".d")} {
		b := transport.Binding{Exchange: ex, Queue: "n." + ex.Name}
		s := subscribe(t, tr, b)
		require.NoError(t, s.Close())
		require.NoError(t, s.Close(), "Close twice")
		select {
		case <-s.Done():
		default:
			t.Fatal("Done not closed after Close")
		}
		if bs, ok := bindings(t, tr, ex); ok {
			assert.NotContains(t, bs, b)
		}

		// A later subscriber to the same queue does not see messages
		// published while nobody was bound.
		require.NoError(t, tr.Publish(ctxFor(t), ex, "", []byte("stale")))
		s2 := subscribe(t, tr, b)
		nothing(t, s2)
	}
}

func testBindings(t *testing.T, tr transport.Transport, ns string) {
	ex := fanout(ns)
	want := []transport.Binding{
		{Exchange: ex, Queue: "a@h." + ex.Name},
		{Exchange: ex, Queue: "b@h." + ex.Name},
	}
	for _, b := range want {
		subscribe(t, tr, b)
	}
	got, ok := bindings(t, tr, ex)
	if !ok {
		t.Skip("the broker cannot list bindings")
	}
	assert.ElementsMatch(t, want, got)
	got, _ = bindings(t, tr, fanout(ns+"none"))
	assert.Empty(t, got)
}

// bindings lists ex's bindings; ok is false when the transport cannot.
func bindings(t *testing.T, tr transport.Transport, ex transport.Exchange) (bs []transport.Binding, ok bool) {
	t.Helper()
	bs, err := tr.Bindings(ctxFor(t), ex)
	if errors.Is(err, transport.ErrUnsupported) {
		return nil, false
	}
	require.NoError(t, err)
	return bs, true
}

// enveloped wraps every payload the suite publishes in a Kombu envelope
// and unwraps, checking it, every envelope delivered.
type enveloped struct {
	transport.Transport
	t     *testing.T
	clock atomic.Uint64
}

// Publish sends payload in an envelope whose ticket records its clock,
// exchange and routing key, for checking on delivery.
func (e *enveloped) Publish(ctx context.Context, ex transport.Exchange, routingKey string, payload []byte) error {
	return e.Transport.Publish(ctx, ex, routingKey, e.envelope(ex, routingKey, payload))
}

// envelope is payload in the envelope Publish sends.
func (e *enveloped) envelope(ex transport.Exchange, routingKey string, payload []byte) []byte {
	clock := e.clock.Add(1)
	env := wire.Envelope{
		Body:            payload,
		ContentType:     "application/octet-stream",
		ContentEncoding: "binary",
		Headers:         wire.Headers{Clock: clock, Expires: expires(clock), Ticket: fmt.Sprintf("%d|%s|%s", clock, ex.Name, routingKey)},
		Properties:      wire.Properties{DeliveryMode: wire.Persistent, Exchange: ex.Name, RoutingKey: routingKey},
	}
	return wire.Encode(&env)
}

// expires is a header value that survives any exact encoding of a float.
func expires(clock uint64) float64 { return 2e9 + float64(clock)/8 }

// Subscribe hands the handler the payload of each envelope delivered.
func (e *enveloped) Subscribe(ctx context.Context, b transport.Binding, h transport.Handler) (transport.Subscription, error) {
	return e.Transport.Subscribe(ctx, b, func(msg []byte) {
		env, err := wire.Decode(msg, 0)
		if err != nil {
			e.t.Errorf("queue %s: delivered message is not an envelope: %v", b.Queue, err)
			return
		}
		hd := env.Headers
		want := fmt.Sprintf("%d|%s|%s", hd.Clock, env.Properties.Exchange, env.Properties.RoutingKey)
		if hd.Ticket != want || hd.Expires != expires(hd.Clock) || env.ContentType != "application/octet-stream" ||
			env.ContentEncoding != "binary" || env.Properties.DeliveryMode != wire.Persistent {
			e.t.Errorf("queue %s: envelope changed in transit: headers %+v, content %q/%q, properties %+v (want ticket %q)",
				b.Queue, hd, env.ContentType, env.ContentEncoding, env.Properties, want)
		}
		h(env.Body)
	})
}

func testIntact(t *testing.T, tr transport.Transport, ns string) {
	all := make([]byte, 256)
	for i := range all {
		all[i] = byte(i)
	}
	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	for _, ex := range []transport.Exchange{fanout(ns), direct(ns + ".d")} {
		s := subscribe(t, tr, transport.Binding{Exchange: ex, Queue: "n." + ex.Name})
		for _, msg := range [][]byte{all, big, []byte("{}")} {
			require.NoError(t, tr.Publish(ctxFor(t), ex, "", msg))
			assert.True(t, bytes.Equal(msg, receive(t, s)), "%s: %d-byte message changed", ex.Kind, len(msg))
		}
	}
}

func testConcurrent(t *testing.T, tr transport.Transport, ns string) {
	ex := direct(ns)
	s := subscribe(t, tr, transport.Binding{Exchange: ex, RoutingKey: "k", Queue: "q." + ns})
	const publishers, each = 8, 50
	var wg sync.WaitGroup
	for p := range publishers {
		wg.Go(func() {
			for i := range each {
				assert.NoError(t, tr.Publish(ctxFor(t), ex, "k", fmt.Appendf(nil, "%d-%d", p, i)))
			}
		})
	}
	seen := map[string]bool{}
	last := map[int]int{}
	for range publishers * each {
		msg := string(receive(t, s))
		require.False(t, seen[msg], "duplicate %s", msg)
		seen[msg] = true
		var p, i int
		_, err := fmt.Sscanf(msg, "%d-%d", &p, &i)
		require.NoError(t, err)
		if prev, ok := last[p]; ok {
			assert.Greater(t, i, prev, "per-publisher order")
		}
		last[p] = i
	}
	wg.Wait()
	nothing(t, s)
}

func testSequentialHandler(t *testing.T, tr transport.Transport, ns string) {
	for _, ex := range []transport.Exchange{fanout(ns), direct(ns + ".d")} {
		var running, overlap, count int32
		var mu sync.Mutex
		var order []string
		done := make(chan struct{})
		const n = 50
		s, err := tr.Subscribe(ctxFor(t), transport.Binding{Exchange: ex, Queue: "n." + ex.Name}, func(m []byte) {
			mu.Lock()
			running++
			if running > 1 {
				overlap++
			}
			order = append(order, string(m))
			mu.Unlock()
			time.Sleep(time.Millisecond)
			mu.Lock()
			running--
			count++
			if count == n {
				close(done)
			}
			mu.Unlock()
		})
		require.NoError(t, err)
		for i := range n {
			require.NoError(t, tr.Publish(ctxFor(t), ex, "", fmt.Appendf(nil, "%03d", i)))
		}
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: handler saw %d of %d messages", ex.Kind, count, n)
		}
		require.NoError(t, s.Close())
		mu.Lock()
		assert.Zero(t, overlap, "%s: handler called concurrently", ex.Kind)
		for i, m := range order {
			assert.Equal(t, fmt.Sprintf("%03d", i), m, "%s: order", ex.Kind)
		}
		mu.Unlock()
	}
}

func testCloseWaits(t *testing.T, tr transport.Transport, ns string) {
	entered, release := make(chan struct{}), make(chan struct{})
	var returned atomic.Bool
	s, err := tr.Subscribe(ctxFor(t), transport.Binding{Exchange: fanout(ns), Queue: "n." + ns}, func([]byte) {
		close(entered)
		<-release
		returned.Store(true)
	})
	require.NoError(t, err)
	require.NoError(t, tr.Publish(ctxFor(t), fanout(ns), "", []byte("x")))
	<-entered
	go func() { time.Sleep(100 * time.Millisecond); close(release) }()
	require.NoError(t, s.Close())
	assert.True(t, returned.Load(), "Close returned while the handler was still running")
}

func testTransportClose(t *testing.T, tr transport.Transport, ns string) {
	var calls atomic.Int32
	s, err := tr.Subscribe(ctxFor(t), transport.Binding{Exchange: fanout(ns), Queue: "n." + ns}, func([]byte) { calls.Add(1) })
	require.NoError(t, err)
	require.NoError(t, tr.Close())
	select {
	case <-s.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("subscription not done after the transport closed")
	}
	require.NoError(t, s.Close())
	assert.ErrorIs(t, tr.Publish(ctxFor(t), fanout(ns), "", []byte("x")), transport.ErrClosed)
	_, err = tr.Subscribe(ctxFor(t), transport.Binding{Exchange: fanout(ns), Queue: "m." + ns}, func([]byte) {})
	assert.ErrorIs(t, err, transport.ErrClosed)
	assert.Zero(t, calls.Load())
}

func topic(name string) transport.Exchange {
	return transport.Exchange{Name: name, Kind: transport.Topic}
}

// The topic cases keep to what Kombu's virtual exchange and AMQP brokers
// agree on; transport.TopicMatch documents the corners where they differ.
func testTopicRouting(t *testing.T, tr transport.Transport, ns string) {
	ex := topic(ns + "ev")
	bound := map[string]*sub{}
	for _, key := range []string{"#", "worker.#", "worker.*", "*.heartbeat", "worker.heartbeat", "task.#", "worker.online", "task.*.x"} {
		bound[key] = subscribe(t, tr, transport.Binding{Exchange: ex, RoutingKey: key, Queue: key + "." + ns})
	}
	want := map[string][]string{
		"worker.heartbeat": {"#", "worker.#", "worker.*", "*.heartbeat", "worker.heartbeat"},
		"task.a.x":         {"#", "task.#", "task.*.x"},
		"other":            {"#"},
	}
	for _, key := range []string{"worker.heartbeat", "task.a.x", "other"} {
		require.NoError(t, tr.Publish(ctxFor(t), ex, key, []byte(key)))
		for bk, s := range bound {
			if slices.Contains(want[key], bk) {
				assert.Equal(t, key, string(receive(t, s)), "binding %q, routing key %q", bk, key)
			}
		}
		for bk, s := range bound {
			if !slices.Contains(want[key], bk) {
				select {
				case m := <-s.ch:
					t.Errorf("binding %q got %q", bk, m)
				default:
				}
			}
		}
	}
	for _, s := range bound {
		nothing(t, s)
	}
}

func testTopicOncePerQueue(t *testing.T, tr transport.Transport, ns string) {
	ex := topic(ns + "ev")
	q := "q." + ns
	s1 := subscribe(t, tr, transport.Binding{Exchange: ex, RoutingKey: "a.*", Queue: q})
	ch := make(chan []byte, 16)
	second, err := tr.Subscribe(ctxFor(t), transport.Binding{Exchange: ex, RoutingKey: "#", Queue: q}, func(m []byte) { ch <- m })
	if err != nil {
		// Some transports (AMQP) bind a queue once per process.
		t.Skipf("a second binding of one queue is refused: %v", err)
	}
	t.Cleanup(func() { _ = second.Close() })
	s2 := &sub{Subscription: second, ch: ch}
	require.NoError(t, tr.Publish(ctxFor(t), ex, "a.b", []byte("m")))
	n := 0
	deadline := time.After(5 * time.Second)
	for n == 0 {
		select {
		case <-s1.ch:
			n++
		case <-s2.ch:
			n++
		case <-deadline:
			t.Fatal("no message within 5s")
		}
	}
	nothing(t, s1)
	nothing(t, s2)
}

func testTopicKeeps(t *testing.T, tr transport.Transport, ns string) {
	ex := topic(ns + "ev")
	gate := make(chan struct{})
	ch := make(chan string, 16)
	s, err := tr.Subscribe(ctxFor(t), transport.Binding{Exchange: ex, RoutingKey: "k.#", Queue: "q." + ns}, func(m []byte) {
		<-gate // a busy consumer: messages wait in the queue meanwhile
		ch <- string(m)
	})
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.Close() })
	for i := range 5 {
		require.NoError(t, tr.Publish(ctxFor(t), ex, fmt.Sprintf("k.%d", i), fmt.Appendf(nil, "m%d", i)))
	}
	time.Sleep(quiet)
	close(gate)
	for i := range 5 {
		select {
		case m := <-ch:
			assert.Equal(t, fmt.Sprintf("m%d", i), m, "FIFO order")
		case <-time.After(5 * time.Second):
			t.Fatalf("message %d missing", i)
		}
	}
}

func testTopicCloseUnbinds(t *testing.T, tr transport.Transport, ns string) {
	ex := topic(ns + "ev")
	b := transport.Binding{Exchange: ex, RoutingKey: "worker.#", Queue: "n." + ns}
	s := subscribe(t, tr, b)
	if bs, ok := bindings(t, tr, ex); ok {
		assert.Contains(t, bs, b)
	}
	require.NoError(t, s.Close())
	if bs, ok := bindings(t, tr, ex); ok {
		assert.NotContains(t, bs, b)
	}
	require.NoError(t, tr.Publish(ctxFor(t), ex, "worker.x", []byte("stale")))
	s2 := subscribe(t, tr, b)
	nothing(t, s2)
}

// testQueued: publishes handed to transport.Queuer from many goroutines at
// once each arrive once, and each one's done is called once, without an
// error, for a direct and a fanout exchange.
func testQueued(t *testing.T, tr transport.Transport, ns string) {
	e := tr.(*enveloped)
	q := e.Transport.(transport.Queuer)
	for _, ex := range []transport.Exchange{direct("q." + ns), fanout(ns)} {
		s := subscribe(t, tr, transport.Binding{Exchange: ex, RoutingKey: "k", Queue: "q." + ex.Name})
		const n = 200
		var done sync.WaitGroup
		var calls atomic.Int64
		for i := range n {
			done.Add(1)
			go q.PublishQueued(ctxFor(t), ex, "k", e.envelope(ex, "k", fmt.Appendf(nil, "m%d", i)), nil, func(err error) {
				assert.NoError(t, err)
				calls.Add(1)
				done.Done()
			})
		}
		done.Wait()
		assert.Equal(t, int64(n), calls.Load(), "done called once per publish")
		got := map[string]bool{}
		for range n {
			m := string(receive(t, s))
			assert.False(t, got[m], "%s arrived twice", m)
			got[m] = true
		}
		nothing(t, s)
	}
}

// testPublishListing: PublishListing returns the bindings of the exchange
// it lists, as Bindings does, and publishes as Publish does.
func testPublishListing(t *testing.T, tr transport.Transport, ns string) {
	e := tr.(*enveloped)
	lp := e.Transport.(transport.ListingPublisher)
	ex := fanout(ns)
	var subs []*sub
	var want []string
	for i := range 3 {
		q := fmt.Sprintf("n%d.%s", i, ex.Name)
		subs = append(subs, subscribe(t, tr, transport.Binding{Exchange: ex, Queue: q}))
		want = append(want, q)
	}
	bs, err := lp.PublishListing(ctxFor(t), ex, "", e.envelope(ex, "", []byte("hello")), nil, ex)
	require.NoError(t, err)
	var got []string
	for _, b := range bs {
		assert.Equal(t, ex, b.Exchange)
		got = append(got, b.Queue)
	}
	assert.ElementsMatch(t, want, got)
	for _, s := range subs {
		assert.Equal(t, "hello", string(receive(t, s)))
	}
	// An exchange nobody is bound to lists as empty, not nil.
	bs, err = lp.PublishListing(ctxFor(t), ex, "", e.envelope(ex, "", []byte("again")), nil, fanout(ns+"none"))
	require.NoError(t, err)
	assert.NotNil(t, bs)
	assert.Empty(t, bs)
	for _, s := range subs {
		assert.Equal(t, "again", string(receive(t, s)))
	}
}

// testOverwritten: a transport holds nothing of a message once its publish
// returned (or, queued, once done was called): the suite writes
// over each message's bytes at that moment, from many goroutines at once
// so that some queue, and every message still arrives as it was sent.
func testOverwritten(t *testing.T, tr transport.Transport, ns string) {
	e := tr.(*enveloped)
	scribble := func(msg []byte) {
		for i := range msg {
			msg[i] = 'X'
		}
	}
	type publish struct {
		name string
		fn   func(ex transport.Exchange, msg []byte)
	}
	publishes := []publish{{"Publish", func(ex transport.Exchange, msg []byte) {
		assert.NoError(t, e.Transport.Publish(ctxFor(t), ex, "k", msg))
		scribble(msg)
	}}}
	if q, ok := e.Transport.(transport.Queuer); ok {
		publishes = append(publishes, publish{"PublishQueued", func(ex transport.Exchange, msg []byte) {
			done := make(chan struct{})
			q.PublishQueued(ctxFor(t), ex, "k", msg, nil, func(err error) {
				assert.NoError(t, err)
				scribble(msg)
				close(done)
			})
			<-done
		}})
	}
	if lp, ok := e.Transport.(transport.ListingPublisher); ok {
		publishes = append(publishes, publish{"PublishListing", func(ex transport.Exchange, msg []byte) {
			_, err := lp.PublishListing(ctxFor(t), ex, "k", msg, nil, ex)
			assert.NoError(t, err)
			scribble(msg)
		}})
	}
	for _, ex := range []transport.Exchange{direct("b." + ns), fanout(ns)} {
		s := subscribe(t, tr, transport.Binding{Exchange: ex, RoutingKey: "k", Queue: "b." + ex.Name})
		for _, p := range publishes {
			const n = 100
			var wg sync.WaitGroup
			for i := range n {
				wg.Go(func() { p.fn(ex, e.envelope(ex, "k", fmt.Appendf(nil, "%s %d", p.name, i))) })
			}
			wg.Wait()
			got := map[string]bool{}
			for range n {
				m := string(receive(t, s)) // enveloped checks the envelope
				assert.False(t, got[m], "%s: %q arrived twice", ex.Kind, m)
				got[m] = true
			}
			for i := range n {
				assert.True(t, got[fmt.Sprintf("%s %d", p.name, i)], "%s: %s %d missing", ex.Kind, p.name, i)
			}
		}
	}
}
