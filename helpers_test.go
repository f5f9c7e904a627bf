package pidbox_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/gopidbox/pidbox"
	"github.com/gopidbox/pidbox/reply"
	"github.com/gopidbox/pidbox/transport"
	"github.com/gopidbox/pidbox/transport/memory"
	"github.com/stretchr/testify/require"
)

var quiet = slog.New(slog.DiscardHandler)

// celeryExchange is the broadcast exchange of the default mailbox.
var celeryExchange = transport.Exchange{Name: "celery.pidbox", Kind: transport.Fanout}

// fleet is a memory broker, a controlling mailbox, and nodes serving on
// mailboxes of their own, as separate processes would have.
type fleet struct {
	t     *testing.T
	tr    transport.Transport
	opts  pidbox.Options
	ctl   *pidbox.Mailbox
	nodes map[string]*pidbox.Node
	done  map[string]*served
}

// served is the outcome of one node's Serve.
type served struct {
	ch  chan struct{} // closed when Serve returned
	err error
}

// wait returns Serve's error, or fails the test if it has not returned
// within d.
func (s *served) wait(t *testing.T, d time.Duration) error {
	t.Helper()
	select {
	case <-s.ch:
		return s.err
	case <-time.After(d):
		t.Fatalf("node still serving after %s", d)
		return nil
	}
}

func newFleet(t *testing.T, opts pidbox.Options, names ...string) *fleet {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = quiet
	}
	tr := memory.New(memory.Options{Logger: quiet})
	t.Cleanup(func() { _ = tr.Close() })
	ctl, err := pidbox.New(tr, opts)
	require.NoError(t, err)
	t.Cleanup(func() { _ = ctl.Close() })
	f := &fleet{t: t, tr: tr, opts: opts, ctl: ctl, nodes: map[string]*pidbox.Node{}, done: map[string]*served{}}
	for _, n := range names {
		f.add(n, pidbox.NodeOptions{})
	}
	return f
}

// node makes a node without starting it, so a test can register handlers.
func (f *fleet) node(name string, opts pidbox.NodeOptions) *pidbox.Node {
	mb, err := pidbox.New(f.tr, f.opts)
	require.NoError(f.t, err)
	f.t.Cleanup(func() { _ = mb.Close() })
	n := mb.NewNode(name, opts)
	f.nodes[name] = n
	return n
}

// add makes a node and starts it.
func (f *fleet) add(name string, opts pidbox.NodeOptions) *pidbox.Node {
	n := f.node(name, opts)
	f.start(n)
	return n
}

// start serves n until the test ends, and waits until it is listening.
func (f *fleet) start(n *pidbox.Node) {
	f.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	s := &served{ch: make(chan struct{})}
	f.done[n.Hostname()] = s
	go func() { s.err = n.Serve(ctx); close(s.ch) }()
	f.t.Cleanup(func() {
		cancel()
		select {
		case <-s.ch:
		case <-time.After(10 * time.Second):
			f.t.Errorf("node %s did not stop", n.Hostname())
		}
	})
	select {
	case <-n.Ready():
	case <-s.ch:
		f.t.Fatalf("node %s: %v", n.Hostname(), s.err)
	case <-time.After(5 * time.Second):
		f.t.Fatalf("node %s not ready", n.Hostname())
	}
}

func ctxTimeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// replies unpacks a Call's result for tests that look at the replies
// alone, keeping the error.
func replies(res *pidbox.Result, err error) ([]reply.Reply, error) {
	if res == nil {
		return nil, err
	}
	return res.Replies, err
}
