package amqp_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/gopidbox/pidbox"
	"github.com/gopidbox/pidbox/internal/interoptest"
	"github.com/gopidbox/pidbox/internal/redistest"
	"github.com/gopidbox/pidbox/reply"
	"github.com/gopidbox/pidbox/transport"
)

// pyDir holds the Kombu node, Kombu client and Celery app scripts; they
// take any Kombu broker URL.
var pyDir = interoptest.Scripts

type variant = interoptest.Variant

var variants = interoptest.Variants

type echoArgs = interoptest.EchoArgs

// namespace is a namespace of the test's and variant's own: exchanges
// outlive their users on RabbitMQ, and one name cannot be both fanout and
// direct.
func namespace(v variant, test string) string {
	return fmt.Sprintf("%s-%s-%s", test, v.Kind, v.Serializer)
}

func mailbox(t *testing.T, tr transport.Transport, v variant, ns string) *pidbox.Mailbox {
	t.Helper()
	return interoptest.Peer{Namespace: ns}.Mailbox(t, tr, v)
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

// goNode serves a Go node with echo and fail handlers until the test ends.
func goNode(t *testing.T, mb *pidbox.Mailbox, name string) *pidbox.Node {
	t.Helper()
	return interoptest.GoNode(t, mb, name)
}

// serve runs n until the test ends and waits until it listens.
func serve(t *testing.T, n *pidbox.Node) {
	t.Helper()
	interoptest.Serve(t, n)
}

func names(rs []reply.Reply) []string { return interoptest.Names(rs) }

func keys(m map[string]string) []string { return interoptest.Keys(m) }

func kombuNode(t *testing.T, url, hostname string, v variant, ns string) *redistest.Process {
	t.Helper()
	return interoptest.Peer{URL: url, Namespace: ns}.KombuNode(t, hostname, v)
}

func kombuCall(t *testing.T, url string, v variant, req map[string]any) interoptest.KombuResult {
	t.Helper()
	return interoptest.Peer{URL: url}.KombuCall(t, v, req)
}
