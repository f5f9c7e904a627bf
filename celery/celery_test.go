package celery_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"os/exec"
	"sync"
	"testing"
	"time"

	"github.com/gopidbox/pidbox"
	"github.com/gopidbox/pidbox/celery"
	"github.com/gopidbox/pidbox/reply"
	"github.com/gopidbox/pidbox/transport/memory"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var quiet = slog.New(slog.DiscardHandler)

const node = "go@test"

// serve registers the vocabulary on a node of a fresh in-memory broker and
// returns a mailbox that calls it, with the given serializer.
func serve(t *testing.T, serializer string, opts celery.Options) (*pidbox.Mailbox, *celery.State, *pidbox.Node) {
	t.Helper()
	br := memory.New(memory.Options{Logger: quiet})
	t.Cleanup(func() { _ = br.Close() })
	nb, err := pidbox.New(br, pidbox.Options{Serializer: serializer, Logger: quiet})
	require.NoError(t, err)
	n := nb.NewNode(node, pidbox.NodeOptions{})
	if opts.Logger == nil {
		opts.Logger = quiet
	}
	st := celery.Register(n, opts)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = n.Serve(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done; _ = nb.Close() })
	<-n.Ready()
	mb, err := pidbox.New(br, pidbox.Options{Serializer: serializer, Logger: quiet})
	require.NoError(t, err)
	t.Cleanup(func() { _ = mb.Close() })
	return mb, st, n
}

func call(t *testing.T, mb *pidbox.Mailbox, method string, args any) reply.Reply {
	t.Helper()
	res, err := mb.Call(context.Background(), method, args, pidbox.To(node), pidbox.Timeout(2*time.Second))
	require.NoError(t, err)
	require.Len(t, res.Replies, 1, "%s: one reply", method)
	return res.Replies[0]
}

// value decodes a reply into generic JSON-like values.
func value(t *testing.T, r reply.Reply) any {
	t.Helper()
	var v any
	require.NoError(t, r.Decode(&v))
	b, err := json.Marshal(v)
	require.NoError(t, err)
	var out any
	require.NoError(t, json.Unmarshal(b, &out))
	return out
}

func okText(t *testing.T, r reply.Reply) string {
	t.Helper()
	require.NoError(t, r.Err)
	v, err := reply.As[map[string]string](r)
	require.NoError(t, err)
	return v["ok"]
}

func remoteError(t *testing.T, r reply.Reply) string {
	t.Helper()
	var re *reply.RemoteError
	require.True(t, errors.As(r.Err, &re), "an error reply, got %s", r.Value)
	return re.Message
}

type runner struct {
	mu        sync.Mutex
	revoked   []celery.Revocation
	rates     map[string]string
	limits    map[string][2]float64
	pool      int
	queues    []string
	heartbeat int
	task      bool
}

func (r *runner) Active() []celery.Request {
	pid := 7
	return []celery.Request{{ID: "a1", Name: "tasks.add", Args: []any{1, 2}, Kwargs: map[string]any{}, Hostname: node, WorkerPID: &pid}}
}
func (r *runner) Reserved() []celery.Request {
	return []celery.Request{{ID: "r1", Name: "tasks.add", Args: []any{}, Kwargs: map[string]any{}}}
}
func (r *runner) Scheduled() []celery.Scheduled {
	eta := "2030-01-01T00:00:00+00:00"
	return []celery.Scheduled{{ETA: &eta, Priority: 6, Request: celery.Request{ID: "s1", Name: "tasks.mul", Args: []any{}, Kwargs: map[string]any{}}}}
}
func (r *runner) Grow(_ context.Context, n int) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.pool += n
	return nil
}
func (r *runner) Shrink(_ context.Context, n int) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if n > r.pool {
		return errors.New("pool too small")
	}
	r.pool -= n
	return nil
}
func (r *runner) AddConsumer(_ context.Context, q celery.Queue) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.queues = append(r.queues, q.Name)
	return nil
}
func (r *runner) CancelConsumer(_ context.Context, q string) error { return nil }
func (r *runner) EnableTaskEvents() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	was := r.task
	r.task = true
	return !was
}
func (r *runner) DisableTaskEvents() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	was := r.task
	r.task = false
	return was
}
func (r *runner) Heartbeat(context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.heartbeat++
	return nil
}

func full(r *runner) celery.Options {
	return celery.Options{
		Broker:      celery.BrokerFromURL("redis://:secret@127.0.0.1:6390/2"),
		Concurrency: func() int { return 4 },
		Settings: map[string]any{
			"broker_url": "redis://:secret@127.0.0.1:6390/2",
			"api_token":  "t0ken",
			"region":     "eu",
			"nested":     map[string]any{"db_password": "x", "size": 3},
		},
		Tasks: func() []celery.Task {
			return []celery.Task{{Name: "tasks.mul"}, {Name: "tasks.add", RateLimit: "5/s"}}
		},
		Requests: r,
		Totals:   func() map[string]int64 { return map[string]int64{"tasks.add": 3} },
		Revoke: func(_ context.Context, rv celery.Revocation) ([]string, error) {
			r.mu.Lock()
			defer r.mu.Unlock()
			r.revoked = append(r.revoked, rv)
			if rv.Terminate {
				return rv.IDs[:1], nil
			}
			return nil, nil
		},
		RateLimit: func(_ context.Context, task, rate string) error {
			r.mu.Lock()
			defer r.mu.Unlock()
			r.rates[task] = rate
			return nil
		},
		TimeLimit: func(_ context.Context, task string, soft, hard float64) error {
			r.mu.Lock()
			defer r.mu.Unlock()
			r.limits[task] = [2]float64{soft, hard}
			return nil
		},
		Pool: r,
		Autoscale: func(_ context.Context, max, min *int) (int, int, error) {
			return *max, *min, nil
		},
		Consumers: r,
		Events:    r,
	}
}

func TestEveryCommandIsServed(t *testing.T) {
	mb, _, n := serve(t, "json", celery.Options{})
	methods := n.Methods()
	for _, c := range celery.Commands() {
		assert.Contains(t, methods, c.Name)
		if c.Alias != "" {
			assert.Contains(t, methods, c.Alias)
		}
	}
	// Nothing answers "unknown method".
	for _, c := range celery.Commands() {
		if c.Name == "shutdown" || c.Name == "hello" {
			continue
		}
		res, err := mb.Call(context.Background(), c.Name, nil, pidbox.To(node), pidbox.Timeout(2*time.Second))
		require.NoError(t, err)
		require.Len(t, res.Replies, 1, c.Name)
		if err := res.Replies[0].Err; err != nil {
			assert.NotContains(t, err.Error(), "unknown method", c.Name)
		}
	}
}

func TestInspectWithoutHooks(t *testing.T) {
	mb, _, _ := serve(t, "json", celery.Options{})
	for _, m := range []string{"active", "reserved", "scheduled", "revoked", "registered", "active_queues"} {
		assert.Equal(t, []any{}, value(t, call(t, mb, m, nil)), m)
	}
	assert.Equal(t, map[string]any{}, value(t, call(t, mb, "query_task", map[string]any{"ids": []string{"x"}})))
	assert.Equal(t, "pong", okText(t, call(t, mb, "ping", nil)))
	assert.Nil(t, value(t, call(t, mb, "election", map[string]any{"id": "1", "topic": "t"})))
	assert.Equal(t, `TypeError("election() missing 2 required positional arguments: 'id' and 'topic'")`, remoteError(t, call(t, mb, "election", nil)))
	assert.Nil(t, value(t, call(t, mb, "heartbeat", nil)))

	assert.Equal(t, "unknown task", value(t, call(t, mb, "rate_limit", map[string]any{"task_name": "tasks.add", "rate_limit": "10/m"})).(map[string]any)["error"])
	assert.Equal(t, "unknown task", value(t, call(t, mb, "time_limit", map[string]any{"task_name": "tasks.add", "soft": 10.0})).(map[string]any)["error"])
	assert.Equal(t, "ValueError('Autoscale not enabled')", remoteError(t, call(t, mb, "autoscale", map[string]any{"max": 4, "min": 2})))
	for _, m := range []string{"pool_grow", "pool_shrink", "add_consumer", "cancel_consumer", "objgraph", "pool_restart"} {
		msg := remoteError(t, call(t, mb, m, map[string]any{"n": 1, "queue": "q"}))
		assert.Contains(t, msg, "not supported by this worker", m)
		assert.Contains(t, msg, m, m)
	}
	assert.Equal(t, "terminate: tasks unknown", okText(t, call(t, mb, "terminate", map[string]any{"signal": "SIGKILL", "task_id": []string{"x"}})))
	assert.Equal(t, "task events enabled", okText(t, call(t, mb, "enable_events", nil)))
	assert.Equal(t, "task events already enabled", okText(t, call(t, mb, "enable_events", nil)))
	assert.Equal(t, "task events disabled", okText(t, call(t, mb, "disable_events", nil)))
	assert.Equal(t, "task events already disabled", okText(t, call(t, mb, "disable_events", nil)))
}

func TestStatsShape(t *testing.T) {
	for _, ser := range []string{"json", "msgpack"} {
		mb, _, _ := serve(t, ser, full(&runner{}))
		st := value(t, call(t, mb, "stats", nil)).(map[string]any)
		for _, k := range []string{"total", "pid", "clock", "uptime", "pool", "broker", "prefetch_count", "rusage"} {
			assert.Contains(t, st, k, ser)
		}
		assert.IsType(t, "", st["clock"], "Celery sends str(clock)")
		assert.Equal(t, map[string]any{"tasks.add": 3.0}, st["total"])
		pool := st["pool"].(map[string]any)
		assert.Equal(t, 4.0, pool["max-concurrency"])
		assert.Len(t, pool["processes"], 1)
		br := st["broker"].(map[string]any)
		assert.Equal(t, "127.0.0.1", br["hostname"])
		assert.Equal(t, 6390.0, br["port"])
		assert.Equal(t, "redis", br["transport"])
		assert.Equal(t, "2", br["virtual_host"])
		ru := st["rusage"].(map[string]any)
		assert.Greater(t, ru["maxrss"], 0.0)
		assert.Greater(t, ru["utime"].(float64)+ru["stime"].(float64), 0.0)
	}
}

func TestRunnerHooks(t *testing.T) {
	r := &runner{rates: map[string]string{}, limits: map[string][2]float64{}}
	mb, st, _ := serve(t, "json", full(r))

	// Arguments exactly as `celery control ...` sends them.
	assert.Equal(t, "new rate limit set successfully", okText(t, call(t, mb, "rate_limit", map[string]any{"task_name": "tasks.add", "rate_limit": "10/m"})))
	assert.Equal(t, "10/m", r.rates["tasks.add"])
	assert.Equal(t, "10/m", st.RateLimit("tasks.add"))
	assert.Equal(t, "rate limit disabled successfully", okText(t, call(t, mb, "rate_limit", map[string]any{"task_name": "tasks.mul", "rate_limit": ""})))
	bad := value(t, call(t, mb, "rate_limit", map[string]any{"task_name": "tasks.add", "rate_limit": "xx"})).(map[string]any)
	assert.Equal(t, `Invalid rate limit string: ValueError("could not convert string to float: 'xx'")`, bad["error"])
	assert.Equal(t, "KeyError('d')", remoteError(t, call(t, mb, "rate_limit", map[string]any{"task_name": "tasks.add", "rate_limit": "1/d"})))

	assert.Equal(t, "time limits set successfully", okText(t, call(t, mb, "time_limit", map[string]any{"task_name": "tasks.add", "soft": 10.0, "hard": 20.0})))
	assert.Equal(t, [2]float64{10, 20}, r.limits["tasks.add"])

	assert.Equal(t, []any{"tasks.add [rate_limit=10/m]", "tasks.mul"}, value(t, call(t, mb, "registered", nil)))
	assert.Equal(t, []any{"tasks.add [rate_limit=10/m time_limit=20.0]", "tasks.mul"},
		value(t, call(t, mb, "registered", map[string]any{"taskinfoitems": []string{"rate_limit", "time_limit"}})))

	assert.Equal(t, "tasks a, b flagged as revoked", okText(t, call(t, mb, "revoke", map[string]any{"task_id": []string{"b", "a"}})))
	assert.Equal(t, "tasks c flagged as revoked", okText(t, call(t, mb, "revoke", map[string]any{"task_id": "c", "terminate": false, "signal": "SIGTERM"})))
	assert.Equal(t, "terminate: d", okText(t, call(t, mb, "terminate", map[string]any{"signal": "KILL", "task_id": []string{"d"}})))
	assert.Equal(t, []any{"a", "b", "c", "d"}, value(t, call(t, mb, "revoked", nil)))
	assert.True(t, st.IsRevoked("a"))
	assert.False(t, st.IsRevoked("zz"))
	require.Len(t, r.revoked, 3)
	assert.Equal(t, celery.Revocation{IDs: []string{"d"}, Terminate: true, Signal: "SIGKILL"}, r.revoked[2])

	act := value(t, call(t, mb, "active", nil)).([]any)
	require.Len(t, act, 1)
	assert.Equal(t, "a1", act[0].(map[string]any)["id"])
	for _, k := range []string{"id", "name", "args", "kwargs", "type", "hostname", "time_start", "acknowledged", "delivery_info", "worker_pid"} {
		assert.Contains(t, act[0], k)
	}
	sched := value(t, call(t, mb, "scheduled", nil)).([]any)
	assert.Equal(t, 6.0, sched[0].(map[string]any)["priority"])
	qt := value(t, call(t, mb, "query_task", map[string]any{"ids": []string{"a1", "r1", "s1", "nope"}})).(map[string]any)
	assert.Len(t, qt, 3)
	assert.Equal(t, "active", qt["a1"].([]any)[0])
	assert.Equal(t, "reserved", qt["r1"].([]any)[0])

	assert.Equal(t, "pool will grow", okText(t, call(t, mb, "pool_grow", map[string]any{"n": 2})))
	assert.Equal(t, "pool will shrink", okText(t, call(t, mb, "pool_shrink", nil)))
	assert.Equal(t, 1, r.pool)
	assert.Equal(t, "pool too small", remoteError(t, call(t, mb, "pool_shrink", map[string]any{"n": 5})))
	assert.Equal(t, "autoscale now max=8 min=2", okText(t, call(t, mb, "autoscale", map[string]any{"max": 8, "min": 2})))

	assert.Equal(t, "add consumer q1", okText(t, call(t, mb, "add_consumer", map[string]any{"queue": "q1"})))
	aq := value(t, call(t, mb, "active_queues", nil)).([]any)
	require.Len(t, aq, 1)
	assert.Equal(t, "q1", aq[0].(map[string]any)["name"])
	assert.Equal(t, "direct", aq[0].(map[string]any)["exchange"].(map[string]any)["type"])
	assert.Equal(t, "no longer consuming from q1", okText(t, call(t, mb, "cancel_consumer", map[string]any{"queue": "q1"})))
	assert.Equal(t, []any{}, value(t, call(t, mb, "active_queues", nil)))

	assert.Equal(t, "task events enabled", okText(t, call(t, mb, "enable_events", nil)))
	assert.True(t, r.task)
	call(t, mb, "heartbeat", nil)
	assert.Equal(t, 1, r.heartbeat)
}

func TestConfAndReportRedact(t *testing.T) {
	mb, _, _ := serve(t, "json", full(&runner{}))
	conf := value(t, call(t, mb, "conf", map[string]any{"with_defaults": true})).(map[string]any)
	assert.Equal(t, "redis://:********@127.0.0.1:6390/2", conf["broker_url"])
	assert.Equal(t, "********", conf["api_token"])
	assert.Equal(t, "eu", conf["region"])
	assert.Equal(t, map[string]any{"db_password": "********", "size": 3.0}, conf["nested"])
	rep := okText(t, call(t, mb, "report", nil))
	assert.Contains(t, rep, "software -> ")
	assert.Contains(t, rep, "region: 'eu'")
	assert.NotContains(t, rep, "secret")
	assert.NotContains(t, rep, "t0ken")
	// The alias answers too.
	assert.Equal(t, conf, value(t, call(t, mb, "dump_conf", nil)))
}

func TestHelloSharesRevoked(t *testing.T) {
	mb, st, _ := serve(t, "json", celery.Options{})
	// Celery's mingle sends LimitedSet._data: id -> [timestamp, id].
	v := value(t, call(t, mb, "hello", map[string]any{"from_node": "other@x", "revoked": map[string]any{"t1": []any{12.5, "t1"}}})).(map[string]any)
	assert.Contains(t, v, "clock")
	rv := v["revoked"].(map[string]any)
	assert.Len(t, rv, 1)
	assert.Equal(t, "t1", rv["t1"].([]any)[1])
	assert.True(t, st.IsRevoked("t1"))
	// No reply to itself.
	res, err := mb.Call(context.Background(), "hello", map[string]any{"from_node": node}, pidbox.To(node), pidbox.Timeout(300*time.Millisecond))
	require.ErrorIs(t, err, pidbox.ErrIncomplete)
	assert.Empty(t, res.Replies)
}

func TestMemsampleAndMemdump(t *testing.T) {
	mb, _, _ := serve(t, "json", celery.Options{})
	s, err := reply.As[string](call(t, mb, "memsample", nil))
	require.NoError(t, err)
	assert.Regexp(t, `^[0-9.]+(b|KB|MB|GB)$`, s)
	d, err := reply.As[string](call(t, mb, "memdump", map[string]any{"samples": 10}))
	require.NoError(t, err)
	assert.Contains(t, d, "- rss (sample):\n-    > "+s+",\n")
	assert.Regexp(t, `- rss \(end\): [0-9.]+(b|KB|MB|GB)\.\n$`, d)
}

func TestShutdown(t *testing.T) {
	stopped := make(chan string, 1)
	mb, _, _ := serve(t, "json", celery.Options{Shutdown: func(msg string) { stopped <- msg }})
	require.NoError(t, mb.Cast(context.Background(), "shutdown", nil, pidbox.To(node)))
	select {
	case msg := <-stopped:
		assert.Equal(t, "Got shutdown from remote", msg)
	case <-time.After(5 * time.Second):
		t.Fatal("no shutdown")
	}
}

func TestBadArguments(t *testing.T) {
	mb, _, _ := serve(t, "json", full(&runner{}))
	msg := remoteError(t, call(t, mb, "pool_grow", map[string]any{"n": "many"}))
	assert.Contains(t, msg, "bad arguments")
	msg = remoteError(t, call(t, mb, "add_consumer", map[string]any{}))
	assert.Contains(t, msg, "no queue")
	// The node still answers.
	assert.Equal(t, "pong", okText(t, call(t, mb, "ping", nil)))
}

func TestRevokedIsBounded(t *testing.T) {
	mb, st, _ := serve(t, "json", celery.Options{MaxRevoked: 3})
	for _, id := range []string{"a", "b", "c", "d", "e"} {
		call(t, mb, "revoke", map[string]any{"task_id": id})
	}
	assert.Equal(t, []string{"c", "d", "e"}, st.Revoked())
}

// The core never imports this package: it stays opt-in.
func TestRootDoesNotImportCelery(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "github.com/gopidbox/pidbox").CombinedOutput()
	require.NoError(t, err, "%s", out)
	assert.NotContains(t, string(out), "github.com/gopidbox/pidbox/celery")
}
