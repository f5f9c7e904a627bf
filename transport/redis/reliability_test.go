package redis_test

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gopidbox/pidbox"
	"github.com/gopidbox/pidbox/internal/redistest"
	"github.com/gopidbox/pidbox/internal/testlog"
	"github.com/gopidbox/pidbox/internal/wire"
	"github.com/gopidbox/pidbox/reply"
	"github.com/gopidbox/pidbox/transport"
	pidredis "github.com/gopidbox/pidbox/transport/redis"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// long turns on the full-size load and soak runs (1,000 broadcasts to
// 1,000 nodes; 100,000 calls over at least 60 s):
//
//	go test ./transport/redis -run 'Load|Soak' -pidbox.long -timeout 30m
var long = flag.Bool("pidbox.long", false, "run the full-size load and soak tests")

// outage checks the promises that hold while Redis is unavailable and
// after it returns: calls fail or time out within their deadline, and
// nodes are reachable again within 3 s of Redis answering.
func outage(t *testing.T, srv *redistest.Server, down, up func()) {
	for _, kind := range []transport.Kind{transport.Fanout, transport.Direct} {
		t.Run(string(kind), func(t *testing.T) {
			v := variant{Kind: kind, Serializer: "json"}
			ntr := open(t, srv, srv.URL(0), pidredis.Options{HealthCheckInterval: time.Second})
			goNode(t, ntr, v, "n1@h")
			ctl := mailbox(t, open(t, srv, srv.URL(0), pidredis.Options{}), v)
			require.NoError(t, ping(t, ctl, "n1@h", 5*time.Second))

			down()
			for range 3 {
				start := time.Now()
				rs, err := replies(ctl.Call(context.Background(), "ping", nil, pidbox.To("n1@h"), pidbox.Timeout(500*time.Millisecond)))
				elapsed := time.Since(start)
				assert.Empty(t, rs)
				assert.Less(t, elapsed, 2*time.Second, "a call during the outage overran its deadline (err %v)", err)
				if err != nil {
					assert.Contains(t, err.Error(), srv.Addr(), "the error names the server")
				}
			}
			up()
			back := time.Now()
			require.Eventually(t, func() bool { return ping(t, ctl, "n1@h", 300*time.Millisecond) == nil },
				10*time.Second, 10*time.Millisecond)
			t.Logf("%s: ping answered %s after Redis came back", kind, time.Since(back).Round(time.Millisecond))
			assert.Less(t, time.Since(back), 3*time.Second)
			names, err := ctl.Nodes(context.Background())
			require.NoError(t, err)
			assert.Contains(t, names, "n1@h", "binding declared again")
		})
	}
}

// SIGKILL loses the server's data (the tests run it without persistence),
// so this is also the restart-with-data-lost case: nodes must declare
// their bindings again by themselves.
func TestRedisKilledAndRestarted(t *testing.T) {
	srv := redistest.Start(t)
	outage(t, srv, srv.Kill, srv.Start)
}

func TestRedisFrozenAndResumed(t *testing.T) {
	srv := redistest.Start(t)
	outage(t, srv, srv.Freeze, srv.Thaw)
}

// Two live nodes with one name: the node logs a warning, and a caller sees
// the second reply flagged as a duplicate.
func TestDuplicateNames(t *testing.T) {
	srv := redistest.Start(t)
	v := variant{Kind: transport.Fanout, Serializer: "json"}
	var logs testlog.Buffer
	opts := pidredis.Options{LeaseTTL: 600 * time.Millisecond, Logger: logs.Logger()}
	goNode(t, open(t, srv, srv.URL(0), opts), v, "twin@h")
	goNode(t, open(t, srv, srv.URL(0), opts), v, "twin@h")
	require.Eventually(t, func() bool { return strings.Contains(logs.String(), "another live node uses the same name") },
		10*time.Second, 20*time.Millisecond)

	ctl := mailbox(t, open(t, srv, srv.URL(0), pidredis.Options{}), v)
	rs, err := replies(ctl.Call(context.Background(), "ping", nil, pidbox.Limit(2), pidbox.Timeout(5*time.Second)))
	require.NoError(t, err)
	require.Len(t, rs, 2)
	assert.Equal(t, "twin@h", rs[0].Node)
	assert.Equal(t, "twin@h", rs[1].Node)
	assert.False(t, rs[0].Duplicate)
	assert.True(t, rs[1].Duplicate)
}

// A restarted node that reuses a dead predecessor's name is not a
// duplicate.
func TestReusedNameIsNoDuplicate(t *testing.T) {
	srv := redistest.Start(t)
	v := variant{Kind: transport.Fanout, Serializer: "json"}
	var logs testlog.Buffer
	opts := pidredis.Options{LeaseTTL: 600 * time.Millisecond, Logger: logs.Logger()}
	// A predecessor died without unbinding: its owner record stays behind
	// until it expires.
	raw := srv.Client(0)
	require.NoError(t, raw.Set(context.Background(), "_pidbox.owner.phoenix@h.celery.pidbox", "dead-instance", 10*time.Second).Err())
	goNode(t, open(t, srv, srv.URL(0), opts), v, "phoenix@h")
	time.Sleep(time.Second)
	assert.NotContains(t, logs.String(), "another live node")
}

// Many controllers at once: every reply reaches the caller that asked.
func TestConcurrentControllers(t *testing.T) {
	srv := redistest.Start(t)
	v := variant{Kind: transport.Fanout, Serializer: "json"}
	ntr := open(t, srv, srv.URL(0), pidredis.Options{})
	nodes := []string{"a@h", "b@h", "c@h", "d@h", "e@h"}
	for _, n := range nodes {
		goNode(t, ntr, v, n)
	}
	const controllers, calls = 20, 25
	var wg sync.WaitGroup
	var wrong, missing atomic.Int64
	for c := range controllers {
		ctl := mailbox(t, open(t, srv, srv.URL(0), pidredis.Options{}), v)
		wg.Go(func() {
			for i := range calls {
				token := echoArgs{A: c*1000 + i, B: fmt.Sprintf("ctl%d", c)}
				rs, err := replies(ctl.Call(context.Background(), "echo", token, pidbox.Timeout(10*time.Second)))
				if !assert.NoError(t, err) {
					return
				}
				if len(rs) != len(nodes) {
					missing.Add(1)
				}
				for _, r := range rs {
					got, err := reply.As[echoArgs](r)
					if err != nil || got != token {
						wrong.Add(1)
					}
				}
			}
		})
	}
	wg.Wait()
	assert.Zero(t, wrong.Load(), "replies delivered to the wrong caller")
	assert.Zero(t, missing.Load(), "calls missing replies")
}

// 1,000 nodes in one process, each with its own subscription; every
// broadcast gathers every reply.
func TestLoadThousandNodes(t *testing.T) {
	srv := redistest.Start(t)
	v := variant{Kind: transport.Fanout, Serializer: "json"}
	ntr := open(t, srv, srv.URL(0), pidredis.Options{})
	const n = 1000
	broadcasts := 10
	if *long {
		broadcasts = 1000
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	for i := range n {
		wg.Go(func() {
			mb, err := pidbox.New(ntr, pidbox.Options{Logger: quiet})
			if !assert.NoError(t, err) {
				return
			}
			node := mb.NewNode(fmt.Sprintf("n%04d@load", i), pidbox.NodeOptions{})
			mu.Lock()
			defer mu.Unlock()
			serve(t, node)
		})
	}
	wg.Wait()
	ctl := mailbox(t, open(t, srv, srv.URL(0), pidredis.Options{}), v)
	names, err := ctl.Nodes(context.Background())
	require.NoError(t, err)
	require.Len(t, names, n)
	start := time.Now()
	for b := range broadcasts {
		rs, err := replies(ctl.Call(context.Background(), "ping", nil, pidbox.Timeout(30*time.Second)))
		require.NoError(t, err)
		seen := map[string]bool{}
		for _, r := range rs {
			seen[r.Node] = true
		}
		require.Len(t, seen, n, "broadcast %d gathered %d of %d nodes", b, len(seen), n)
	}
	t.Logf("%d broadcasts to %d nodes: %s each", broadcasts, n, (time.Since(start) / time.Duration(broadcasts)).Round(time.Millisecond))
}

// Hostile messages and a flood of unknown methods, published into a live
// node: it keeps serving, loses none of the good commands sent among them,
// and its memory returns to where it was.
func TestHostileFlood(t *testing.T) {
	srv := redistest.Start(t)
	raw := srv.Client(0)
	ctx := context.Background()
	const flood = 100_000
	for _, kind := range []transport.Kind{transport.Fanout, transport.Direct} {
		t.Run(string(kind), func(t *testing.T) {
			tr := open(t, srv, srv.URL(0), pidredis.Options{})
			mb, err := pidbox.New(tr, pidbox.Options{Type: kind, Logger: quiet, MaxMessageSize: 1 << 20})
			require.NoError(t, err)
			t.Cleanup(func() { _ = mb.Close() })
			n := mb.NewNode("target@h", pidbox.NodeOptions{})
			var got sync.Map
			n.Register("note", pidbox.Typed(func(_ context.Context, a struct {
				Token string `json:"token"`
			}) (any, error) {
				got.Store(a.Token, true)
				return nil, nil
			}))
			serve(t, n)
			ctl := mailbox(t, open(t, srv, srv.URL(0), pidredis.Options{}), variant{Kind: kind, Serializer: "json"})

			inject := func(pipe func(msg []byte), msg []byte) { pipe(msg) }
			push := func(msg []byte) {
				if kind == transport.Fanout {
					require.NoError(t, raw.Publish(ctx, "/0.celery.pidbox", msg).Err())
				} else {
					require.NoError(t, raw.LPush(ctx, "target@h.celery.pidbox", msg).Err())
				}
			}
			env := func(ct string, body string) []byte {
				return wire.Encode(&wire.Envelope{Body: []byte(body), ContentType: ct})
			}
			var sent []string
			good := func() {
				token := fmt.Sprint(len(sent))
				sent = append(sent, token)
				require.NoError(t, ctl.Cast(ctx, "note", map[string]string{"token": token}))
			}
			runtime.GC()
			var before runtime.MemStats
			runtime.ReadMemStats(&before)

			for _, m := range [][]byte{
				[]byte("not json"),
				[]byte(`{"body": 42}`),
				[]byte(`{"body": "***", "properties": {"body_encoding": "base64"}}`),
				env("application/x-yaml", `method: ping`),
				env("application/json", `{"method": "note", "arguments": {"token": ["not", "a", "string"]}}`),
				env("application/json", `{"method": "note", "arguments": "not a map"}`),
				env("application/json", `{"method": "note", "destination": "target@h"}`),
				env("application/json", `[1, 2, 3]`),
			} {
				inject(push, m)
				good()
			}

			unknown := env("application/json", `{"method": "no_such_method", "arguments": {}}`)
			pipe := raw.Pipeline()
			queued := 0
			for i := range flood {
				if kind == transport.Fanout {
					pipe.Publish(ctx, "/0.celery.pidbox", unknown)
				} else {
					pipe.LPush(ctx, "target@h.celery.pidbox", unknown)
				}
				queued++
				if queued == 1000 || i == flood-1 {
					_, err := pipe.Exec(ctx)
					require.NoError(t, err)
					queued = 0
					// Pace pub/sub so Redis's output buffer for the node stays
					// under its limit; a list has no such limit.
					if kind == transport.Fanout {
						require.Eventually(t, func() bool { return n.Stats().Received+5000 >= uint64(i) }, 30*time.Second, time.Millisecond)
					}
				}
				if i%5000 == 0 {
					good()
				}
			}
			// 100 MB: over the node's 1 MiB limit. On pub/sub Redis cuts the
			// subscriber off first (client-output-buffer-limit); the node
			// re-subscribes.
			inject(push, env("application/json", strings.Repeat("x", 100<<20)))
			require.Eventually(t, func() bool { return ping(t, ctl, "target@h", 500*time.Millisecond) == nil }, 30*time.Second, 10*time.Millisecond)
			good()

			require.Eventually(t, func() bool {
				for _, tok := range sent {
					if _, ok := got.Load(tok); !ok {
						return false
					}
				}
				return true
			}, 30*time.Second, 10*time.Millisecond, "good commands lost among the hostile ones")
			require.NoError(t, ping(t, ctl, "target@h", 5*time.Second))

			runtime.GC()
			var after runtime.MemStats
			runtime.ReadMemStats(&after)
			growth := int64(after.HeapAlloc) - int64(before.HeapAlloc)
			t.Logf("%s: heap %d KiB before, %d KiB after; %d dropped, %d rejected", kind, before.HeapAlloc>>10, after.HeapAlloc>>10, n.Stats().Dropped, n.Stats().Rejected)
			assert.Less(t, growth, int64(16<<20), "heap grew by %d bytes", growth)
		})
	}
}

// Many calls, some timing out so their replies arrive late: afterwards the
// heap and the goroutine count are back at their baseline, and the kept
// replies stay within their bound.
func TestSoak(t *testing.T) {
	srv := redistest.Start(t)
	v := variant{Kind: transport.Fanout, Serializer: "json"}
	ntr := open(t, srv, srv.URL(0), pidredis.Options{})
	for _, name := range []string{"s1@h", "s2@h"} {
		n := mailbox(t, ntr, v).NewNode(name, pidbox.NodeOptions{Concurrency: 64})
		n.RegisterFunc("maybe_slow", func(ctx context.Context, r *pidbox.Request) (any, error) {
			var a struct {
				Slow bool `json:"slow"`
			}
			if err := r.Decode(&a); err != nil {
				return nil, err
			}
			if a.Slow {
				time.Sleep(60 * time.Millisecond)
			}
			return "done", nil
		})
		serve(t, n)
	}
	ctl, err := pidbox.New(open(t, srv, srv.URL(0), pidredis.Options{}), pidbox.Options{Logger: quiet, MaxUnclaimed: 500})
	require.NoError(t, err)
	t.Cleanup(func() { _ = ctl.Close() })

	calls, duration := 5_000, 5*time.Second
	if *long {
		calls, duration = 100_000, 60*time.Second
	}
	run := func(n int) (timedOut int64) {
		var wg sync.WaitGroup
		var next, late atomic.Int64
		pace := duration / time.Duration(n) * 8
		for range 8 {
			wg.Go(func() {
				for i := next.Add(1); i <= int64(n); i = next.Add(1) {
					start := time.Now()
					slow := i%10 == 0
					rs, err := replies(ctl.Call(context.Background(), "maybe_slow", map[string]bool{"slow": slow},
						pidbox.To("s1@h", "s2@h"), pidbox.Timeout(30*time.Millisecond)))
					var ne net.Error
					if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, pidbox.ErrIncomplete) ||
						(errors.As(err, &ne) && ne.Timeout()) {
						// timed out, before it was even sent (the deadline can
						// also end the socket write: "i/o timeout") or with a
						// node missing: a late call
						err = nil
					}
					if !assert.NoError(t, err) {
						return
					}
					if len(rs) < 2 {
						late.Add(1)
					}
					if d := pace - time.Since(start); d > 0 {
						time.Sleep(d)
					}
				}
			})
		}
		wg.Wait()
		return late.Load()
	}
	settle := func() (heap uint64, goroutines int) {
		time.Sleep(200 * time.Millisecond) // late replies land
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc, runtime.NumGoroutine()
	}
	run(calls / 10) // warm up pools, scripts and the unclaimed store
	heap0, g0 := settle()
	start := time.Now()
	timedOut := run(calls)
	heap1, g1 := settle()
	t.Logf("%d calls in %s, %d timed out; heap %d -> %d KiB, goroutines %d -> %d, unclaimed %d",
		calls, time.Since(start).Round(time.Millisecond), timedOut, heap0>>10, heap1>>10, g0, g1, ctl.ReplyStats().Kept-ctl.ReplyStats().Evicted)
	assert.Positive(t, timedOut, "some calls must time out for the soak to mean anything")
	assert.LessOrEqual(t, g1, g0+2, "goroutines leaked")
	assert.Less(t, float64(heap1), float64(heap0)*1.10+float64(1<<20), "heap did not return to its baseline")
}
