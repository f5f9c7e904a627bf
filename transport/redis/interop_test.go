package redis_test

// Interop with real Kombu and Celery processes (Debian's python3-kombu and
// python3-celery under /usr/bin/python3) on a real redis-server.

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/gopidbox/pidbox"
	"github.com/gopidbox/pidbox/internal/redistest"
	"github.com/gopidbox/pidbox/reply"
	"github.com/gopidbox/pidbox/transport"
	pidredis "github.com/gopidbox/pidbox/transport/redis"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

type variant struct {
	kind       transport.Kind
	serializer string
}

func (v variant) String() string { return string(v.kind) + "/" + v.serializer }

var variants = []variant{
	{transport.Fanout, "json"}, {transport.Fanout, "msgpack"},
	{transport.Direct, "json"}, {transport.Direct, "msgpack"},
}

func kombuNode(t *testing.T, url, hostname string, v variant) *redistest.Process {
	t.Helper()
	p := redistest.StartProcess(t, "testdata", nil, redistest.Python, "kombu_node.py", url, hostname, string(v.kind), v.serializer)
	p.WaitFor("READY", 20*time.Second)
	t.Cleanup(func() { _ = p.Stop(5 * time.Second) })
	return p
}

type kombuResult struct {
	Replies []map[string]json.RawMessage `json:"replies"`
	Clock   uint64                       `json:"clock"`
	Elapsed float64                      `json:"elapsed"`
}

// byNode flattens Kombu's [{node: value}, ...] into {node: value}.
func (r kombuResult) byNode() map[string]string {
	out := map[string]string{}
	for _, m := range r.Replies {
		for k, v := range m {
			out[k] = string(v)
		}
	}
	return out
}

func kombuCall(t *testing.T, url string, v variant, req map[string]any) kombuResult {
	t.Helper()
	raw, err := json.Marshal(req)
	require.NoError(t, err)
	cmd := exec.Command(redistest.Python, "kombu_client.py", url, string(v.kind), v.serializer, string(raw))
	cmd.Dir = "testdata"
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "kombu client: %s", out)
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	var res kombuResult
	require.NoError(t, json.Unmarshal([]byte(lines[len(lines)-1]), &res), "kombu client: %s", out)
	return res
}

func mailbox(t *testing.T, tr transport.Transport, v variant) *pidbox.Mailbox {
	t.Helper()
	mb, err := pidbox.New(tr, pidbox.Options{Type: v.kind, Serializer: v.serializer, Logger: quiet})
	require.NoError(t, err)
	t.Cleanup(func() { _ = mb.Close() })
	return mb
}

type echoArgs struct {
	A int    `json:"a"`
	B string `json:"b"`
}

// goNode serves a Go node with echo and fail handlers until the test ends.
func goNode(t *testing.T, tr transport.Transport, v variant, name string) *pidbox.Node {
	t.Helper()
	n := mailbox(t, tr, v).NewNode(name, pidbox.NodeOptions{})
	n.Register("echo", pidbox.Typed(func(_ context.Context, a echoArgs) (echoArgs, error) { return a, nil }))
	n.RegisterFunc("fail", func(context.Context, *pidbox.Request) (any, error) { return nil, fmt.Errorf("bad thing") })
	serve(t, n)
	return n
}

// serve runs n until the test ends and waits until it listens. The
// function it returns waits up to d for Serve to return, and returns its
// error.
func serve(t *testing.T, n *pidbox.Node) (stopped func(d time.Duration) error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	var err error
	go func() { err = n.Serve(ctx); close(done) }()
	stopped = func(d time.Duration) error {
		select {
		case <-done:
			return err
		case <-time.After(d):
			return fmt.Errorf("node %s still serving after %s", n.Hostname(), d)
		}
	}
	t.Cleanup(func() {
		cancel()
		if err := stopped(10 * time.Second); err != nil {
			t.Errorf("node %s: %v", n.Hostname(), err)
		}
	})
	select {
	case <-n.Ready():
	case <-done:
		t.Fatalf("node %s: %v", n.Hostname(), err)
	}
	return stopped
}

func names(rs []reply.Reply) []string {
	var out []string
	for _, r := range rs {
		out = append(out, r.Node)
	}
	sort.Strings(out)
	return out
}

func TestInteropGoControllerKombuNodes(t *testing.T) {
	redistest.RequirePython(t, "kombu", "redis", "msgpack")
	srv := redistest.Start(t)
	srv.AllowNoTTL("_kombu.") // bindings the Python processes made
	for _, v := range variants {
		t.Run(v.String(), func(t *testing.T) {
			url := srv.URL(0)
			kombuNode(t, url, "py1@h", v)
			kombuNode(t, url, "py2@x", v)
			tr := open(t, srv, url, pidredis.Options{})
			ctl := mailbox(t, tr, v)
			ctx := context.Background()

			start := time.Now()
			rs, err := replies(ctl.Call(ctx, "ping", nil, pidbox.Timeout(5*time.Second)))
			require.NoError(t, err)
			assert.Equal(t, []string{"py1@h", "py2@x"}, names(rs))
			assert.Less(t, time.Since(start), 3*time.Second, "returns once the known nodes replied")
			for _, r := range rs {
				ok, err := reply.As[pidbox.OK](r)
				require.NoError(t, err)
				assert.Equal(t, "pong", ok.OK)
			}

			rs, err = replies(ctl.Call(ctx, "echo", echoArgs{A: 1, B: "x"}, pidbox.To("py1@h")))
			require.NoError(t, err)
			require.Len(t, rs, 1)
			got, err := reply.As[echoArgs](rs[0])
			require.NoError(t, err)
			assert.Equal(t, echoArgs{A: 1, B: "x"}, got)

			rs, err = replies(ctl.Call(ctx, "fail", nil, pidbox.To("py1@h")))
			require.NoError(t, err)
			require.Len(t, rs, 1)
			var re *reply.RemoteError
			require.ErrorAs(t, rs[0].Err, &re)
			assert.Equal(t, "ValueError('bad thing')", re.Message)

			rs, err = replies(ctl.Call(ctx, "nosuch", nil, pidbox.To("py2@x")))
			require.NoError(t, err)
			require.Len(t, rs, 1)
			assert.EqualError(t, rs[0].Err, "py2@x: KeyError('nosuch')")

			rs, err = replies(ctl.Call(ctx, "ping", nil, pidbox.Glob("py1*"), pidbox.Timeout(5*time.Second)))
			require.NoError(t, err)
			assert.Equal(t, []string{"py1@h"}, names(rs))
			rs, err = replies(ctl.Call(ctx, "ping", nil, pidbox.PCRE(`py.@x`), pidbox.Timeout(5*time.Second)))
			require.NoError(t, err)
			assert.Equal(t, []string{"py2@x"}, names(rs))

			// The Kombu node adjusts its clock from ours.
			ctl.Clock().Adjust(1000)
			rs, err = replies(ctl.Call(ctx, "clock", nil, pidbox.To("py1@h")))
			require.NoError(t, err)
			require.Len(t, rs, 1)
			c, err := reply.As[pidbox.ClockReply](rs[0])
			require.NoError(t, err)
			assert.Greater(t, c.Clock, uint64(1000))
		})
	}
}

func TestInteropKombuClientGoNodes(t *testing.T) {
	redistest.RequirePython(t, "kombu", "redis", "msgpack")
	srv := redistest.Start(t)
	srv.AllowNoTTL("_kombu.") // bindings the Python processes made
	for _, v := range variants {
		t.Run(v.String(), func(t *testing.T) {
			url := srv.URL(0)
			tr := open(t, srv, url, pidredis.Options{})
			goNode(t, tr, v, "go1@h")
			goNode(t, tr, v, "go2@x")

			res := kombuCall(t, url, v, map[string]any{"method": "ping", "timeout": 1})
			assert.Equal(t, map[string]string{"go1@h": `{"ok": "pong"}`, "go2@x": `{"ok": "pong"}`}, res.byNode())

			res = kombuCall(t, url, v, map[string]any{"method": "echo", "arguments": map[string]any{"a": 7, "b": "y"}, "destination": []string{"go1@h"}})
			assert.Equal(t, map[string]string{"go1@h": `{"a": 7, "b": "y"}`}, res.byNode())

			res = kombuCall(t, url, v, map[string]any{"method": "fail", "destination": []string{"go2@x"}})
			assert.Equal(t, map[string]string{"go2@x": `{"error": "bad thing"}`}, res.byNode())
			res = kombuCall(t, url, v, map[string]any{"method": "nosuch", "destination": []string{"go2@x"}})
			assert.Equal(t, map[string]string{"go2@x": `{"error": "unknown method \"nosuch\""}`}, res.byNode())
			res = kombuCall(t, url, v, map[string]any{"method": "echo", "arguments": map[string]any{"a": "not a number"}, "destination": []string{"go2@x"}})
			assert.Contains(t, res.byNode()["go2@x"], "bad arguments for echo")

			res = kombuCall(t, url, v, map[string]any{"method": "ping", "pattern": "go2*", "matcher": "glob", "timeout": 1})
			assert.Equal(t, []string{"go2@x"}, keys(res.byNode()))
			res = kombuCall(t, url, v, map[string]any{"method": "ping", "pattern": "go1", "matcher": "pcre", "timeout": 1})
			assert.Equal(t, []string{"go1@h"}, keys(res.byNode()))

			// The Go node adjusts its clock from the Kombu client's.
			res = kombuCall(t, url, v, map[string]any{"method": "clock", "destination": []string{"go1@h"}, "clock": 5000})
			var c pidbox.ClockReply
			require.NoError(t, json.Unmarshal([]byte(res.byNode()["go1@h"]), &c))
			assert.Greater(t, c.Clock, uint64(5000))
			assert.Greater(t, res.Clock, c.Clock, "the Kombu client adjusted past the reply's clock")
		})
	}
}

func keys(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func TestInteropCelery(t *testing.T) {
	redistest.RequirePython(t, "kombu", "celery", "redis")
	srv := redistest.Start(t)
	srv.AllowNoTTL("_kombu.") // bindings the Python processes made
	url := srv.URL(1)         // db 1: fanout channel /1.celery.pidbox
	env := []string{"PIDBOX_BROKER=" + url}
	worker := redistest.StartProcess(t, "testdata", env, redistest.Python, "-m", "celery", "-A", "celery_app", "worker",
		"--hostname", "celery@interop", "-P", "solo", "--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "info")
	worker.WaitFor("celery@interop ready", 60*time.Second)

	tr := open(t, srv, url, pidredis.Options{})
	v := variant{transport.Fanout, "json"}
	ctl := mailbox(t, tr, v)
	ctx := context.Background()

	rs, err := replies(ctl.Call(ctx, "ping", nil, pidbox.To("celery@interop"), pidbox.Timeout(5*time.Second)))
	require.NoError(t, err)
	require.Len(t, rs, 1)
	assert.JSONEq(t, `{"ok": "pong"}`, string(rs[0].Value))

	rs, err = replies(ctl.Call(ctx, "stats", nil, pidbox.To("celery@interop"), pidbox.Timeout(5*time.Second)))
	require.NoError(t, err)
	require.Len(t, rs, 1)
	stats, err := reply.As[map[string]any](rs[0])
	require.NoError(t, err)
	assert.Contains(t, stats, "pid")
	assert.Contains(t, stats, "broker")

	rs, err = replies(ctl.Call(ctx, "clock", nil, pidbox.To("celery@interop"), pidbox.Timeout(5*time.Second)))
	require.NoError(t, err)
	require.Len(t, rs, 1)
	_, err = reply.As[pidbox.ClockReply](rs[0])
	require.NoError(t, err)

	// Celery's own command line sees a Go node and gets sensible replies.
	gon := goNode(t, tr, v, "go@interop")
	celery := func(args ...string) string {
		cmd := exec.Command(redistest.Python, append([]string{"-m", "celery", "-A", "celery_app"}, args...)...)
		cmd.Dir, cmd.Env = "testdata", append(cmd.Environ(), env...)
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "celery %v: %s", args, out)
		return string(out)
	}
	out := celery("inspect", "ping")
	assert.Contains(t, out, "go@interop: OK")
	assert.Contains(t, out, "celery@interop: OK")
	assert.Contains(t, out, "2 nodes online")
	out = celery("inspect", "stats", "-d", "go@interop")
	assert.Contains(t, out, `"hostname": "go@interop"`)
	out = celery("inspect", "clock", "-d", "go@interop")
	assert.Contains(t, out, "go@interop: OK")
	assert.Equal(t, uint64(0), gon.Stats().Dropped)

	// A broadcast with no limit returns as soon as both known nodes
	// replied, where Celery waits its whole timeout.
	start := time.Now()
	rs, err = replies(ctl.Call(ctx, "ping", nil, pidbox.Timeout(5*time.Second)))
	require.NoError(t, err)
	assert.Equal(t, []string{"celery@interop", "go@interop"}, names(rs))
	assert.Less(t, time.Since(start), 3*time.Second)

	// Shutdown stops the Celery worker; Celery sends no reply.
	require.NoError(t, ctl.Cast(ctx, "shutdown", nil, pidbox.To("celery@interop")))
	require.NoError(t, worker.Wait(30*time.Second), "celery worker did not exit cleanly:\n%s", worker.Output())
}
