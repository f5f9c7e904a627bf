package redis_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gopidbox/pidbox"
	"github.com/gopidbox/pidbox/internal/redistest"
	"github.com/gopidbox/pidbox/internal/testlog"
	"github.com/gopidbox/pidbox/transport"
	pidredis "github.com/gopidbox/pidbox/transport/redis"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A binding that vanishes between two calls (kombu#1063: evicted, flushed,
// lost in a failover) costs no reply: the next call gets every reply its
// nodes send, because the caller declares its reply binding again in the
// same round trip as its request, and nodes theirs with their replies.
func TestLostBindingsCostNoReply(t *testing.T) {
	srv := redistest.Start(t)
	for _, kind := range []transport.Kind{transport.Fanout, transport.Direct} {
		t.Run(string(kind), func(t *testing.T) {
			ctx := context.Background()
			v := variant{Kind: kind, Serializer: "json"}
			ntr := open(t, srv, srv.URL(0), pidredis.Options{})
			goNode(t, ntr, v, "a@h")
			goNode(t, ntr, v, "b@h")
			ctl := mailbox(t, open(t, srv, srv.URL(0), pidredis.Options{}), v)
			rdb := srv.Client(0)
			defer rdb.Close()

			call := func(what string, opts ...pidbox.CallOption) {
				t.Helper()
				res, err := ctl.Call(ctx, "ping", nil, append(opts, pidbox.Timeout(3*time.Second))...)
				require.NoError(t, err, what)
				assert.ElementsMatch(t, []string{"a@h", "b@h"}, names(res.Replies), what)
			}
			call("before")
			require.NoError(t, rdb.Del(ctx, "_kombu.binding.reply.celery.pidbox").Err())
			call("reply binding deleted", pidbox.To("a@h", "b@h"))
			require.NoError(t, rdb.Del(ctx, "_kombu.binding.reply.celery.pidbox").Err())
			call("reply binding deleted, broadcast")
			if kind == transport.Fanout {
				// Fanout requests need no binding to reach a node: the whole
				// database can go, and the next call still gets every reply.
				require.NoError(t, rdb.FlushDB(ctx).Err())
				call("FLUSHDB, destinations", pidbox.To("a@h", "b@h"))
				require.NoError(t, rdb.FlushDB(ctx).Err())
				call("FLUSHDB, broadcast")
				// Nodes declare their own bindings again with a reply at
				// most once a second, well before their lease renewal.
				require.Eventually(t, func() bool {
					call("FLUSHDB, until the nodes are listed again")
					names, err := ctl.Nodes(ctx)
					return err == nil && len(names) == 2
				}, 3*time.Second, 100*time.Millisecond, "nodes declared their bindings again with their replies")
			}
		})
	}
}

// Under allkeys-lru with memory pressure, other keys are evicted around
// pidbox's; no call loses a reply, and the transport warns at start-up.
func TestEvictionPolicy(t *testing.T) {
	srv := redistest.Start(t)
	ctx := context.Background()
	rdb := srv.Client(0)
	defer rdb.Close()
	require.NoError(t, rdb.ConfigSet(ctx, "maxmemory-policy", "allkeys-lru").Err())
	used, err := rdb.Info(ctx, "memory").Result()
	require.NoError(t, err)
	var base int64
	for _, line := range strings.Split(used, "\r\n") {
		if v, ok := strings.CutPrefix(line, "used_memory:"); ok {
			_, _ = fmt.Sscan(v, &base)
		}
	}
	require.Positive(t, base)
	require.NoError(t, rdb.ConfigSet(ctx, "maxmemory", fmt.Sprint(base+4<<20)).Err())

	logs := &testlog.Buffer{}
	ctl := mailbox(t, open(t, srv, srv.URL(0), pidredis.Options{Logger: logs.Logger()}), variant{Kind: transport.Fanout, Serializer: "json"})
	assert.Empty(t, logs.String(), "Open makes no round trip: the first call checks")
	ntr := open(t, srv, srv.URL(0), pidredis.Options{})
	goNode(t, ntr, variant{Kind: transport.Fanout, Serializer: "json"}, "a@h")

	// Fill memory from the side while calls run.
	stop := make(chan struct{})
	var filled atomic.Int64
	var wg sync.WaitGroup
	wg.Go(func() {
		junk := strings.Repeat("x", 16<<10)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if rdb.Set(ctx, fmt.Sprintf("junk:%d", i), junk, 0).Err() == nil {
				filled.Add(1)
			}
		}
	})
	defer func() { close(stop); wg.Wait() }()
	for i := range 200 {
		res, err := ctl.Call(ctx, "ping", nil, pidbox.To("a@h"), pidbox.Timeout(3*time.Second))
		require.NoError(t, err, "call %d", i)
		require.Len(t, res.Replies, 1, "call %d", i)
		if i == 0 {
			assert.Contains(t, logs.String(), "maxmemory-policy=allkeys-lru", "a warning names the policy")
			assert.Contains(t, logs.String(), "noeviction", "and the fix")
		}
		if i%20 == 0 {
			res, err = ctl.Call(ctx, "ping", nil, pidbox.Timeout(3*time.Second))
			require.NoError(t, err, "broadcast %d", i)
			require.Len(t, res.Replies, 1, "broadcast %d", i)
		}
	}
	evicted, err := rdb.Info(ctx, "stats").Result()
	require.NoError(t, err)
	assert.NotContains(t, evicted, "evicted_keys:0\r\n", "the test put Redis under memory pressure")
	t.Logf("%d junk keys written", filled.Load())
	srv.AllowNoTTL("junk:")
}

// A Redis that accepts connections but does not answer (CLIENT PAUSE):
// calls return at their deadline with an error that says so, and nodes
// serve again once the pause ends.
func TestClientPause(t *testing.T) {
	srv := redistest.Start(t)
	ctx := context.Background()
	for _, kind := range []transport.Kind{transport.Fanout, transport.Direct} {
		t.Run(string(kind), func(t *testing.T) {
			v := variant{Kind: kind, Serializer: "json"}
			ntr := open(t, srv, srv.URL(0), pidredis.Options{HealthCheckInterval: time.Second})
			goNode(t, ntr, v, "a@h")
			ctl := mailbox(t, open(t, srv, srv.URL(0), pidredis.Options{}), v)
			require.NoError(t, ping(t, ctl, "a@h", 5*time.Second))

			rdb := srv.Client(0)
			defer rdb.Close()
			require.NoError(t, rdb.Do(ctx, "CLIENT", "PAUSE", 2500, "ALL").Err())
			for _, opts := range [][]pidbox.CallOption{{pidbox.To("a@h")}, nil} {
				start := time.Now()
				_, err := ctl.Call(ctx, "ping", nil, append(opts, pidbox.Timeout(400*time.Millisecond))...)
				elapsed := time.Since(start)
				require.ErrorIs(t, err, pidbox.ErrBrokerSilent)
				assert.ErrorContains(t, err, "the broker did not answer")
				assert.Less(t, elapsed, 1500*time.Millisecond, "returns at its deadline, not at the pause's end")
			}
			// A controller whose first call meets the pause (Open made no
			// round trip) dials, and is answered nothing: silent, not
			// unreachable.
			_, err := mailbox(t, open(t, srv, srv.URL(0), pidredis.Options{}), v).Call(ctx, "ping", nil, pidbox.Timeout(400*time.Millisecond))
			require.ErrorIs(t, err, pidbox.ErrBrokerSilent)
			assert.NotErrorIs(t, err, transport.ErrUnreachable)
			require.NoError(t, rdb.Do(ctx, "CLIENT", "UNPAUSE").Err())
			back := time.Now()
			require.Eventually(t, func() bool { return ping(t, ctl, "a@h", 300*time.Millisecond) == nil },
				10*time.Second, 10*time.Millisecond)
			t.Logf("%s: ping answered %s after the pause ended", kind, time.Since(back).Round(time.Millisecond))
		})
	}
}
