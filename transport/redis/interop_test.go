package redis_test

// Interop with real Kombu and Celery processes (Debian's python3-kombu and
// python3-celery under /usr/bin/python3) on a real redis-server.

import (
	"context"
	"os/exec"
	"testing"
	"time"

	"github.com/gopidbox/pidbox"
	"github.com/gopidbox/pidbox/internal/interoptest"
	"github.com/gopidbox/pidbox/internal/redistest"
	"github.com/gopidbox/pidbox/reply"
	"github.com/gopidbox/pidbox/transport"
	pidredis "github.com/gopidbox/pidbox/transport/redis"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

type variant = interoptest.Variant

var variants = interoptest.Variants

type echoArgs = interoptest.EchoArgs

func kombuNode(t *testing.T, url, hostname string, v variant) *redistest.Process {
	t.Helper()
	return interoptest.Peer{URL: url}.KombuNode(t, hostname, v)
}

func kombuCall(t *testing.T, url string, v variant, req map[string]any) interoptest.KombuResult {
	t.Helper()
	return interoptest.Peer{URL: url}.KombuCall(t, v, req)
}

func mailbox(t *testing.T, tr transport.Transport, v variant) *pidbox.Mailbox {
	t.Helper()
	return interoptest.Peer{}.Mailbox(t, tr, v)
}

// goNode serves a Go node with echo and fail handlers until the test ends.
func goNode(t *testing.T, tr transport.Transport, v variant, name string) *pidbox.Node {
	t.Helper()
	return interoptest.GoNode(t, mailbox(t, tr, v), name)
}

// serve runs n until the test ends and waits until it listens; see
// interoptest.Serve.
func serve(t *testing.T, n *pidbox.Node) (stopped func(d time.Duration) error) {
	t.Helper()
	return interoptest.Serve(t, n)
}

func names(rs []reply.Reply) []string { return interoptest.Names(rs) }

// redisPeer reaches a test's redis-server for the shared interop scenarios.
func redisPeer(srv *redistest.Server) interoptest.Peer {
	return interoptest.Peer{URL: srv.URL(0), Open: func(t *testing.T) transport.Transport {
		return open(t, srv, srv.URL(0), pidredis.Options{})
	}}
}

func TestInteropGoControllerKombuNodes(t *testing.T) {
	redistest.RequirePython(t, "kombu", "redis", "msgpack")
	srv := redistest.Start(t)
	srv.AllowNoTTL("_kombu.") // bindings the Python processes made
	for _, v := range variants {
		t.Run(v.String(), func(t *testing.T) { interoptest.GoControllerKombuNodes(t, redisPeer(srv), v) })
	}
}

func TestInteropKombuClientGoNodes(t *testing.T) {
	redistest.RequirePython(t, "kombu", "redis", "msgpack")
	srv := redistest.Start(t)
	srv.AllowNoTTL("_kombu.") // bindings the Python processes made
	for _, v := range variants {
		t.Run(v.String(), func(t *testing.T) { interoptest.KombuClientGoNodes(t, redisPeer(srv), v) })
	}
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
	v := variant{Kind: transport.Fanout, Serializer: "json"}
	interoptest.Answering(t, mailbox(t, open(t, srv, url, pidredis.Options{}), v), "celery@interop")
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
