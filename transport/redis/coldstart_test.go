package redis_test

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gopidbox/pidbox"
	"github.com/gopidbox/pidbox/internal/redistest"
	"github.com/gopidbox/pidbox/transport"
	pidredis "github.com/gopidbox/pidbox/transport/redis"
	goredis "github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Subscribe refuses a queue beyond MaxQueues with ErrTooManyQueues, counts
// fanout subscriptions apart (they hold no pop connection), and takes a
// queue again once one is closed.
func TestMaxQueues(t *testing.T) {
	srv := redistest.Start(t)
	tr := open(t, srv, srv.URL(0), pidredis.Options{MaxQueues: 2})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	direct := transport.Exchange{Name: "mq", Kind: transport.Direct}
	bind := func(q string) transport.Binding { return transport.Binding{Exchange: direct, RoutingKey: q, Queue: q} }
	nop := func([]byte) {}

	s1, err := tr.Subscribe(ctx, bind("q1"), nop)
	require.NoError(t, err)
	_, err = tr.Subscribe(ctx, bind("q2"), nop)
	require.NoError(t, err)
	_, err = tr.Subscribe(ctx, bind("q3"), nop)
	require.ErrorIs(t, err, pidredis.ErrTooManyQueues)
	assert.Contains(t, err.Error(), "q3")
	members, err := srv.Client(0).SMembers(ctx, "_kombu.binding.mq").Result()
	require.NoError(t, err)
	assert.Len(t, members, 2, "the refused queue is not bound")

	fan := transport.Binding{Exchange: transport.Exchange{Name: "mqf", Kind: transport.Fanout}, Queue: "f1"}
	_, err = tr.Subscribe(ctx, fan, nop)
	require.NoError(t, err, "a fanout subscription holds no pop connection")

	require.NoError(t, s1.Close())
	got := make(chan []byte, 1)
	s3, err := tr.Subscribe(ctx, bind("q3"), func(m []byte) { got <- append([]byte(nil), m...) })
	require.NoError(t, err, "a closed queue frees its place")
	require.NoError(t, tr.Publish(ctx, direct, "q3", []byte("hello")))
	select {
	case m := <-got:
		assert.Equal(t, "hello", string(m))
	case <-ctx.Done():
		t.Fatal("the queue taken in the freed place reads nothing")
	}
	require.NoError(t, s3.Close())
}

// Open on a single server makes no round trip. A first call then costs
// its pipeline connection's handshake (HELLO, go-redis's; no CLIENT
// SETINFO) and one round trip of set-up, in which the server's check
// (CONFIG GET), the reply binding and, for a broadcast, the node lookup
// go together; its PUBLISH goes in the next. Beside it, the blocking pop's
// connection: HELLO, then BLMPOP. Nothing else is dialled.
func TestOpenConnections(t *testing.T) {
	srv := redistest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	v := variant{Kind: transport.Fanout, Serializer: "json"}
	goNode(t, open(t, srv, srv.URL(0), pidredis.Options{}), v, "n1@h")
	admin := srv.Client(0)
	// A controller ran before: the scripts are in Redis's cache.
	_, err := mailbox(t, open(t, srv, srv.URL(0), pidredis.Options{}), v).Call(ctx, "ping", nil, pidbox.Timeout(5*time.Second))
	require.NoError(t, err)

	for _, tc := range []struct {
		name    string
		opts    []pidbox.CallOption
		scripts int // in the set-up: the lease, and the lookup for a broadcast
	}{
		{"to a named node", []pidbox.CallOption{pidbox.To("n1@h")}, 1},
		{"broadcast, no limit", nil, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.NoError(t, admin.ConfigResetStat(ctx).Err())
			proxy := redistest.NewProxy(t, srv.Addr())
			tr := open(t, srv, "redis://"+proxy.Addr()+"/0", pidredis.Options{})
			assert.Empty(t, proxy.Sent(), "Open dials nothing")
			mb := mailbox(t, tr, v)
			res, err := mb.Call(ctx, "ping", nil, append(tc.opts, pidbox.Timeout(5*time.Second))...)
			require.NoError(t, err)
			assert.Equal(t, []string{"n1@h"}, names(res.Replies))

			sent := proxy.Sent()
			require.Len(t, sent, 2, "the pipeline connection and the pop's: %q", sent)
			var pipe, pop []string
			for _, reads := range sent {
				if strings.Contains(strings.ToLower(strings.Join(reads, "")), "blmpop") {
					pop = reads
				} else {
					pipe = reads
				}
			}
			require.NotNil(t, pop, "a connection pops: %q", sent)
			require.NotNil(t, pipe, "a connection publishes: %q", sent)
			lower := func(s string) string { return strings.ToLower(s) }
			require.GreaterOrEqual(t, len(pipe), 3, "%q", pipe)
			assert.Contains(t, lower(pipe[0]), "hello", "the handshake")
			assert.NotContains(t, lower(pipe[0]), "config")
			setup := lower(pipe[1])
			assert.Contains(t, setup, "config", "the check rides in the set-up: %q", pipe[1])
			assert.Equal(t, tc.scripts, strings.Count(setup, "evalsha"), "the binding (and lookup) ride in it: %q", pipe[1])
			assert.NotContains(t, setup, "publish")
			assert.Contains(t, lower(pipe[2]), "publish", "the PUBLISH goes in the next round trip: %q", pipe[2])
			assert.NotContains(t, lower(pipe[2]), "config", "checked once")
			assert.Contains(t, lower(pop[0]), "hello")
			for _, reads := range sent {
				assert.NotContains(t, lower(strings.Join(reads, "")), "setinfo")
			}
			stats, err := admin.Info(ctx, "commandstats", "errorstats").Result()
			require.NoError(t, err)
			assert.Contains(t, stats, "cmdstat_config|get:calls=1,")
			assert.NotContains(t, stats, "errorstat_")
		})
	}
}

// clients maps each client connection's address to its CLIENT LIST line.
func clients(t *testing.T, ctx context.Context, admin *goredis.Client) map[string]string {
	t.Helper()
	list, err := admin.ClientList(ctx).Result()
	require.NoError(t, err)
	out := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(list), "\n") {
		for _, f := range strings.Fields(line) {
			if addr, ok := strings.CutPrefix(f, "addr="); ok {
				out[addr] = line
			}
		}
	}
	return out
}

// SubscribeListing binds a queue and lists an exchange's bindings in one
// pipeline, also on a server whose script cache is empty; the listing is
// empty, not nil, when nothing is bound.
func TestSubscribeListing(t *testing.T) {
	srv := redistest.Start(t)
	tr := open(t, srv, srv.URL(0), pidredis.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	fan := transport.Exchange{Name: "sl.pidbox", Kind: transport.Fanout}
	replyEx := transport.Exchange{Name: "reply.sl.pidbox", Kind: transport.Direct}
	nop := func([]byte) {}

	require.NoError(t, srv.Client(0).ScriptFlush(ctx).Err())
	s0, listed, err := tr.SubscribeListing(ctx, transport.Binding{Exchange: replyEx, RoutingKey: "c0", Queue: "c0.reply.sl.pidbox"}, nop, fan)
	require.NoError(t, err)
	require.NotNil(t, listed, "an empty exchange lists as empty, not as failed")
	assert.Empty(t, listed)
	require.NoError(t, s0.Close())

	n1, err := tr.Subscribe(ctx, transport.Binding{Exchange: fan, Queue: "n1@h.sl.pidbox"}, nop)
	require.NoError(t, err)
	defer n1.Close()
	got := make(chan []byte, 1)
	rb := transport.Binding{Exchange: replyEx, RoutingKey: "c1", Queue: "c1.reply.sl.pidbox"}
	s1, listed, err := tr.SubscribeListing(ctx, rb, func(m []byte) { got <- append([]byte(nil), m...) }, fan)
	require.NoError(t, err)
	defer s1.Close()
	assert.Equal(t, []transport.Binding{{Exchange: fan, Queue: "n1@h.sl.pidbox"}}, listed)
	again, err := tr.Bindings(ctx, fan)
	require.NoError(t, err)
	assert.Equal(t, again, listed, "the listing is what Bindings says")
	members, err := srv.Client(0).SMembers(ctx, "_kombu.binding.reply.sl.pidbox").Result()
	require.NoError(t, err)
	assert.Contains(t, members, "c1\x06\x16\x06\x16c1.reply.sl.pidbox", "the queue is bound")
	require.NoError(t, tr.Publish(ctx, replyEx, "c1", []byte("reply")))
	select {
	case m := <-got:
		assert.Equal(t, "reply", string(m))
	case <-ctx.Done():
		t.Fatal("the subscription reads nothing")
	}
}

// countingTransport counts the lookups a mailbox asks of a real transport.
type countingTransport struct {
	*pidredis.Transport
	bindings, listings, publishListings atomic.Int32
}

func (c *countingTransport) PublishListing(ctx context.Context, ex transport.Exchange, routingKey string, msg []byte, sub transport.Subscription, list transport.Exchange) ([]transport.Binding, error) {
	c.publishListings.Add(1)
	return c.Transport.PublishListing(ctx, ex, routingKey, msg, sub, list)
}

func (c *countingTransport) Bindings(ctx context.Context, ex transport.Exchange) ([]transport.Binding, error) {
	c.bindings.Add(1)
	return c.Transport.Bindings(ctx, ex)
}

func (c *countingTransport) SubscribeListing(ctx context.Context, b transport.Binding, h transport.Handler, list transport.Exchange) (transport.Subscription, []transport.Binding, error) {
	c.listings.Add(1)
	return c.Transport.SubscribeListing(ctx, b, h, list)
}

// A mailbox's first broadcast binds its reply queue and looks up the live
// nodes in one round trip, and ends with the node it found; later
// broadcasts look up in their publish's round trip. A first call to named nodes binds
// without a lookup, and looks up only when a destination is late, to
// tell an unknown node.
func TestFirstCallLooksUpWithTheBinding(t *testing.T) {
	srv := redistest.Start(t)
	v := variant{Kind: transport.Fanout, Serializer: "json"}
	goNode(t, open(t, srv, srv.URL(0), pidredis.Options{}), v, "n1@h")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	ct := &countingTransport{Transport: open(t, srv, srv.URL(0), pidredis.Options{})}
	mb := mailbox(t, ct, v)
	res, err := mb.Call(ctx, "ping", nil, pidbox.Timeout(5*time.Second))
	require.NoError(t, err)
	assert.Equal(t, []string{"n1@h"}, names(res.Replies), "the broadcast ended with the node it expected")
	assert.Equal(t, int32(1), ct.listings.Load())
	assert.Equal(t, int32(0), ct.bindings.Load(), "no lookup apart from the binding's round trip")
	res, err = mb.Call(ctx, "ping", nil, pidbox.Timeout(5*time.Second))
	require.NoError(t, err)
	assert.Equal(t, []string{"n1@h"}, names(res.Replies))
	assert.Equal(t, int32(1), ct.listings.Load())
	assert.Equal(t, int32(1), ct.publishListings.Load(), "a later broadcast looks up with its publish")
	assert.Equal(t, int32(0), ct.bindings.Load(), "and not by itself")

	ct2 := &countingTransport{Transport: open(t, srv, srv.URL(0), pidredis.Options{})}
	mb2 := mailbox(t, ct2, v)
	res, err = mb2.Call(ctx, "ping", nil, pidbox.To("n1@h"), pidbox.Timeout(5*time.Second))
	require.NoError(t, err)
	assert.Equal(t, pidbox.Replied, res.Outcomes["n1@h"])
	assert.Zero(t, ct2.listings.Load()+ct2.bindings.Load()+ct2.publishListings.Load(), "a call whose destinations reply looks nothing up")
	res, err = mb2.Call(ctx, "ping", nil, pidbox.To("ghost@h", "n1@h"), pidbox.Timeout(300*time.Millisecond))
	require.ErrorIs(t, err, pidbox.ErrIncomplete)
	assert.Equal(t, pidbox.Unknown, res.Outcomes["ghost@h"])
	assert.Equal(t, int32(1), ct2.bindings.Load(), "the late destination was looked up")
}

// A queue whose declaration fails leaves no binding behind, and frees its
// place: its reading loop, started before the declaration, ends.
func TestFailedSubscribeLeavesNothing(t *testing.T) {
	srv := redistest.Start(t)
	tr := open(t, srv, srv.URL(0), pidredis.Options{MaxQueues: 1})
	ex := transport.Exchange{Name: "fs", Kind: transport.Direct}
	b := transport.Binding{Exchange: ex, RoutingKey: "q", Queue: "q"}
	dead, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := tr.Subscribe(dead, b, func([]byte) { t.Error("a failed subscription delivered") })
	require.ErrorIs(t, err, context.Canceled)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var s transport.Subscription
	require.Eventually(t, func() bool {
		s, err = tr.Subscribe(ctx, b, func([]byte) {})
		return err == nil
	}, 5*time.Second, 10*time.Millisecond, "the failed queue's place is freed: %v", err)
	require.NoError(t, s.Close())
	n, err := srv.Client(0).Exists(ctx, "_kombu.binding.fs", "q").Result()
	require.NoError(t, err)
	assert.Zero(t, n, "no binding and no list left")
}
