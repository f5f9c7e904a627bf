// Package interoptest runs the same interop scenarios against real Kombu
// processes (Debian's python3-kombu under /usr/bin/python3) on every
// broker: a Go controller calling Kombu nodes, and a Kombu client calling Go
// nodes, on fanout and direct mailboxes, in json and msgpack. The broker's
// own tests say how to reach it (Peer); the scenarios are written once.
package interoptest

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/gopidbox/pidbox"
	"github.com/gopidbox/pidbox/internal/redistest"
	"github.com/gopidbox/pidbox/reply"
	"github.com/gopidbox/pidbox/transport"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Scripts is the directory of the Python peers: kombu_node.py,
// kombu_client.py and celery_app.py. They take any Kombu broker URL.
var Scripts = func() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "transport", "redis", "testdata")
}()

// Variant is a mailbox type and serializer.
type Variant struct {
	Kind       transport.Kind
	Serializer string
}

// String returns "fanout/json" and the like, for subtest names.
func (v Variant) String() string { return string(v.Kind) + "/" + v.Serializer }

// Variants are the four combinations the scenarios run.
var Variants = []Variant{
	{transport.Fanout, "json"}, {transport.Fanout, "msgpack"},
	{transport.Direct, "json"}, {transport.Direct, "msgpack"},
}

// Peer says how a scenario reaches one broker.
type Peer struct {
	// URL is the broker as Kombu's processes name it.
	URL string
	// Open returns a transport on the same broker for the Go side; the
	// test closes it.
	Open func(t *testing.T) transport.Transport
	// Namespace is the pidbox namespace to use; "" means Celery's.
	Namespace string
}

func (p Peer) namespace() string {
	if p.Namespace == "" {
		return pidbox.DefaultNamespace
	}
	return p.Namespace
}

// Mailbox returns a mailbox of the variant on tr, closed when the test ends.
func (p Peer) Mailbox(t *testing.T, tr transport.Transport, v Variant) *pidbox.Mailbox {
	t.Helper()
	mb, err := pidbox.New(tr, pidbox.Options{
		Namespace: p.namespace(), Type: v.Kind, Serializer: v.Serializer,
		Logger: slog.New(slog.DiscardHandler),
	})
	require.NoError(t, err)
	t.Cleanup(func() { _ = mb.Close() })
	return mb
}

// KombuNode runs a Kombu pidbox node (echo, fail, clock, ping) until the
// test ends.
func (p Peer) KombuNode(t *testing.T, hostname string, v Variant) *redistest.Process {
	t.Helper()
	proc := redistest.StartProcess(t, Scripts, nil, redistest.Python, "kombu_node.py", p.URL, hostname, string(v.Kind), v.Serializer, p.namespace())
	proc.WaitFor("READY", 20*time.Second)
	t.Cleanup(func() { _ = proc.Stop(5 * time.Second) })
	return proc
}

// KombuResult is what kombu_client.py printed: the replies Kombu gathered
// and its clock afterwards.
type KombuResult struct {
	Replies []map[string]json.RawMessage `json:"replies"`
	Clock   uint64                       `json:"clock"`
	Elapsed float64                      `json:"elapsed"`
}

// ByNode flattens Kombu's [{node: value}, ...] into {node: value}.
func (r KombuResult) ByNode() map[string]string {
	out := map[string]string{}
	for _, m := range r.Replies {
		for k, v := range m {
			out[k] = string(v)
		}
	}
	return out
}

// KombuCall makes one call with a Kombu client (kombu_client.py); req
// holds Mailbox._broadcast's arguments.
func (p Peer) KombuCall(t *testing.T, v Variant, req map[string]any) KombuResult {
	t.Helper()
	if _, ok := req["namespace"]; !ok {
		req["namespace"] = p.namespace()
	}
	raw, err := json.Marshal(req)
	require.NoError(t, err)
	cmd := exec.Command(redistest.Python, "kombu_client.py", p.URL, string(v.Kind), v.Serializer, string(raw))
	cmd.Dir = Scripts
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "kombu client: %s", out)
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	var res KombuResult
	require.NoError(t, json.Unmarshal([]byte(lines[len(lines)-1]), &res), "kombu client: %s", out)
	return res
}

// EchoArgs are the arguments of the Go nodes' echo command.
type EchoArgs struct {
	A int    `json:"a"`
	B string `json:"b"`
}

// GoNode serves a Go node with echo and fail handlers until the test ends.
func GoNode(t *testing.T, mb *pidbox.Mailbox, name string) *pidbox.Node {
	t.Helper()
	n := mb.NewNode(name, pidbox.NodeOptions{})
	n.Register("echo", pidbox.Typed(func(_ context.Context, a EchoArgs) (EchoArgs, error) { return a, nil }))
	n.RegisterFunc("fail", func(context.Context, *pidbox.Request) (any, error) { return nil, fmt.Errorf("bad thing") })
	Serve(t, n)
	return n
}

// Serve runs n until the test ends and waits until it listens. The function
// it returns waits up to d for Serve to return, and returns its error.
func Serve(t *testing.T, n *pidbox.Node) (stopped func(d time.Duration) error) {
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

// Answering waits until node answers a ping through mb. A Celery worker
// says it is ready, as Kombu binds its queue, before it subscribes to the
// broadcast channel: a broadcast in between finds the node and misses it.
func Answering(t *testing.T, mb *pidbox.Mailbox, node string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		res, err := mb.Call(context.Background(), "ping", nil, pidbox.To(node), pidbox.Timeout(250*time.Millisecond))
		if err == nil && len(res.Replies) == 1 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s does not answer a ping: %v", node, err)
		}
	}
}

// Names lists the replying nodes, sorted.
func Names(rs []reply.Reply) []string {
	out := make([]string, 0, len(rs))
	for _, r := range rs {
		out = append(out, r.Node)
	}
	sort.Strings(out)
	return out
}

// Keys lists a map's keys, sorted.
func Keys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// GoControllerKombuNodes: a Go controller pings, calls, fails, and
// addresses Kombu nodes by glob and pcre, and moves their clocks.
func GoControllerKombuNodes(t *testing.T, p Peer, v Variant) {
	p.KombuNode(t, "py1@h", v)
	p.KombuNode(t, "py2@x", v)
	ctl := p.Mailbox(t, p.Open(t), v)
	ctx := context.Background()
	call := func(method string, args any, opts ...pidbox.CallOption) []reply.Reply {
		t.Helper()
		res, err := ctl.Call(ctx, method, args, append(opts, pidbox.Timeout(5*time.Second))...)
		require.NoError(t, err)
		return res.Replies
	}

	start := time.Now()
	rs := call("ping", nil)
	assert.Equal(t, []string{"py1@h", "py2@x"}, Names(rs))
	assert.Less(t, time.Since(start), 3*time.Second, "returns once the known nodes replied")
	for _, r := range rs {
		ok, err := reply.As[pidbox.OK](r)
		require.NoError(t, err)
		assert.Equal(t, "pong", ok.OK)
	}

	rs = call("echo", EchoArgs{A: 1, B: "x"}, pidbox.To("py1@h"))
	require.Len(t, rs, 1)
	got, err := reply.As[EchoArgs](rs[0])
	require.NoError(t, err)
	assert.Equal(t, EchoArgs{A: 1, B: "x"}, got)

	rs = call("fail", nil, pidbox.To("py1@h"))
	require.Len(t, rs, 1)
	var re *reply.RemoteError
	require.ErrorAs(t, rs[0].Err, &re)
	assert.Equal(t, "ValueError('bad thing')", re.Message)

	rs = call("nosuch", nil, pidbox.To("py2@x"))
	require.Len(t, rs, 1)
	assert.EqualError(t, rs[0].Err, "py2@x: KeyError('nosuch')")

	assert.Equal(t, []string{"py1@h"}, Names(call("ping", nil, pidbox.Glob("py1*"))))
	assert.Equal(t, []string{"py2@x"}, Names(call("ping", nil, pidbox.PCRE(`py.@x`))))

	// The Kombu node adjusts its clock from ours.
	ctl.Clock().Adjust(1000)
	rs = call("clock", nil, pidbox.To("py1@h"))
	require.Len(t, rs, 1)
	c, err := reply.As[pidbox.ClockReply](rs[0])
	require.NoError(t, err)
	assert.Greater(t, c.Clock, uint64(1000))
}

// KombuClientGoNodes: a Kombu client pings, calls, fails, and addresses Go
// nodes by glob and pcre, and moves their clocks.
func KombuClientGoNodes(t *testing.T, p Peer, v Variant) {
	mb := p.Mailbox(t, p.Open(t), v)
	GoNode(t, mb, "go1@h")
	GoNode(t, mb, "go2@x")
	call := func(req map[string]any) map[string]string { return p.KombuCall(t, v, req).ByNode() }

	assert.Equal(t, map[string]string{"go1@h": `{"ok": "pong"}`, "go2@x": `{"ok": "pong"}`}, call(map[string]any{"method": "ping", "timeout": 1}))
	assert.Equal(t, map[string]string{"go1@h": `{"a": 7, "b": "y"}`},
		call(map[string]any{"method": "echo", "arguments": map[string]any{"a": 7, "b": "y"}, "destination": []string{"go1@h"}}))
	assert.Equal(t, map[string]string{"go2@x": `{"error": "bad thing"}`}, call(map[string]any{"method": "fail", "destination": []string{"go2@x"}}))
	assert.Equal(t, map[string]string{"go2@x": `{"error": "unknown method \"nosuch\""}`}, call(map[string]any{"method": "nosuch", "destination": []string{"go2@x"}}))
	assert.Contains(t, call(map[string]any{"method": "echo", "arguments": map[string]any{"a": "not a number"}, "destination": []string{"go2@x"}})["go2@x"],
		"bad arguments for echo")
	assert.Equal(t, []string{"go2@x"}, Keys(call(map[string]any{"method": "ping", "pattern": "go2*", "matcher": "glob", "timeout": 1})))
	assert.Equal(t, []string{"go1@h"}, Keys(call(map[string]any{"method": "ping", "pattern": "go1", "matcher": "pcre", "timeout": 1})))

	// The Go node adjusts its clock from the Kombu client's.
	res := p.KombuCall(t, v, map[string]any{"method": "clock", "destination": []string{"go1@h"}, "clock": 5000})
	var c pidbox.ClockReply
	require.NoError(t, json.Unmarshal([]byte(res.ByNode()["go1@h"]), &c))
	assert.Greater(t, c.Clock, uint64(5000))
	assert.Greater(t, res.Clock, c.Clock, "the Kombu client adjusted past the reply's clock")
}
