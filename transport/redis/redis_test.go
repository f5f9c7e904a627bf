package redis_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/gopidbox/pidbox"
	"github.com/gopidbox/pidbox/internal/redistest"
	"github.com/gopidbox/pidbox/reply"
	"github.com/gopidbox/pidbox/transport"
	pidredis "github.com/gopidbox/pidbox/transport/redis"
	"github.com/gopidbox/pidbox/transport/transporttest"
	goredis "github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goredis.SetLogger(quietRedis{})
	code := m.Run()
	deployments.close() // the Sentinel and Cluster deployments some tests started
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

var quiet = slog.New(slog.DiscardHandler)

func open(t *testing.T, srv *redistest.Server, url string, opts pidredis.Options) *pidredis.Transport {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = quiet
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	tr, err := pidredis.Open(ctx, url, opts)
	require.NoError(t, err)
	t.Cleanup(func() { _ = tr.Close() })
	return tr
}

func TestConformance(t *testing.T) {
	srv := redistest.Start(t)
	transporttest.Run(t, func(t *testing.T) transport.Transport {
		return open(t, srv, srv.URL(0), pidredis.Options{})
	})
	keys, err := srv.KeysWithoutTTL(context.Background(), 0, "*")
	require.NoError(t, err)
	assert.Empty(t, keys, "keys left without a TTL after the suite")
}

func TestConformanceWithPrefixes(t *testing.T) {
	srv := redistest.Start(t)
	transporttest.Run(t, func(t *testing.T) transport.Transport {
		return open(t, srv, srv.URL(3)+"?global_keyprefix=app:&fanout_prefix=false", pidredis.Options{})
	})
}

// A transport on a client the caller already has passes the same suite,
// and leaves that client open when it closes.
func TestConformanceFromClient(t *testing.T) {
	srv := redistest.Start(t)
	client := goredis.NewClient(&goredis.Options{Addr: srv.Addr(), DB: 5, ContextTimeoutEnabled: true, Protocol: 2})
	defer client.Close()
	transporttest.Run(t, func(t *testing.T) transport.Transport {
		return pidredis.NewFromClient(client, pidredis.Options{Logger: quiet})
	})
	require.NoError(t, client.Ping(context.Background()).Err(), "the caller's client is still usable")
	tr := pidredis.NewFromClient(client, pidredis.Options{Logger: quiet})
	require.NoError(t, tr.Close())
	require.NoError(t, client.Ping(context.Background()).Err())
	assert.Equal(t, srv.Addr(), tr.Addr())
}

// replies unpacks a Call's result for tests that look at the replies
// alone, keeping the error.
func replies(res *pidbox.Result, err error) ([]reply.Reply, error) {
	if res == nil {
		return nil, err
	}
	return res.Replies, err
}
