// Package examples_test builds the example binaries and uses them as a
// user would: workers as processes, controller commands checked by their
// output and exit status, against the memory demo fleet, a real
// redis-server, and real Celery.
package examples_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gopidbox/pidbox/internal/rabbittest"
	"github.com/gopidbox/pidbox/internal/redistest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

var bin string // directory holding the built worker and controller

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "pidbox-examples")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bin = dir
	build := exec.Command("go", "build", "-race", "-o", dir, "./worker", "./controller")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build examples:", err)
		os.Exit(1)
	}
	code := rabbittest.Main(m.Run) // stops the RabbitMQ broker a test started
	os.RemoveAll(dir)
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goroutines leaked:", err)
			code = 1
		}
	}
	os.Exit(code)
}

type result struct {
	stdout, stderr string
	code           int
	elapsed        time.Duration
}

// controller runs the controller binary with PIDBOX_BROKER unset.
func controller(t *testing.T, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(bin, "controller"), args...)
	cmd.Env = append(os.Environ(), "PIDBOX_BROKER=")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	start := time.Now()
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errb.String(), elapsed: time.Since(start)}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	default:
		t.Fatalf("controller %v: %v", args, err)
	}
	return r
}

func worker(t *testing.T, url, name string, extra ...string) *redistest.Process {
	t.Helper()
	args := append([]string{"--broker", url, "--hostname", name}, extra...)
	p := redistest.StartProcess(t, ".", nil, filepath.Join(bin, "worker"), args...)
	p.WaitFor("worker ready", 20*time.Second)
	return p
}

func jsonObject(t *testing.T, s string) map[string]json.RawMessage {
	t.Helper()
	var m map[string]json.RawMessage
	dec := json.NewDecoder(strings.NewReader(s))
	require.NoError(t, dec.Decode(&m), "stdout is one JSON object: %q", s)
	var extra any
	require.Error(t, dec.Decode(&extra), "nothing after the JSON object: %q", s)
	return m
}

func TestMemoryDemo(t *testing.T) {
	r := controller(t, "demo")
	require.Equal(t, 0, r.code, r.stderr)
	for _, want := range []string{
		"->  worker1@demo: OK pong", "3 nodes replied.",
		`"hostname": "worker1@demo"`,
		`"previous": "info"`,
		`"key": "concurrency"`,
		"->  worker1@demo: ERROR unknown method \"reboot\"",
		"2 nodes known.",
	} {
		assert.Contains(t, r.stdout, want)
	}
}

func TestMemoryBroker(t *testing.T) {
	// Flags go before or after the command.
	for _, args := range [][]string{
		{"--broker", "memory://", "ping"},
		{"ping", "--broker", "memory://", "--timeout", "5s"},
	} {
		r := controller(t, args...)
		require.Equal(t, 0, r.code, "%v: %s", args, r.stderr)
		assert.Contains(t, r.stdout, "->  worker2@demo: OK pong")
		assert.Contains(t, r.stdout, "3 nodes replied.")
		assert.Less(t, r.elapsed, 4*time.Second, "returns once the fleet replied, not at the timeout")
	}

	r := controller(t, "--broker", "memory://", "--json", "ping")
	require.Equal(t, 0, r.code, r.stderr)
	m := jsonObject(t, r.stdout)
	assert.Len(t, m, 3)
	assert.JSONEq(t, `{"ok": "pong"}`, string(m["worker3@demo"]))

	r = controller(t, "--broker", "memory://", "--json", "call", "get_config", "key=region", "-d", "worker1@demo,worker2@demo")
	require.Equal(t, 0, r.code, r.stderr)
	m = jsonObject(t, r.stdout)
	assert.JSONEq(t, `{"key": "region", "value": "demo"}`, string(m["worker1@demo"]))
	assert.Len(t, m, 2)

	r = controller(t, "--broker", "memory://", "call", "set_log_level", "--args", `{"level": "warn"}`, "-d", "worker1@demo", "-d", "worker3@demo")
	require.Equal(t, 0, r.code, r.stderr)
	assert.Contains(t, r.stdout, `"level": "warn"`)
	assert.Contains(t, r.stdout, "2 nodes replied.")

	r = controller(t, "--broker", "memory://", "inspect", "ping", "--pattern", "worker[12]@.*", "--matcher", "pcre")
	require.Equal(t, 0, r.code, r.stderr)
	assert.Contains(t, r.stdout, "->  worker1@demo: OK\n        pong\n", "Celery's output")
	assert.Contains(t, r.stdout, "2 nodes online.")
	assert.NotContains(t, r.stdout, "worker3")

	// A destination that does not exist: exit status 3, and the reason.
	r = controller(t, "--broker", "memory://", "ping", "-d", "worker1@demo,ghost@demo", "--timeout", "300ms")
	assert.Equal(t, 3, r.code)
	assert.Contains(t, r.stdout, "No reply from: ghost@demo (not known to the broker)")

	// None replies: exit status 1.
	r = controller(t, "--broker", "memory://", "ping", "-d", "ghost@demo", "--timeout", "300ms")
	assert.Equal(t, 1, r.code)
	assert.Contains(t, r.stderr, "no nodes replied")

	r = controller(t, "--broker", "memory://", "cast", "pause")
	assert.Equal(t, 0, r.code, r.stderr)
	assert.Contains(t, r.stdout, "sent pause to every node")

	r = controller(t, "--broker", "memory://", "nodes", "--json")
	require.Equal(t, 0, r.code, r.stderr)
	assert.Len(t, jsonObject(t, r.stdout), 3)
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{"bogus"},
		{"ping", "extra"},
		{"call"},
		{"ping", "--limit", "-1"},
		{"ping", "--timeout", "0s"},
		{"ping", "--nosuchflag"},
		{"ping", "--matcher", "pcre"},
		{"ping", "--pattern", "x", "--matcher", "regex"},
		{"ping", "-d", "a", "--pattern", "x"},
		{"call", "m", "novalue"},
		{"call", "m", "--args", "[1,2]"},
		{"--broker", "memory://", "ping", "--serializer", "pickle"},
		{"--broker", "memory://", "ping", "--type", "topic"},
	} {
		r := controller(t, args...)
		assert.Equal(t, 2, r.code, "%v: %s%s", args, r.stdout, r.stderr)
		assert.Contains(t, r.stderr, "controller: ", "%v", args)
	}
}

func TestUnreachableBroker(t *testing.T) {
	r := controller(t, "--broker", "redis://admin:hunter2@127.0.0.1:1/0", "ping", "--timeout", "1s")
	assert.Equal(t, 1, r.code)
	lines := strings.Split(strings.TrimSpace(r.stderr), "\n")
	assert.Len(t, lines, 1, "one line: %q", r.stderr)
	assert.Contains(t, r.stderr, "redis://admin:xxxxx@127.0.0.1:1/0")
	assert.NotContains(t, r.stderr, "hunter2")
	assert.NotContains(t, r.stderr, "goroutine")
	assert.Less(t, r.elapsed, 10*time.Second)
	assert.Empty(t, r.stdout)
}

func TestWorkersOnRedis(t *testing.T) {
	srv := redistest.Start(t)
	url := srv.URL(0)
	w1 := worker(t, url, "w1@test", "--health", "127.0.0.1:0")
	w2 := worker(t, url, "w2@test")

	// The health endpoint answers 200 with the node's view of itself.
	w1.WaitFor("health endpoint", 10*time.Second)
	var healthURL string
	for _, l := range w1.Lines() {
		if _, after, ok := strings.Cut(l, `msg="health endpoint" url=`); ok {
			healthURL = strings.Fields(after)[0]
		}
	}
	require.NotEmpty(t, healthURL, w1.Output())
	resp, err := http.Get(healthURL)
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	assert.Equal(t, http.StatusOK, resp.StatusCode, string(body))
	assert.Contains(t, string(body), `"node":"w1@test"`)
	assert.Contains(t, string(body), `"subscribed":true`)

	r := controller(t, "--broker", url, "ping", "--timeout", "10s")
	require.Equal(t, 0, r.code, r.stderr)
	assert.Contains(t, r.stdout, "->  w1@test: OK pong")
	assert.Contains(t, r.stdout, "->  w2@test: OK pong")
	assert.Less(t, r.elapsed, 5*time.Second, "returns once both known workers replied")

	r = controller(t, "--broker", url, "--json", "inspect", "stats", "-d", "w1@test")
	require.Equal(t, 0, r.code, r.stderr)
	var st struct {
		PID   int              `json:"pid"`
		Total map[string]int64 `json:"total"`
	}
	require.NoError(t, json.Unmarshal(jsonObject(t, r.stdout)["w1@test"], &st))
	assert.Positive(t, st.PID)
	assert.Contains(t, st.Total, "demo.work")
	r = controller(t, "--broker", url, "inspect", "registered", "-d", "w1@test")
	require.Equal(t, 0, r.code, r.stderr)
	assert.Contains(t, r.stdout, "    * set_log_level [type=control]\n")

	// Without the Celery vocabulary, pidbox's own stats.
	w3 := worker(t, url, "w3@test", "--celery=false")
	r = controller(t, "--broker", url, "--json", "inspect", "stats", "-d", "w3@test")
	require.Equal(t, 0, r.code, r.stderr)
	var own struct {
		Hostname   string   `json:"hostname"`
		Registered []string `json:"registered"`
	}
	require.NoError(t, json.Unmarshal(jsonObject(t, r.stdout)["w3@test"], &own))
	assert.Equal(t, "w3@test", own.Hostname)
	assert.Contains(t, own.Registered, "set_log_level")
	assert.NotContains(t, own.Registered, "registered")

	// The probe's heartbeat check: w1 sends Celery's worker heartbeats by
	// default; w3, without the Celery vocabulary, sends none.
	r = controller(t, "--broker", url, "probe", "-d", "w1@test", "--heartbeat", "--timeout", "5s")
	require.Equal(t, 0, r.code, r.stdout+r.stderr)
	assert.Contains(t, r.stdout, "heartbeat received")
	r = controller(t, "--broker", url, "probe", "-d", "w3@test", "--heartbeat", "--timeout", "3s")
	assert.Equal(t, 6, r.code, r.stdout+r.stderr)
	assert.Contains(t, r.stdout, "probe: readiness failed: w3@test sent no worker heartbeat within 3s")
	require.NoError(t, w3.Stop(10*time.Second))

	r = controller(t, "--broker", url, "call", "set_log_level", "level=debug", "-d", "w2@test")
	require.Equal(t, 0, r.code, r.stderr)
	assert.Contains(t, r.stdout, `"level": "debug"`)

	r = controller(t, "--broker", url, "call", "get_config", "key=nope", "-d", "w2@test")
	assert.Equal(t, 0, r.code, "an error reply is still a reply")
	assert.Contains(t, r.stdout, `->  w2@test: ERROR no config key "nope"`)

	r = controller(t, "--broker", url, "cast", "pause", "-d", "w1@test")
	require.Equal(t, 0, r.code, r.stderr)
	r = controller(t, "--broker", url, "--json", "call", "status")
	require.Equal(t, 0, r.code, r.stderr)
	m := jsonObject(t, r.stdout)
	assert.Contains(t, string(m["w1@test"]), `"paused":true`)
	assert.Contains(t, string(m["w2@test"]), `"paused":false`)

	r = controller(t, "--broker", url, "nodes")
	require.Equal(t, 0, r.code, r.stderr)
	assert.Contains(t, r.stdout, "2 nodes known.")

	// A remote shutdown stops w1 cleanly; SIGTERM stops w2 cleanly.
	r = controller(t, "--broker", url, "shutdown", "-d", "w1@test")
	require.Equal(t, 0, r.code, r.stderr)
	require.NoError(t, w1.Wait(10*time.Second), "worker exits 0 on a remote shutdown:\n%s", w1.Output())
	require.NoError(t, w2.Stop(10*time.Second), "worker exits 0 on SIGTERM:\n%s", w2.Output())

	r = controller(t, "--broker", url, "nodes")
	assert.Equal(t, 1, r.code)
	assert.Contains(t, r.stdout, "0 nodes known.", "stopped workers unbound their queues")
	r = controller(t, "--broker", url, "ping", "--timeout", "300ms")
	assert.Equal(t, 1, r.code)
	assert.Contains(t, r.stderr, "no nodes replied")
}

// Two workers started with one name: both reply, and the controller says
// so.
func TestDuplicateWorkerNames(t *testing.T) {
	srv := redistest.Start(t)
	url := srv.URL(0)
	w1 := worker(t, url, "twin@test")
	w2 := worker(t, url, "twin@test")
	r := controller(t, "--broker", url, "ping", "--limit", "2", "--timeout", "10s")
	require.Equal(t, 0, r.code, r.stderr)
	assert.Contains(t, r.stdout, "->  twin@test (duplicate): OK pong")
	assert.Contains(t, r.stdout, "Duplicate node names (more than one live node replied as): twin@test")
	assert.Contains(t, r.stderr, `two nodes replied as "twin@test"`)
	require.NoError(t, w1.Stop(10*time.Second))
	require.NoError(t, w2.Stop(10*time.Second))
}

const celeryApp = "../transport/redis/testdata"

func celery(t *testing.T, url string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(redistest.Python, append([]string{"-m", "celery", "-A", "celery_app"}, args...)...)
	cmd.Dir = celeryApp
	cmd.Env = append(os.Environ(), "PIDBOX_BROKER="+url)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func TestCeleryCommandLineAgainstGoWorker(t *testing.T) {
	redistest.RequirePython(t, "kombu", "celery", "redis")
	srv := redistest.Start(t)
	srv.AllowNoTTL("_kombu.") // bindings the Python processes made
	url := srv.URL(0)
	w := worker(t, url, "go@celerytest")

	out, err := celery(t, url, "inspect", "ping")
	require.NoError(t, err, out)
	assert.Contains(t, out, "go@celerytest: OK")
	assert.Contains(t, out, "pong")
	out, err = celery(t, url, "inspect", "clock")
	require.NoError(t, err, out)
	assert.Contains(t, out, "go@celerytest: OK")
	out, err = celery(t, url, "inspect", "stats")
	require.NoError(t, err, out)
	assert.Contains(t, out, `"max-concurrency": 1`)

	// Celery's shutdown sends no reply, so `celery control shutdown` always
	// reports "No nodes replied" (exit status 69), for Celery workers too.
	out, _ = celery(t, url, "control", "shutdown", "-d", "go@celerytest")
	assert.Contains(t, out, "No nodes replied")
	require.NoError(t, w.Wait(15*time.Second), "worker exits 0 on celery control shutdown:\n%s", w.Output())
}

func TestControllerAgainstCeleryWorker(t *testing.T) {
	redistest.RequirePython(t, "kombu", "celery", "redis")
	srv := redistest.Start(t)
	srv.AllowNoTTL("_kombu.") // bindings the Python processes made
	url := srv.URL(0)
	cw := redistest.StartProcess(t, celeryApp, []string{"PIDBOX_BROKER=" + url}, redistest.Python,
		"-m", "celery", "-A", "celery_app", "worker", "--hostname", "celery@ctl", "-P", "solo",
		"--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "info")
	cw.WaitFor("celery@ctl ready", 60*time.Second)

	r := controller(t, "--broker", url, "ping")
	require.Equal(t, 0, r.code, r.stderr)
	assert.Contains(t, r.stdout, "->  celery@ctl: OK pong")
	assert.Less(t, r.elapsed, 900*time.Millisecond+3*time.Second, "no fixed one-second wait")

	r = controller(t, "--broker", url, "--json", "inspect", "stats", "-d", "celery@ctl", "--timeout", "5s")
	require.Equal(t, 0, r.code, r.stderr)
	assert.Contains(t, string(jsonObject(t, r.stdout)["celery@ctl"]), `"pid"`)

	r = controller(t, "--broker", url, "inspect", "registered", "-d", "celery@ctl", "--timeout", "5s")
	require.Equal(t, 0, r.code, r.stderr)
	assert.Contains(t, r.stdout, "celery_app.add")

	// The probe tells a live worker from a ready one: with its consumer
	// cancelled, the worker still answers ping but consumes nothing.
	r = controller(t, "--broker", url, "probe", "-d", "celery@ctl", "--ready", "--queue", "celery", "--timeout", "5s")
	require.Equal(t, 0, r.code, r.stdout+r.stderr)
	assert.Contains(t, r.stdout, "celery@ctl is live and ready (consumes celery)")
	out, err := celery(t, url, "control", "cancel_consumer", "celery", "-d", "celery@ctl")
	require.NoError(t, err, out)
	assert.Contains(t, out, "no longer consuming from")
	r = controller(t, "--broker", url, "probe", "-d", "celery@ctl", "--timeout", "5s")
	assert.Equal(t, 0, r.code, "still live: "+r.stdout+r.stderr)
	r = controller(t, "--broker", url, "probe", "-d", "celery@ctl", "--ready", "--timeout", "5s")
	assert.Equal(t, 5, r.code, r.stdout+r.stderr)
	assert.Equal(t, "probe: readiness failed: celery@ctl answers ping but consumes no queue\n", r.stdout)
	r = controller(t, "--broker", url, "probe", "-d", "celery@ctl", "--heartbeat", "--timeout", "3s")
	assert.Equal(t, 5, r.code, "consumes nothing, so not ready whatever its events: "+r.stdout+r.stderr)
	r = controller(t, "--broker", url, "probe", "-d", "celery@gone", "--timeout", "300ms")
	assert.Equal(t, 4, r.code, r.stdout+r.stderr)
	assert.Contains(t, r.stdout, "probe: liveness failed: celery@gone")

	r = controller(t, "--broker", url, "shutdown", "-d", "celery@ctl")
	require.Equal(t, 0, r.code, r.stderr)
	require.NoError(t, cw.Wait(30*time.Second), "celery worker exits on shutdown:\n%s", cw.Output())
}
