package redis_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gopidbox/pidbox"
	"github.com/gopidbox/pidbox/internal/redistest"
	"github.com/gopidbox/pidbox/transport"
	pidredis "github.com/gopidbox/pidbox/transport/redis"
)

// pipelineSizes is a go-redis hook that records how commands reach Redis:
// alone, or in pipelines of which it keeps the largest.
type pipelineSizes struct {
	single, pipelines, largest atomic.Int64
}

func (h *pipelineSizes) DialHook(next goredis.DialHook) goredis.DialHook { return next }

func (h *pipelineSizes) ProcessHook(next goredis.ProcessHook) goredis.ProcessHook {
	return func(ctx context.Context, cmd goredis.Cmder) error {
		h.single.Add(1)
		return next(ctx, cmd)
	}
}

func (h *pipelineSizes) ProcessPipelineHook(next goredis.ProcessPipelineHook) goredis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []goredis.Cmder) error {
		h.pipelines.Add(1)
		for {
			old := h.largest.Load()
			if int64(len(cmds)) <= old || h.largest.CompareAndSwap(old, int64(len(cmds))) {
				break
			}
		}
		return next(ctx, cmds)
	}
}

// hooked is a transport on a client of its own, with h watching it.
func hooked(t *testing.T, srv *redistest.Server, h *pipelineSizes) *pidredis.Transport {
	t.Helper()
	o, err := goredis.ParseURL(srv.URL(0))
	require.NoError(t, err)
	o.ContextTimeoutEnabled = true
	client := goredis.NewClient(o)
	client.AddHook(h)
	tr := pidredis.NewFromClient(client, pidredis.Options{Logger: quiet})
	t.Cleanup(func() { _ = tr.Close(); _ = client.Close() })
	return tr
}

// Publishes from many goroutines at once go out in shared pipelines, and
// every message arrives exactly once; a lone publish is one command.
func TestCoalescedPublishes(t *testing.T) {
	srv := redistest.Start(t)
	var h pipelineSizes
	tr := hooked(t, srv, &h)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	ex := transport.Exchange{Name: "coalesce.pidbox", Kind: transport.Direct}
	var mu sync.Mutex
	got := map[string]int{}
	sub, err := tr.Subscribe(ctx, transport.Binding{Exchange: ex, RoutingKey: "k", Queue: "q"}, func(msg []byte) {
		mu.Lock()
		got[string(msg)]++
		mu.Unlock()
	})
	require.NoError(t, err)
	defer sub.Close()

	// A lone publish, on a transport with nothing else to do, is one
	// command, not a pipeline.
	var lone pipelineSizes
	tr2 := hooked(t, srv, &lone)
	require.NoError(t, tr2.Publish(ctx, ex, "k", []byte("first"))) // loads the script
	single, pipelines := lone.single.Load(), lone.pipelines.Load() // go-redis pipelines a new connection's set-up
	require.NoError(t, tr2.Publish(ctx, ex, "k", []byte("alone")))
	assert.Equal(t, single+1, lone.single.Load(), "a lone publish is one command")
	assert.Equal(t, pipelines, lone.pipelines.Load(), "a lone publish is not a pipeline")

	// Two rounds; before the second, Redis forgets its scripts, as after
	// a restart, and the batches load the script again.
	const goroutines, each = 64, 10
	for round := range 2 {
		if round == 1 {
			rdb := srv.Client(0)
			require.NoError(t, rdb.ScriptFlush(ctx).Err())
			_ = rdb.Close()
		}
		var wg sync.WaitGroup
		for g := range goroutines {
			wg.Go(func() {
				for i := range each {
					assert.NoError(t, tr.Publish(ctx, ex, "k", fmt.Appendf(nil, "m%d.%d.%d", round, g, i)))
				}
			})
		}
		wg.Wait()
	}
	require.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(got) == 2*goroutines*each+2
	}, 10*time.Second, 10*time.Millisecond)
	mu.Lock()
	for m, n := range got {
		assert.Equal(t, 1, n, "message %s delivered %d times", m, n)
	}
	mu.Unlock()
	assert.Greater(t, h.largest.Load(), int64(1), "concurrent publishes shared a pipeline")
	t.Logf("%d publishes: %d commands alone, %d pipelines, the largest of %d commands",
		2*goroutines*each, h.single.Load(), h.pipelines.Load(), h.largest.Load())
}

// While Redis does not answer, publishes queued behind those in flight
// return at their own deadlines, and the transport works again after.
func TestCoalescedDeadlines(t *testing.T) {
	srv := redistest.Start(t)
	tr := open(t, srv, srv.URL(0), pidredis.Options{})
	ctx := context.Background()
	ex := transport.Exchange{Name: "paused.pidbox", Kind: transport.Fanout}
	require.NoError(t, tr.Publish(ctx, ex, "", []byte("warm")))

	rdb := srv.Client(0)
	defer rdb.Close()
	require.NoError(t, rdb.Do(ctx, "CLIENT", "PAUSE", 2000, "ALL").Err())
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Go(func() {
			d := time.Duration(100+10*i) * time.Millisecond
			pctx, cancel := context.WithTimeout(ctx, d)
			defer cancel()
			start := time.Now()
			err := tr.Publish(pctx, ex, "", []byte("m"))
			elapsed := time.Since(start)
			// The context's deadline, or the socket's i/o timeout that
			// go-redis sets from it, whichever fires first.
			var ne net.Error
			if !errors.Is(err, context.DeadlineExceeded) && !(errors.As(err, &ne) && ne.Timeout()) {
				t.Errorf("publish %d: want a deadline or a timeout, got %v", i, err)
			}
			assert.Less(t, elapsed, d+700*time.Millisecond, "publish %d returned long after its deadline", i)
		})
	}
	wg.Wait()
	require.NoError(t, rdb.Do(ctx, "CLIENT", "UNPAUSE").Err())
	require.Eventually(t, func() bool {
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		return tr.Publish(pctx, ex, "", []byte("after")) == nil
	}, 10*time.Second, 20*time.Millisecond)
}

// A batch that finds Redis without its scripts (a restart, SCRIPT FLUSH)
// loads them and sends what failed again; errors reach only their own
// publish.
func TestBatchReloadsScripts(t *testing.T) {
	srv := redistest.Start(t)
	tr := open(t, srv, srv.URL(0), pidredis.Options{})
	pidredis.SendAllBatched(tr)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ex := transport.Exchange{Name: "reload.pidbox", Kind: transport.Direct}
	got := make(chan string, 100)
	sub, err := tr.Subscribe(ctx, transport.Binding{Exchange: ex, RoutingKey: "k", Queue: "q"}, func(msg []byte) { got <- string(msg) })
	require.NoError(t, err)
	defer sub.Close()
	rdb := srv.Client(0)
	defer rdb.Close()
	for i := range 3 {
		require.NoError(t, rdb.ScriptFlush(ctx).Err())
		require.NoError(t, tr.Publish(ctx, ex, "k", fmt.Appendf(nil, "m%d", i)))
		select {
		case m := <-got:
			assert.Equal(t, fmt.Sprintf("m%d", i), m)
		case <-ctx.Done():
			t.Fatal("message not delivered")
		}
	}
	// An exchange of an unknown kind fails alone.
	err = tr.Publish(ctx, transport.Exchange{Name: "x", Kind: "bogus"}, "k", []byte("m"))
	assert.ErrorContains(t, err, "unknown kind")
}

// A node's replies to built-ins are queued (transport.Queuer): sent in
// batches, every concurrent caller still gets its own reply, for both
// kinds of exchange, and the node's statistics count each once.
func TestQueuedReplies(t *testing.T) {
	srv := redistest.Start(t)
	for _, kind := range []transport.Kind{transport.Fanout, transport.Direct} {
		t.Run(string(kind), func(t *testing.T) {
			v := variant{Kind: kind, Serializer: "json"}
			ntr := open(t, srv, srv.URL(0), pidredis.Options{})
			pidredis.SendAllBatched(ntr)
			node := goNode(t, ntr, v, "q@h")
			ctl := mailbox(t, open(t, srv, srv.URL(0), pidredis.Options{}), v)
			var wg sync.WaitGroup
			var ok atomic.Int64
			for range 32 {
				wg.Go(func() {
					for range 10 {
						if assert.NoError(t, ping(t, ctl, "q@h", 5*time.Second)) {
							ok.Add(1)
						}
					}
				})
			}
			wg.Wait()
			assert.Equal(t, int64(320), ok.Load())
			assert.Equal(t, uint64(320), node.Stats().Handlers["ping"].Calls)
		})
	}
}

// A broadcast with no limit lists the live nodes in its publish's round
// trip (transport.ListingPublisher): no command of its own for the lookup,
// every node's reply gathered, also after Redis lost its scripts.
func TestBroadcastListsInItsPublish(t *testing.T) {
	srv := redistest.Start(t)
	v := variant{Kind: transport.Fanout, Serializer: "json"}
	ntr := open(t, srv, srv.URL(0), pidredis.Options{})
	goNode(t, ntr, v, "l1@h")
	goNode(t, ntr, v, "l2@h")
	var h pipelineSizes
	ctl := mailbox(t, hooked(t, srv, &h), v)
	broadcast := func() {
		t.Helper()
		res, err := ctl.Call(context.Background(), "ping", nil, pidbox.Timeout(5*time.Second))
		require.NoError(t, err)
		assert.ElementsMatch(t, []string{"l1@h", "l2@h"}, names(res.Replies))
		assert.Equal(t, map[string]pidbox.Outcome{"l1@h": pidbox.Replied, "l2@h": pidbox.Replied}, res.Outcomes)
	}
	broadcast() // the first call lists with its reply binding
	single := h.single.Load()
	broadcast()
	assert.Equal(t, single, h.single.Load(), "the lookup went in the publish's pipeline")

	rdb := srv.Client(0)
	defer rdb.Close()
	require.NoError(t, rdb.ScriptFlush(context.Background()).Err())
	broadcast()
}

// PublishListing on a Redis without its scripts lists and publishes once:
// the publish that went out is not sent again with the listing.
func TestPublishListingAfterScriptFlush(t *testing.T) {
	srv := redistest.Start(t)
	tr := open(t, srv, srv.URL(0), pidredis.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rdb := srv.Client(0)
	defer rdb.Close()
	for _, ex := range []transport.Exchange{{Name: "flushf.pidbox", Kind: transport.Fanout}, {Name: "flushd.pidbox", Kind: transport.Direct}} {
		got := make(chan string, 10)
		sub, err := tr.Subscribe(ctx, transport.Binding{Exchange: ex, RoutingKey: "k", Queue: "q." + ex.Name}, func(m []byte) { got <- string(m) })
		require.NoError(t, err)
		require.NoError(t, rdb.ScriptFlush(ctx).Err())
		bs, err := tr.PublishListing(ctx, ex, "k", []byte("once"), nil, ex)
		require.NoError(t, err)
		require.Len(t, bs, 1, "%s: the listing", ex.Kind)
		assert.Equal(t, "q."+ex.Name, bs[0].Queue)
		assert.Equal(t, "once", <-got)
		select {
		case m := <-got:
			t.Errorf("%s: %q delivered again", ex.Kind, m)
		case <-time.After(300 * time.Millisecond):
		}
		require.NoError(t, sub.Close())
	}
}

// A reply queue is read by two blocking pops at once from its second
// batch of replies on, any other queue by one; every message arrives
// once, to one handler call at a time, and Close ends both pops at once
// rather than at their timeout.
func TestReplyQueueReaders(t *testing.T) {
	srv := redistest.Start(t)
	tr := open(t, srv, srv.URL(0), pidredis.Options{BlockTimeout: time.Minute})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rdb := srv.Client(0)
	defer rdb.Close()
	blocked := func() int { return blockedPops(ctx, t, rdb) }

	replyEx := transport.Exchange{Name: "reply.readers.pidbox", Kind: transport.Direct}
	var mu sync.Mutex
	got := map[string]int{}
	var inHandler, overlaps atomic.Int32
	sub, err := tr.Subscribe(ctx, transport.Binding{Exchange: replyEx, RoutingKey: "oid", Queue: "oid.reply.readers.pidbox"}, func(m []byte) {
		if inHandler.Add(1) > 1 {
			overlaps.Add(1)
		}
		defer inHandler.Add(-1)
		time.Sleep(10 * time.Microsecond) // widen the window two readers could share
		mu.Lock()
		got[string(m)]++
		mu.Unlock()
	})
	require.NoError(t, err)
	require.Eventually(t, func() bool { return blocked() == 1 }, 10*time.Second, 10*time.Millisecond, "one pop waits")
	require.NoError(t, tr.Publish(ctx, replyEx, "oid", []byte("first")))
	require.Eventually(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(got) == 1 }, 10*time.Second, time.Millisecond)
	time.Sleep(50 * time.Millisecond)
	assert.Equal(t, 1, blocked(), "one reply (a one-call process) starts no second reader")
	require.NoError(t, tr.Publish(ctx, replyEx, "oid", []byte("second")))
	require.Eventually(t, func() bool { return blocked() == 2 }, 10*time.Second, 10*time.Millisecond, "a second batch of replies starts the second reader")

	const n = 500
	var wg sync.WaitGroup
	for g := range 10 {
		wg.Go(func() {
			for i := range n / 10 {
				assert.NoError(t, tr.Publish(ctx, replyEx, "oid", fmt.Appendf(nil, "r%d.%d", g, i)))
			}
		})
	}
	wg.Wait()
	require.Eventually(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(got) == n+2 }, 10*time.Second, time.Millisecond)
	mu.Lock()
	for m, k := range got {
		assert.Equal(t, 1, k, "reply %s delivered %d times", m, k)
	}
	mu.Unlock()
	assert.Zero(t, overlaps.Load(), "the handler got one message at a time")

	closed := make(chan error, 1)
	go func() { closed <- sub.Close() }()
	select {
	case err := <-closed:
		require.NoError(t, err)
	case <-time.After(20 * time.Second):
		t.Fatal("Close waited for a pop's timeout (a minute): a reader was not woken")
	}
	assert.Equal(t, 0, blocked(), "no pop left waiting")

	other := transport.Exchange{Name: "readers.pidbox", Kind: transport.Direct}
	sub2, err := tr.Subscribe(ctx, transport.Binding{Exchange: other, RoutingKey: "k", Queue: "q.readers"}, func([]byte) {})
	require.NoError(t, err)
	require.Eventually(t, func() bool { return blocked() == 1 }, 10*time.Second, 10*time.Millisecond, "one pop waits on another queue")
	time.Sleep(50 * time.Millisecond)
	assert.Equal(t, 1, blocked(), "only one")
	require.NoError(t, sub2.Close())
}

// A reply goes straight to its caller's list, named by Kombu's convention,
// binding or not, and always with its TTL; a push Redis refuses inside its
// MULTI is the publish's error, alone or batched, and the key keeps its
// value.
func TestReplyPush(t *testing.T) {
	srv := redistest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rdb := srv.Client(0)
	defer rdb.Close()
	replyEx := transport.Exchange{Name: "reply.celery.pidbox", Kind: transport.Direct}
	const oid = "0b8e7f0c-5a2d-4c61-8f3e-3f6f9d1c2b7a"
	key := oid + ".reply.celery.pidbox"

	for _, batched := range []bool{false, true} {
		t.Run(fmt.Sprintf("batched=%v", batched), func(t *testing.T) {
			tr := open(t, srv, srv.URL(0), pidredis.Options{QueueTTL: time.Minute})
			if batched {
				pidredis.SendAllBatched(tr)
			}
			require.NoError(t, rdb.Del(ctx, key).Err())
			require.NoError(t, tr.Publish(ctx, replyEx, oid, []byte("r1")), "no binding needed")
			got, err := rdb.LRange(ctx, key, 0, -1).Result()
			require.NoError(t, err)
			assert.Equal(t, []string{"r1"}, got)
			ttl, err := rdb.PTTL(ctx, key).Result()
			require.NoError(t, err)
			assert.Greater(t, ttl, 50*time.Second, "the list has QueueTTL")
			assert.LessOrEqual(t, ttl, time.Minute)

			require.NoError(t, rdb.Del(ctx, key).Err())
			require.NoError(t, rdb.Set(ctx, key, "not a list", 0).Err())
			err = tr.Publish(ctx, replyEx, oid, []byte("r2"))
			require.Error(t, err)
			assert.Contains(t, err.Error(), "WRONGTYPE")
			v, err := rdb.Get(ctx, key).Result()
			require.NoError(t, err)
			assert.Equal(t, "not a list", v)
			require.NoError(t, rdb.Del(ctx, key).Err())
		})
	}
}

// A reply refused because the server turned replica (as a name that moved
// in a failover would show) drops the connection that met the refusal and
// is tried again on a new one, as go-redis does for a pipeline whose first
// reply is READONLY; once the server takes writes again, replies go out.
func TestReplyOnReadOnlyReplica(t *testing.T) {
	srv := redistest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	rdb := srv.Client(0)
	defer rdb.Close()
	tr := open(t, srv, srv.URL(0), pidredis.Options{})
	replyEx := transport.Exchange{Name: "reply.celery.pidbox", Kind: transport.Direct}
	const oid = "7d3f1a52-0c4e-4b8a-9e21-6a5b0c9d8e13"
	require.NoError(t, tr.Publish(ctx, replyEx, oid, []byte("before")))
	dials := func() int64 {
		info, err := rdb.Info(ctx, "stats").Result()
		require.NoError(t, err)
		for _, l := range strings.Split(info, "\n") {
			if v, ok := strings.CutPrefix(strings.TrimSpace(l), "total_connections_received:"); ok {
				var n int64
				_, err := fmt.Sscan(v, &n)
				require.NoError(t, err)
				return n
			}
		}
		t.Fatal("no total_connections_received in INFO stats")
		return 0
	}

	require.NoError(t, rdb.Do(ctx, "REPLICAOF", "127.0.0.1", "1").Err()) // a master that never answers
	defer rdb.Do(context.Background(), "REPLICAOF", "NO", "ONE")
	before := dials()
	err := tr.Publish(ctx, replyEx, oid, []byte("refused"))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "READONLY")
	assert.Greater(t, dials(), before, "the connection that met READONLY was dropped, the push tried again on a new one")

	require.NoError(t, rdb.Do(ctx, "REPLICAOF", "NO", "ONE").Err())
	require.NoError(t, tr.Publish(ctx, replyEx, oid, []byte("after")))
	got, err := rdb.LRange(ctx, oid+".reply.celery.pidbox", 0, -1).Result()
	require.NoError(t, err)
	assert.Equal(t, []string{"after", "before"}, got)
	require.NoError(t, rdb.Del(ctx, oid+".reply.celery.pidbox").Err())
}

// A transport starts at most 16 second readers, whatever its reply queues:
// their connections come on top of MaxQueues in its blocking pool.
func TestSecondReadersBounded(t *testing.T) {
	srv := redistest.Start(t)
	tr := open(t, srv, srv.URL(0), pidredis.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rdb := srv.Client(0)
	defer rdb.Close()
	blocked := func() int { return blockedPops(ctx, t, rdb) }
	replyEx := transport.Exchange{Name: "reply.bounded.pidbox", Kind: transport.Direct}
	const queues = 20
	var got atomic.Int32
	for i := range queues {
		oid := fmt.Sprintf("oid%02d", i)
		sub, err := tr.Subscribe(ctx, transport.Binding{Exchange: replyEx, RoutingKey: oid, Queue: oid + ".reply.bounded.pidbox"}, func([]byte) { got.Add(1) })
		require.NoError(t, err)
		defer sub.Close()
		for b := range 2 { // two batches: the second starts a second reader
			require.NoError(t, tr.Publish(ctx, replyEx, oid, fmt.Appendf(nil, "r%d", b)))
			want := int32(2*i + b + 1)
			require.Eventually(t, func() bool { return got.Load() == want }, 10*time.Second, time.Millisecond)
		}
	}
	require.Eventually(t, func() bool { return blocked() == queues+16 }, 10*time.Second, 10*time.Millisecond, "20 readers and 16 second ones")
	time.Sleep(50 * time.Millisecond)
	assert.Equal(t, queues+16, blocked())
}

// blockedPops counts the server's connections blocked in a BLMPOP.
func blockedPops(ctx context.Context, t *testing.T, rdb *goredis.Client) int {
	list, err := rdb.ClientList(ctx).Result()
	require.NoError(t, err)
	n := 0
	for _, l := range strings.Split(list, "\n") {
		if strings.Contains(l, "cmd=blmpop") && strings.Contains(l, "flags=b") {
			n++
		}
	}
	return n
}
