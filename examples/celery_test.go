package examples_test

// Celery's whole inspect/control vocabulary in both directions, against
// real processes on a real redis-server: the Celery command line to the Go
// example worker, and the Go controller to a real Celery 5.2 worker. Every
// Go reply must have the shape of the real Celery worker's reply to the
// same command: the same keys, the same JSON types.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	pidcelery "github.com/gopidbox/pidbox/celery"
	"github.com/gopidbox/pidbox/internal/redistest"
	"github.com/gopidbox/pidbox/internal/wire"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// vocabularyCase is one command line, as `celery inspect|control` takes it.
type vocabularyCase struct {
	kind, action string
	args         []string
	// goArgs replace args for the Go worker, where a command names a task
	// and each worker has its own.
	goArgs []string
	// dynamic lists the paths of maps whose keys are data, not shape
	// (stats' total, hello's revoked): only their values are compared.
	dynamic []string
	// free: the reply is an object of settings, any keys, any values
	// (conf).
	free bool
	// nullOrString: Celery replies null where the Go worker has a value
	// (memsample: Celery has no psutil here).
	nullOrString bool
	// noCLI: Celery's command line does not offer it (hello is hidden):
	// Celery's client sends it, as mingle does.
	noCLI bool
}

func vocabularyCases() []vocabularyCase {
	return []vocabularyCase{
		{kind: "inspect", action: "report"},
		{kind: "inspect", action: "conf", free: true},
		// conf true (with Celery's defaults, which hold Infinity) is
		// checked on its own below, against Celery's command line.
		{kind: "inspect", action: "query_task", args: []string{"nosuch-id"}, dynamic: []string{""}},
		{kind: "inspect", action: "clock"},
		{kind: "inspect", action: "ping"},
		{kind: "inspect", action: "stats", dynamic: []string{".total"}},
		{kind: "inspect", action: "scheduled"},
		{kind: "inspect", action: "reserved"},
		{kind: "inspect", action: "active"},
		{kind: "inspect", action: "revoked"},
		{kind: "inspect", action: "registered"},
		{kind: "inspect", action: "registered", args: []string{"rate_limit", "time_limit"}},
		{kind: "inspect", action: "objgraph"},
		{kind: "inspect", action: "memsample", nullOrString: true},
		{kind: "inspect", action: "memdump"},
		{kind: "inspect", action: "active_queues"},
		{kind: "inspect", action: "hello", args: []string{"--args", `{"from_node": "other@test"}`}, dynamic: []string{".revoked"}, noCLI: true},
		{kind: "control", action: "revoke", args: []string{"id1", "id2"}},
		{kind: "control", action: "terminate", args: []string{"SIGKILL", "id3"}},
		{kind: "control", action: "rate_limit", args: []string{"celery_app.add", "10/m"}, goArgs: []string{"demo.work", "10/m"}},
		{kind: "control", action: "rate_limit", args: []string{"nosuch.task", "10/m"}},
		{kind: "control", action: "rate_limit", args: []string{"celery_app.add", "xx"}, goArgs: []string{"demo.work", "xx"}},
		{kind: "control", action: "time_limit", args: []string{"celery_app.add", "10", "20"}, goArgs: []string{"demo.work", "10", "20"}},
		{kind: "control", action: "time_limit", args: []string{"nosuch.task", "10"}},
		{kind: "control", action: "election"},
		{kind: "control", action: "enable_events"},
		{kind: "control", action: "disable_events"},
		{kind: "control", action: "heartbeat"},
		{kind: "control", action: "pool_grow", args: []string{"1"}},
		{kind: "control", action: "pool_shrink", args: []string{"1"}},
		{kind: "control", action: "pool_restart"},
		{kind: "control", action: "autoscale", args: []string{"4", "2"}},
		{kind: "control", action: "add_consumer", args: []string{"q1"}},
		{kind: "control", action: "add_consumer", args: []string{"q2", "ex2", "topic", "rk2"}},
		{kind: "control", action: "cancel_consumer", args: []string{"q1"}},
	}
}

// jsonValue decodes JSON keeping numbers' text, so ints and floats differ.
func jsonValue(t *testing.T, b []byte) any {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	require.NoError(t, dec.Decode(&v), "%s", b)
	return v
}

func kindOf(v any) string {
	switch x := v.(type) {
	case nil:
		return "null"
	case bool:
		return "bool"
	case string:
		return "string"
	case json.Number:
		if strings.ContainsAny(x.String(), ".eE") {
			return "float"
		}
		return "int"
	case []any:
		return "list"
	case map[string]any:
		if len(x) == 1 && (x["ok"] != nil || x["error"] != nil) {
			return "ok/error" // Celery's ok() and nok(), and exceptions
		}
		return "object"
	}
	return fmt.Sprintf("%T", v)
}

// shapeDiff lists where got's shape differs from ref's.
func shapeDiff(path string, ref, got any, dynamic []string) []string {
	rk, gk := kindOf(ref), kindOf(got)
	if rk != gk {
		return []string{fmt.Sprintf("%s: Celery has %s, Go has %s", pathName(path), rk, gk)}
	}
	var out []string
	switch r := ref.(type) {
	case []any:
		g := got.([]any)
		for i, e := range g {
			switch {
			case len(r) == len(g): // a tuple, or a list as long: item by item
				out = append(out, shapeDiff(fmt.Sprintf("%s[%d]", path, i), r[i], e, dynamic)...)
			case len(r) > 0:
				out = append(out, shapeDiff(fmt.Sprintf("%s[%d]", path, i), r[0], e, dynamic)...)
			}
		}
	case map[string]any:
		g := got.(map[string]any)
		if rk == "ok/error" {
			for _, v := range []any{r["ok"], r["error"]} {
				for _, w := range []any{g["ok"], g["error"]} {
					if v != nil && w != nil {
						out = append(out, shapeDiff(path+".ok", v, w, dynamic)...)
					}
				}
			}
			return out
		}
		if slices.Contains(dynamic, path) {
			var sample any
			for _, v := range r {
				sample = v
				break
			}
			if sample != nil {
				for k, v := range g {
					out = append(out, shapeDiff(path+"."+k, sample, v, dynamic)...)
				}
			}
			return out
		}
		keys := map[string]bool{}
		for k := range r {
			keys[k] = true
		}
		for k := range g {
			keys[k] = true
		}
		names := make([]string, 0, len(keys))
		for k := range keys {
			names = append(names, k)
		}
		sort.Strings(names)
		for _, k := range names {
			rv, rok := r[k]
			gv, gok := g[k]
			switch {
			case !gok:
				out = append(out, fmt.Sprintf("%s.%s: missing in Go's reply", pathName(path), k))
			case !rok:
				out = append(out, fmt.Sprintf("%s.%s: not in Celery's reply", pathName(path), k))
			default:
				out = append(out, shapeDiff(path+"."+k, rv, gv, dynamic)...)
			}
		}
	}
	return out
}

func pathName(p string) string {
	if p == "" {
		return "reply"
	}
	return "reply" + p
}

// celeryReply extracts one node's reply from `celery inspect|control
// --json` output: {node: reply} for inspect, [{node: reply}] for control.
func celeryReply(t *testing.T, out, node string) (json.RawMessage, bool) {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(out), "\n")
	last := []byte(lines[len(lines)-1])
	var obj map[string]json.RawMessage
	if json.Unmarshal(last, &obj) == nil {
		v, ok := obj[node]
		return v, ok
	}
	var list []map[string]json.RawMessage
	require.NoError(t, json.Unmarshal(last, &list), "celery --json output: %s", out)
	for _, m := range list {
		if v, ok := m[node]; ok {
			return v, true
		}
	}
	return nil, false
}

func startCeleryWorker(t *testing.T, url, name string, extra ...string) *redistest.Process {
	t.Helper()
	args := append([]string{"-m", "celery", "-A", "celery_app", "worker", "--hostname", name, "-P", "solo",
		"--without-gossip", "--without-mingle", "-l", "info"}, extra...)
	cw := redistest.StartProcess(t, celeryApp, []string{"PIDBOX_BROKER=" + url}, redistest.Python, args...)
	t.Cleanup(func() { _ = cw.Stop(10 * time.Second) })
	return cw
}

func TestCeleryVocabularyBothWays(t *testing.T) {
	redistest.RequirePython(t, "kombu", "celery", "redis")
	srv := redistest.Start(t)
	srv.AllowNoTTL("_kombu.", "celery", "unacked") // what the Python processes made
	url := srv.URL(0)
	cw := startCeleryWorker(t, url, "celery@ref")
	gw := worker(t, url, "go@ref")
	cli := startCeleryCLI(t, url)
	cw.WaitFor("celery@ref ready", 60*time.Second)

	// A task with an ETA, so that scheduled shows a real Celery request.
	out, err := celery(t, url, "call", "celery_app.add", "--args", "[1, 2]", "--countdown", "600")
	require.NoError(t, err, out)
	var sched []any
	require.Eventually(t, func() bool {
		r := controller(t, "--broker", url, "--json", "inspect", "scheduled", "-d", "celery@ref", "--timeout", "5s")
		sched, _ = jsonValue(t, jsonObject(t, r.stdout)["celery@ref"]).([]any)
		return len(sched) == 1
	}, 20*time.Second, 200*time.Millisecond, "the ETA task is scheduled")
	// The Go worker's request types have the shape of Celery's.
	eta := "2030-01-01T00:00:00+00:00"
	mine, err := json.Marshal(pidcelery.Scheduled{ETA: &eta, Request: pidcelery.Request{ID: "x", Name: "n", Args: []any{}, Kwargs: map[string]any{}}})
	require.NoError(t, err)
	assert.Empty(t, shapeDiff("", sched[0], jsonValue(t, mine), nil), "celery.Scheduled and celery.Request have Celery's shape")

	// Go controller to the real Celery worker, and to the Go worker: every
	// command line at once (each controller process costs about a second
	// when built with -race), then the checks in order.
	cases := vocabularyCases()
	controllerOut := make([]map[string]result, len(cases))
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for i, c := range cases {
		controllerOut[i] = map[string]result{}
		goArgs := c.args
		if c.goArgs != nil {
			goArgs = c.goArgs
		}
		for node, args := range map[string][]string{"celery@ref": c.args, "go@ref": goArgs} {
			wg.Go(func() {
				sem <- struct{}{}
				defer func() { <-sem }()
				r := controller(t, append(append([]string{"--broker", url, "--json", "--timeout", "10s", c.kind, c.action}, args...), "-d", node)...)
				mu.Lock()
				controllerOut[i][node] = r
				mu.Unlock()
			})
		}
	}
	wg.Wait()

	for i, c := range cases {
		name := strings.Join(append([]string{c.kind, c.action}, c.args...), " ")
		goArgs := c.args
		if c.goArgs != nil {
			goArgs = c.goArgs
		}
		replies := map[string]any{}
		for node, r := range controllerOut[i] {
			require.Equal(t, 0, r.code, "%s to %s: %s%s", name, node, r.stdout, r.stderr)
			replies[node] = jsonValue(t, jsonObject(t, r.stdout)[node])
		}
		ref := replies["celery@ref"]
		got := replies["go@ref"]
		switch {
		case c.nullOrString && ref == nil:
			assert.IsType(t, "", got, name)
		case c.free:
			assert.Equal(t, "object", kindOf(ref), name)
			assert.Equal(t, "object", kindOf(got), name)
		default:
			assert.Empty(t, shapeDiff("", ref, got, c.dynamic), "%s: Celery replied %v, Go %v", name, ref, got)
		}

		// Celery's command line to the Go worker.
		cmdline := append(append([]string{c.kind, c.action}, goArgs...), "--json", "-d", "go@ref", "--timeout", "10")
		if c.noCLI {
			cmdline = []string{"__hello__", "go@ref", "other@test"} // through Celery's client instead
		}
		out, code := cli.run(t, cmdline...)
		require.Zero(t, code, "celery %s: %s", name, out)
		raw, ok := celeryReply(t, out, "go@ref")
		require.True(t, ok, "celery %s: no reply from go@ref: %s", name, out)
		viaCLI := jsonValue(t, raw)
		switch {
		case c.nullOrString && ref == nil:
			assert.IsType(t, "", viaCLI, name)
		case c.free:
			assert.Equal(t, "object", kindOf(viaCLI), name)
		default:
			assert.Empty(t, shapeDiff("", ref, viaCLI, c.dynamic), "celery %s to the Go worker: Celery replied %v, Go %v", name, ref, viaCLI)
		}
	}

	// What the commands did, seen through the vocabulary itself.
	r := controller(t, "--broker", url, "--json", "inspect", "revoked", "-d", "go@ref")
	var revoked []string
	require.NoError(t, json.Unmarshal(jsonObject(t, r.stdout)["go@ref"], &revoked))
	assert.ElementsMatch(t, []string{"id1", "id2", "id3"}, revoked)
	r = controller(t, "--broker", url, "--json", "inspect", "registered", "rate_limit", "time_limit", "-d", "go@ref")
	assert.Contains(t, string(jsonObject(t, r.stdout)["go@ref"]), `"demo.work [rate_limit=10/m time_limit=20.0]"`)
	r = controller(t, "--broker", url, "--json", "inspect", "active_queues", "-d", "go@ref")
	assert.Contains(t, string(jsonObject(t, r.stdout)["go@ref"]), `"name":"q2"`)

	// The human output is Celery's, word for word.
	for _, args := range [][]string{
		{"inspect", "registered"}, {"inspect", "revoked"}, {"inspect", "conf"}, {"inspect", "report"},
		{"inspect", "active"}, {"inspect", "query_task", "x"}, {"inspect", "ping"},
		{"control", "rate_limit", "nosuch.task", "1/s"}, {"control", "pool_restart"}, {"control", "heartbeat"},
	} {
		want, code := cli.run(t, append(args, "-d", "go@ref", "--timeout", "10")...)
		require.Zero(t, code, want)
		r := controller(t, append([]string{"--broker", url, "--timeout", "10s"}, append(args, "-d", "go@ref")...)...)
		require.Equal(t, 0, r.code, r.stderr)
		assert.Equal(t, want, r.stdout, "%v", args)
	}

	// conf with defaults, from the real Celery worker: a default is
	// float('inf'), which Python's json writes as Infinity. The controller
	// prints it as Celery's command line does, in both outputs.
	want, code := cli.run(t, "inspect", "conf", "true", "-d", "celery@ref", "--timeout", "10")
	require.Zero(t, code, want)
	require.Contains(t, want, ": Infinity", "Celery's defaults hold an infinite setting")
	r = controller(t, "--broker", url, "--timeout", "10s", "inspect", "conf", "true", "-d", "celery@ref")
	require.Equal(t, 0, r.code, r.stderr)
	assert.Equal(t, want, r.stdout, "inspect conf true, human output")
	want, code = cli.run(t, "inspect", "conf", "true", "--json", "-d", "celery@ref", "--timeout", "10")
	require.Zero(t, code, want)
	r = controller(t, "--broker", url, "--json", "--timeout", "10s", "inspect", "conf", "true", "-d", "celery@ref")
	require.Equal(t, 0, r.code, r.stderr)
	lines := strings.Split(strings.TrimSpace(want), "\n")
	var celeryJSON, goJSON any
	require.NoError(t, wire.UnmarshalReply(wire.JSON{}, []byte(lines[len(lines)-1]), &celeryJSON), want)
	if list, ok := celeryJSON.([]any); ok && len(list) == 1 {
		celeryJSON = list[0]
	}
	require.NoError(t, wire.UnmarshalReply(wire.JSON{}, []byte(r.stdout), &goJSON), r.stdout)
	assert.Equal(t, celeryJSON, goJSON, "inspect conf true --json")
	assert.Regexp(t, `:-?Infinity[,}]`, r.stdout, "Infinity printed as Python's json prints it")

	// Worker events from both, in the same shape.
	r = controller(t, "--broker", url, "--json", "events", "--dump", "--duration", "5s")
	require.Equal(t, 0, r.code, r.stderr)
	beats := map[string]any{}
	for _, line := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
		ev := jsonValue(t, []byte(line)).(map[string]any)
		if ev["type"] == "worker-heartbeat" {
			beats[ev["hostname"].(string)] = ev
		}
	}
	require.Contains(t, beats, "celery@ref", r.stdout)
	require.Contains(t, beats, "go@ref", r.stdout)
	assert.Empty(t, shapeDiff("", beats["celery@ref"], beats["go@ref"], nil), "heartbeat events")
	r = controller(t, "--broker", url, "events", "--duration", "3s")
	require.Equal(t, 0, r.code, r.stderr)
	assert.Regexp(t, `(?m)^celery@ref\s+online .* py-celery `, r.stdout)
	assert.Regexp(t, `(?m)^go@ref\s+online .* go-pidbox `, r.stdout)
	assert.Contains(t, r.stdout, "2 workers online, 2 known.")

	// shutdown, both ways: neither replies, both stop.
	out, code = cli.run(t, "control", "shutdown", "-d", "go@ref")
	assert.NotZero(t, code)
	assert.Contains(t, out, "No nodes replied")
	require.NoError(t, gw.Wait(15*time.Second), "the Go worker exits 0 on celery control shutdown:\n%s", gw.Output())
	r = controller(t, "--broker", url, "control", "shutdown", "-d", "celery@ref", "--timeout", "1s")
	assert.Equal(t, 1, r.code, "no reply, as from Celery")
	require.NoError(t, cw.Wait(30*time.Second), "the Celery worker exits on the controller's shutdown:\n%s", cw.Output())
}

// celeryCLIDriver runs Celery's command line (the click commands of
// celery.bin.celery, as `celery ...` runs them) once per JSON-encoded
// argument list read on stdin, in one interpreter: a Python start-up per
// command would cost this test minutes.
const celeryCLIDriver = `
import contextlib, io, json, sys
from celery.bin.celery import celery
print("READY", flush=True)
for line in sys.stdin:
    buf, code = io.StringIO(), 0
    args = json.loads(line)
    if args[0] == "__hello__":  # mingle's call, which the command line does not offer
        from celery_app import app
        print(json.dumps(app.control.inspect(destination=[args[1]], timeout=10).hello(args[2], None)), file=buf)
        print(json.dumps({"out": buf.getvalue(), "code": 0}), flush=True)
        continue
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
        try:
            celery.main(args=["-A", "celery_app"] + json.loads(line), prog_name="celery", standalone_mode=False)
        except SystemExit as e:
            code = e.code or 0
        except Exception as e:
            code = getattr(e, "exit_code", 1) or 1
            print(getattr(e, "message", None) or repr(e))
    print(json.dumps({"out": buf.getvalue(), "code": code}), flush=True)
`

type celeryCLI struct {
	stdin  io.WriteCloser
	stdout *bufio.Reader
}

func startCeleryCLI(t *testing.T, url string) *celeryCLI {
	t.Helper()
	cmd := exec.Command(redistest.Python, "-u", "-c", celeryCLIDriver)
	cmd.Dir = celeryApp
	cmd.Env = append(os.Environ(), "PIDBOX_BROKER="+url)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	require.NoError(t, err)
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { _ = stdin.Close(); _ = cmd.Wait() })
	c := &celeryCLI{stdin: stdin, stdout: bufio.NewReader(stdout)}
	line, err := c.stdout.ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, "READY\n", line)
	return c
}

// run runs `celery -A celery_app ARGS...` and returns its output and exit
// status.
func (c *celeryCLI) run(t *testing.T, args ...string) (string, int) {
	t.Helper()
	b, err := json.Marshal(args)
	require.NoError(t, err)
	_, err = c.stdin.Write(append(b, '\n'))
	require.NoError(t, err)
	line, err := c.stdout.ReadString('\n')
	require.NoError(t, err, "celery %v", args)
	var res struct {
		Out  string `json:"out"`
		Code int    `json:"code"`
	}
	require.NoError(t, json.Unmarshal([]byte(line), &res), line)
	return res.Out, res.Code
}

const stateScript = `
import sys, threading, time
from celery_app import app
state = app.events.State()
host = sys.argv[1]
def run():
    with app.connection() as conn:
        app.events.Receiver(conn, handlers={"*": state.event}).capture(limit=None, timeout=None, wakeup=False)
threading.Thread(target=run, daemon=True).start()
alive = False
end = time.time() + 60
while time.time() < end:
    w = state.workers.get(host)
    if w is not None and w.alive and not alive:
        alive = True
        print("ALIVE", host, flush=True)
    if alive and not w.alive:
        print("OFFLINE", host, flush=True)
        sys.exit(0)
    time.sleep(0.05)
print("TIMEOUT", flush=True)
sys.exit(1)
`

// Celery's own event consumers see the Go worker: `celery events --dump`
// lists its online, heartbeat and offline events, and
// celery.events.state.State holds it alive while it runs and offline
// after SIGTERM.
func TestCeleryEventConsumersSeeGoWorker(t *testing.T) {
	redistest.RequirePython(t, "kombu", "celery", "redis")
	srv := redistest.Start(t)
	srv.AllowNoTTL("_kombu.")
	url := srv.URL(0)
	env := []string{"PIDBOX_BROKER=" + url}
	dump := redistest.StartProcess(t, celeryApp, env, redistest.Python, "-u", "-m", "celery", "-A", "celery_app", "events", "--dump")
	st := redistest.StartProcess(t, celeryApp, env, redistest.Python, "-u", "-c", stateScript, "go@events")
	// Both listen before the worker starts: its online event is sent once.
	require.Eventually(t, func() bool {
		n, err := srv.PatternSubscribers(context.Background())
		return err == nil && n == 2
	}, 30*time.Second, 20*time.Millisecond, "celery events and the State script subscribe:\n%s\n%s", dump.Output(), st.Output())

	w := worker(t, url, "go@events", "--heartbeat-interval", "0.5")
	st.WaitFor("ALIVE go@events", 30*time.Second)
	dump.WaitFor("go@events [", 10*time.Second)
	dump.WaitFor("] heartbeat: active=1", 10*time.Second)
	require.NoError(t, w.Stop(10*time.Second), "the worker exits 0 on SIGTERM:\n%s", w.Output())
	st.WaitFor("OFFLINE go@events", 10*time.Second)
	dump.WaitFor("] shutdown: active=", 10*time.Second)
	out := dump.Output()
	assert.Regexp(t, `go@events \[[^]]+\] started: active=\d, clock=\d+, freq=0.5, loadavg=\[[^]]*\], local_received=[0-9.]+, pid=\d+, processed=\d+, sw_ident=go-pidbox, sw_sys=\w+, sw_ver=\S+, utcoffset=-?\d+`, out)
	assert.Regexp(t, `go@events \[[^]]+\] heartbeat: active=1, clock=\d+, freq=0.5,`, out)
	assert.Regexp(t, `go@events \[[^]]+\] shutdown: active=\d, clock=\d+, freq=0.5,`, out)
	require.NoError(t, st.Wait(10*time.Second), st.Output())
}

// Celery's positional arguments are checked before anything is sent.
func TestCeleryUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{"control", "rate_limit", "tasks.add", "10/m", "extra"},
		{"control", "pool_grow", "many"},
		{"control", "time_limit", "tasks.add", "soon"},
		{"inspect", "conf", "maybe"},
		{"inspect", "ping", "extra"},
		{"control"},
		{"events", "--duration", "-1s"},
	} {
		r := controller(t, append([]string{"--broker", "memory://"}, args...)...)
		assert.Equal(t, 2, r.code, "%v: %s%s", args, r.stdout, r.stderr)
		assert.Contains(t, r.stderr, "controller: ", "%v", args)
	}
	r := controller(t, "--broker", "memory://", "control", "--help")
	require.Equal(t, 0, r.code, r.stderr)
	for _, c := range pidcelery.Commands() {
		if c.Kind == "control" && !c.Hidden {
			assert.Contains(t, r.stdout, "  "+c.Name+" ", "control --help lists %s", c.Name)
		}
	}
}
