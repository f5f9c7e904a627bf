package amqp_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/gopidbox/pidbox"
	"github.com/gopidbox/pidbox/internal/rabbittest"
	"github.com/gopidbox/pidbox/transport"
	pidamqp "github.com/gopidbox/pidbox/transport/amqp"
	"github.com/gopidbox/pidbox/transport/transporttest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

// mainRun runs the tests with the binary's one shared broker.
type mainRun struct{ m *testing.M }

func (r mainRun) Run() int { return rabbittest.Main(r.m.Run) }

func TestMain(m *testing.M) { goleak.VerifyTestMain(mainRun{m}) }

var quiet = slog.New(slog.DiscardHandler)

// withManagement is the broker's URL with its management API named.
func withManagement(srv *rabbittest.Server) string {
	return srv.URL() + "?management=" + srv.ManagementURL()
}

func open(t testing.TB, url string, opts pidamqp.Options) *pidamqp.Transport {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = quiet
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tr, err := pidamqp.Open(ctx, url, opts)
	require.NoError(t, err)
	t.Cleanup(func() { _ = tr.Close() })
	return tr
}

func TestConformance(t *testing.T) {
	srv := rabbittest.Get(t)
	transporttest.Run(t, func(t *testing.T) transport.Transport {
		return open(t, withManagement(srv), pidamqp.Options{})
	})
}

// Without the management API the transport cannot list bindings: Bindings
// says so with transport.ErrUnsupported, and a broadcast with no limit
// still returns well before its deadline, a quiet gap after the last reply.
func TestWithoutManagement(t *testing.T) {
	srv := rabbittest.Get(t)
	tr := open(t, srv.URL(), pidamqp.Options{})
	ex := transport.Exchange{Name: "nomgmt.pidbox", Kind: transport.Fanout}
	_, err := tr.Bindings(context.Background(), ex)
	require.ErrorIs(t, err, transport.ErrUnsupported)
	assert.Contains(t, err.Error(), "management")

	v := variant{Kind: transport.Fanout, Serializer: "json"}
	mb := mailbox(t, tr, v, "nomgmt")
	goNode(t, mb, "a@h")
	goNode(t, mb, "b@h")
	start := time.Now()
	rs, err := replies(mb.Call(context.Background(), "ping", nil, pidbox.Timeout(5*time.Second)))
	require.NoError(t, err)
	assert.Equal(t, []string{"a@h", "b@h"}, names(rs))
	t.Logf("broadcast took %s", time.Since(start))
	assert.Less(t, time.Since(start), 3*time.Second, "ended by the quiet gap, not the deadline")
}

// Node queues are exclusive: a second process serving a node name that is
// already served is refused with an error naming the queue, rather than
// splitting the node's messages with the first.
func TestDuplicateNodeNameRefused(t *testing.T) {
	srv := rabbittest.Get(t)
	v := variant{Kind: transport.Fanout, Serializer: "json"}
	goNode(t, mailbox(t, open(t, srv.URL(), pidamqp.Options{}), v, "dup"), "twin@h")
	second := mailbox(t, open(t, srv.URL(), pidamqp.Options{}), v, "dup").NewNode("twin@h", pidbox.NodeOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := second.Serve(ctx)
	require.Error(t, err)
	assert.Contains(t, err.Error(), `queue "twin@h.dup.pidbox"`)
	assert.Contains(t, err.Error(), "RESOURCE_LOCKED")
}
