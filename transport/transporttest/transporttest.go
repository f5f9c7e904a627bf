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
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
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
		{"ReceiveHonoursContext", testReceiveContext},
		{"TransportCloseEndsSubscriptions", testTransportClose},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tr := newTransport(t)
			t.Cleanup(func() { _ = tr.Close() })
			tc.fn(t, tr, "tt"+uuid.NewString()[:8])
		})
	}
}

func ctxFor(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func subscribe(t *testing.T, tr transport.Transport, b transport.Binding) transport.Subscription {
	t.Helper()
	s, err := tr.Subscribe(ctxFor(t), b)
	require.NoError(t, err, "subscribe %s", b.Queue)
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func receive(t *testing.T, s transport.Subscription) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	msg, err := s.Receive(ctx)
	require.NoError(t, err)
	return msg
}

func nothing(t *testing.T, s transport.Subscription) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), quiet)
	defer cancel()
	msg, err := s.Receive(ctx)
	require.ErrorIs(t, err, context.DeadlineExceeded, "unexpected message %q", msg)
}

func fanout(ns string) transport.Exchange {
	return transport.Exchange{Name: ns + ".pidbox", Kind: transport.Fanout}
}

func direct(name string) transport.Exchange {
	return transport.Exchange{Name: name, Kind: transport.Direct}
}

func testFanout(t *testing.T, tr transport.Transport, ns string) {
	ex := fanout(ns)
	var subs []transport.Subscription
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
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, s := range []transport.Subscription{s1, s2} {
		wg.Go(func() {
			for {
				ctx, cancel := context.WithTimeout(context.Background(), 2*quiet)
				msg, err := s.Receive(ctx)
				cancel()
				if err != nil {
					return
				}
				mu.Lock()
				got[string(msg)]++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
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
		_, err := s.Receive(ctxFor(t))
		assert.ErrorIs(t, err, transport.ErrClosed)
		bs, err := tr.Bindings(ctxFor(t), ex)
		require.NoError(t, err)
		assert.NotContains(t, bs, b)

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
	got, err := tr.Bindings(ctxFor(t), ex)
	require.NoError(t, err)
	assert.ElementsMatch(t, want, got)
	got, err = tr.Bindings(ctxFor(t), fanout(ns+"none"))
	require.NoError(t, err)
	assert.Empty(t, got)
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

func testReceiveContext(t *testing.T, tr transport.Transport, ns string) {
	for _, ex := range []transport.Exchange{fanout(ns), direct(ns + ".d")} {
		s := subscribe(t, tr, transport.Binding{Exchange: ex, Queue: "n." + ex.Name})
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		start := time.Now()
		_, err := s.Receive(ctx)
		cancel()
		assert.ErrorIs(t, err, context.DeadlineExceeded)
		assert.Less(t, time.Since(start), 2*time.Second, "Receive overran its deadline")

		ctx, cancel = context.WithCancel(context.Background())
		go func() { time.Sleep(50 * time.Millisecond); cancel() }()
		_, err = s.Receive(ctx)
		assert.ErrorIs(t, err, context.Canceled)

		// A subscription still works after a cancelled Receive.
		require.NoError(t, tr.Publish(ctxFor(t), ex, "", []byte("after")))
		assert.Equal(t, "after", string(receive(t, s)))
	}
}

func testTransportClose(t *testing.T, tr transport.Transport, ns string) {
	s, err := tr.Subscribe(ctxFor(t), transport.Binding{Exchange: fanout(ns), Queue: "n." + ns})
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() {
		_, err := s.Receive(context.Background())
		done <- err
	}()
	time.Sleep(50 * time.Millisecond)
	require.NoError(t, tr.Close())
	select {
	case err := <-done:
		assert.True(t, errors.Is(err, transport.ErrClosed), "got %v", err)
	case <-time.After(5 * time.Second):
		t.Fatal("Receive still blocked after the transport closed")
	}
	require.NoError(t, s.Close())
	assert.ErrorIs(t, tr.Publish(ctxFor(t), fanout(ns), "", []byte("x")), transport.ErrClosed)
	_, err = tr.Subscribe(ctxFor(t), transport.Binding{Exchange: fanout(ns), Queue: "m." + ns})
	assert.ErrorIs(t, err, transport.ErrClosed)
}
