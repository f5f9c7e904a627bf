package amqp_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/gopidbox/pidbox/internal/rabbittest"
	"github.com/gopidbox/pidbox/transport"
	pidamqp "github.com/gopidbox/pidbox/transport/amqp"
	"github.com/gopidbox/pidbox/transport/transporttest"
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
