package amqp_test

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
	"github.com/stretchr/testify/require"
)

// pyDir holds the Kombu node, Kombu client and Celery app scripts that the
// Redis interop tests use; they take any Kombu broker URL.
const pyDir = "../redis/testdata"

type variant struct {
	kind       transport.Kind
	serializer string
}

func (v variant) String() string { return string(v.kind) + "/" + v.serializer }

// namespace is a namespace of the variant's own: exchanges outlive their
// users on RabbitMQ, and one name cannot be both fanout and direct.
func (v variant) namespace(test string) string {
	return fmt.Sprintf("%s-%s-%s", test, v.kind, v.serializer)
}

var variants = []variant{
	{transport.Fanout, "json"}, {transport.Fanout, "msgpack"},
	{transport.Direct, "json"}, {transport.Direct, "msgpack"},
}

func mailbox(t *testing.T, tr transport.Transport, v variant, ns string) *pidbox.Mailbox {
	t.Helper()
	mb, err := pidbox.New(tr, pidbox.Options{Namespace: ns, Type: v.kind, Serializer: v.serializer, Logger: quiet})
	require.NoError(t, err)
	t.Cleanup(func() { _ = mb.Close() })
	return mb
}

func replies(res *pidbox.Result, err error) ([]reply.Reply, error) {
	if res == nil {
		return nil, err
	}
	return res.Replies, err
}

func ping(ctl *pidbox.Mailbox, node string, timeout time.Duration) error {
	rs, err := replies(ctl.Call(context.Background(), "ping", nil, pidbox.To(node), pidbox.Timeout(timeout)))
	if err != nil {
		return err
	}
	if len(rs) != 1 {
		return fmt.Errorf("%d replies", len(rs))
	}
	return rs[0].Err
}

type echoArgs struct {
	A int    `json:"a"`
	B string `json:"b"`
}

// goNode serves a Go node with echo and fail handlers until the test ends.
func goNode(t *testing.T, mb *pidbox.Mailbox, name string) *pidbox.Node {
	t.Helper()
	n := mb.NewNode(name, pidbox.NodeOptions{})
	n.Register("echo", pidbox.Typed(func(_ context.Context, a echoArgs) (echoArgs, error) { return a, nil }))
	n.RegisterFunc("fail", func(context.Context, *pidbox.Request) (any, error) { return nil, fmt.Errorf("bad thing") })
	serve(t, n)
	return n
}

// serve runs n until the test ends and waits until it listens.
func serve(t *testing.T, n *pidbox.Node) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	var err error
	go func() { err = n.Serve(ctx); close(done) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Errorf("node %s still serving 10s after its context ended", n.Hostname())
		}
	})
	select {
	case <-n.Ready():
	case <-done:
		t.Fatalf("node %s: %v", n.Hostname(), err)
	}
}

func names(rs []reply.Reply) []string {
	var out []string
	for _, r := range rs {
		out = append(out, r.Node)
	}
	sort.Strings(out)
	return out
}

func kombuNode(t *testing.T, url, hostname string, v variant, ns string) *redistest.Process {
	t.Helper()
	p := redistest.StartProcess(t, pyDir, nil, redistest.Python, "kombu_node.py", url, hostname, string(v.kind), v.serializer, ns)
	p.WaitFor("READY", 20*time.Second)
	t.Cleanup(func() { _ = p.Stop(5 * time.Second) })
	return p
}

type kombuResult struct {
	Replies []map[string]json.RawMessage `json:"replies"`
	Clock   uint64                       `json:"clock"`
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
	cmd.Dir = pyDir
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "kombu client: %s", out)
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	var res kombuResult
	require.NoError(t, json.Unmarshal([]byte(lines[len(lines)-1]), &res), "kombu client: %s", out)
	return res
}

func keys(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
