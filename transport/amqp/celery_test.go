package amqp_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/gopidbox/pidbox"
	"github.com/gopidbox/pidbox/internal/rabbittest"
	"github.com/gopidbox/pidbox/internal/redistest"
	"github.com/gopidbox/pidbox/reply"
	"github.com/gopidbox/pidbox/transport"
	pidamqp "github.com/gopidbox/pidbox/transport/amqp"
	amqp091 "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// mgmtGet reads path from the broker's management API into v.
func mgmtGet(t *testing.T, srv *rabbittest.Server, path string, v any) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, srv.ManagementURL()+path, nil)
	require.NoError(t, err)
	req.SetBasicAuth("guest", "guest")
	resp, err := (&http.Client{Transport: &http.Transport{DisableKeepAlives: true}}).Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode, path)
	require.NoError(t, json.NewDecoder(resp.Body).Decode(v))
}

// mgmtDo sends a request with a JSON body (or none) to the management API
// and returns its status.
func mgmtDo(t *testing.T, srv *rabbittest.Server, method, path, body string) int {
	t.Helper()
	req, err := http.NewRequest(method, srv.ManagementURL()+path, strings.NewReader(body))
	require.NoError(t, err)
	req.SetBasicAuth("guest", "guest")
	req.Header.Set("Content-Type", "application/json")
	resp, err := (&http.Client{Transport: &http.Transport{DisableKeepAlives: true}}).Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	return resp.StatusCode
}

type entity struct {
	Name       string         `json:"name"`
	Type       string         `json:"type"`
	Durable    bool           `json:"durable"`
	AutoDelete bool           `json:"auto_delete"`
	Exclusive  bool           `json:"exclusive"`
	Arguments  map[string]any `json:"arguments"`
}

// deleteExchanges removes exchanges, so that the next process to use them
// declares them first.
func deleteExchanges(t *testing.T, srv *rabbittest.Server, names ...string) {
	t.Helper()
	conn, err := amqp091.Dial(srv.URL())
	require.NoError(t, err)
	defer conn.Close()
	ch, err := conn.Channel()
	require.NoError(t, err)
	for _, n := range names {
		require.NoError(t, ch.ExchangeDelete(n, false, false))
	}
}

// The exchanges are declared as Kombu declares them; the queues are
// exclusive and auto-deleted, with Celery's expiry and message TTL.
func TestDeclarations(t *testing.T) {
	srv := rabbittest.Get(t)
	tr := open(t, srv.URL(), pidamqp.Options{})
	v := variant{Kind: transport.Fanout, Serializer: "json"}
	ns := namespace(v, "decl")
	mb := mailbox(t, tr, v, ns)
	goNode(t, mb, "n1@h")
	require.NoError(t, ping(mb, "n1@h", 5*time.Second)) // declares the reply exchange and queue

	var ex entity
	mgmtGet(t, srv, "/api/exchanges/%2F/"+url.PathEscape(ns+".pidbox"), &ex)
	assert.Equal(t, entity{Name: ns + ".pidbox", Type: "fanout", Arguments: map[string]any{}}, ex)
	mgmtGet(t, srv, "/api/exchanges/%2F/"+url.PathEscape("reply."+ns+".pidbox"), &ex)
	assert.Equal(t, entity{Name: "reply." + ns + ".pidbox", Type: "direct", Arguments: map[string]any{}}, ex)

	var qs []entity
	mgmtGet(t, srv, "/api/queues/%2F?columns=name,durable,auto_delete,exclusive,arguments", &qs)
	found := 0
	for _, q := range qs {
		if !strings.HasSuffix(q.Name, "."+ns+".pidbox") {
			continue
		}
		found++
		assert.Equal(t, entity{Name: q.Name, AutoDelete: true, Exclusive: true,
			Arguments: map[string]any{"x-expires": 10000.0, "x-message-ttl": 300000.0}}, q)
	}
	assert.Equal(t, 2, found, "the node queue and the reply queue: %+v", qs)
}

func TestInteropCelery(t *testing.T) {
	redistest.RequirePython(t, "kombu", "celery", "amqp")
	srv := rabbittest.Get(t)
	env := []string{"PIDBOX_BROKER=" + srv.URL()}
	v := variant{Kind: transport.Fanout, Serializer: "json"}
	celeryWorker := func(t *testing.T, name string) *redistest.Process {
		w := redistest.StartProcess(t, pyDir, env, redistest.Python, "-m", "celery", "-A", "celery_app", "worker",
			"--hostname", name, "-P", "solo", "--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "info")
		w.WaitFor(name+" ready", 60*time.Second)
		return w
	}
	celery := func(t *testing.T, args ...string) string {
		cmd := exec.Command(redistest.Python, append([]string{"-m", "celery", "-A", "celery_app"}, args...)...)
		cmd.Dir, cmd.Env = pyDir, append(cmd.Environ(), env...)
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "celery %v: %s", args, out)
		return string(out)
	}
	// Each order of declaration starts from no exchanges; a declaration
	// that differed from Celery's would fail with PRECONDITION_FAILED on
	// the second declarer.
	for _, goFirst := range []bool{true, false} {
		name := map[bool]string{true: "GoDeclaresFirst", false: "CeleryDeclaresFirst"}[goFirst]
		t.Run(name, func(t *testing.T) {
			deleteExchanges(t, srv, "celery.pidbox", "reply.celery.pidbox")
			worker := "celery@" + strings.ToLower(name)
			var w *redistest.Process
			if !goFirst {
				w = celeryWorker(t, worker)
			}
			tr := open(t, withManagement(srv), pidamqp.Options{})
			ctl := mailbox(t, tr, v, "celery")
			gon := goNode(t, ctl, "go@interop")
			require.NoError(t, ping(ctl, "go@interop", 5*time.Second))
			if goFirst {
				w = celeryWorker(t, worker)
			}
			ctx := context.Background()

			rs, err := replies(ctl.Call(ctx, "ping", nil, pidbox.To(worker), pidbox.Timeout(5*time.Second)))
			require.NoError(t, err)
			require.Len(t, rs, 1)
			assert.JSONEq(t, `{"ok": "pong"}`, string(rs[0].Value))

			rs, err = replies(ctl.Call(ctx, "stats", nil, pidbox.To(worker), pidbox.Timeout(5*time.Second)))
			require.NoError(t, err)
			require.Len(t, rs, 1)
			stats, err := reply.As[map[string]any](rs[0])
			require.NoError(t, err)
			assert.Contains(t, stats, "pid")
			assert.Contains(t, stats, "broker")

			rs, err = replies(ctl.Call(ctx, "clock", nil, pidbox.To(worker), pidbox.Timeout(5*time.Second)))
			require.NoError(t, err)
			require.Len(t, rs, 1)
			_, err = reply.As[pidbox.ClockReply](rs[0])
			require.NoError(t, err)

			// A broadcast with no limit returns as soon as both nodes the
			// management API lists replied, where Celery waits its timeout.
			start := time.Now()
			rs, err = replies(ctl.Call(ctx, "ping", nil, pidbox.Timeout(5*time.Second)))
			require.NoError(t, err)
			assert.Equal(t, []string{worker, "go@interop"}, names(rs))
			assert.Less(t, time.Since(start), 3*time.Second)

			// Celery's own command line sees the Go node.
			out := celery(t, "inspect", "ping")
			assert.Contains(t, out, "go@interop: OK")
			assert.Contains(t, out, worker+": OK")
			assert.Contains(t, out, "2 nodes online")
			out = celery(t, "inspect", "stats", "-d", "go@interop")
			assert.Contains(t, out, `"hostname": "go@interop"`)
			assert.Equal(t, uint64(0), gon.Stats().Dropped)

			// Shutdown stops the Celery worker; Celery sends no reply.
			require.NoError(t, ctl.Cast(ctx, "shutdown", nil, pidbox.To(worker)))
			require.NoError(t, w.Wait(30*time.Second), "celery worker did not exit cleanly:\n%s", w.Output())
			assert.NotContains(t, w.Output(), "PRECONDITION_FAILED")
		})
	}
}
