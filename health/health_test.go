package health_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/gopidbox/pidbox"
	"github.com/gopidbox/pidbox/health"
	"github.com/gopidbox/pidbox/internal/redistest"
	"github.com/gopidbox/pidbox/transport"
	"github.com/gopidbox/pidbox/transport/memory"
	pidredis "github.com/gopidbox/pidbox/transport/redis"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var quiet = slog.New(slog.DiscardHandler)

func get(t *testing.T, url string) (int, health.Report) {
	t.Helper()
	resp, err := http.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	var r health.Report
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&r))
	return resp.StatusCode, r
}

func serve(t *testing.T, tr transport.Transport, name string) (*pidbox.Node, func()) {
	t.Helper()
	mb, err := pidbox.New(tr, pidbox.Options{Logger: quiet})
	require.NoError(t, err)
	n := mb.NewNode(name, pidbox.NodeOptions{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = n.Serve(ctx) }()
	<-n.Ready()
	return n, func() { cancel(); <-done; _ = mb.Close() }
}

func TestBeforeDuringAfterServe(t *testing.T) {
	tr := memory.New(memory.Options{Logger: quiet})
	defer tr.Close()
	mb, err := pidbox.New(tr, pidbox.Options{Logger: quiet})
	require.NoError(t, err)
	defer mb.Close()
	n := mb.NewNode("w@h", pidbox.NodeOptions{})
	srv := httptest.NewServer(health.Handler(n))
	defer srv.Close()

	code, r := get(t, srv.URL)
	assert.Equal(t, http.StatusServiceUnavailable, code, "not serving yet")
	assert.False(t, r.Healthy)

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = n.Serve(ctx) }()
	<-n.Ready()
	code, r = get(t, srv.URL)
	assert.Equal(t, http.StatusOK, code)
	assert.True(t, r.Healthy)
	assert.Equal(t, "w@h", r.Node)

	cancel()
	<-done
	code, _ = get(t, srv.URL)
	assert.Equal(t, http.StatusServiceUnavailable, code, "stopped")
}

// A node whose pub/sub connection is killed fails its health check until
// it has subscribed again.
func TestKilledSubscriptionFailsUntilResubscribed(t *testing.T) {
	srv := redistest.Start(t)
	ctx := context.Background()
	tr, err := pidredis.Open(ctx, srv.URL(0), pidredis.Options{Logger: quiet, HealthCheckInterval: time.Second})
	require.NoError(t, err)
	defer tr.Close()
	n, stop := serve(t, tr, "w@h")
	defer stop()
	hs := httptest.NewServer(health.Handler(n))
	defer hs.Close()
	code, r := get(t, hs.URL)
	require.Equal(t, http.StatusOK, code)
	assert.GreaterOrEqual(t, r.SecondsSinceSeen, 0.0)

	rdb := srv.Client(0)
	defer rdb.Close()
	// Stop the re-subscription from succeeding at once: kill every pub/sub
	// client for as long as the test wants it down.
	sawDown := false
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) && !sawDown {
		require.NoError(t, rdb.ClientKillByFilter(ctx, "TYPE", "pubsub").Err())
		if code, _ := get(t, hs.URL); code == http.StatusServiceUnavailable {
			sawDown = true
		}
	}
	require.True(t, sawDown, "the health check saw the subscription down")
	require.Eventually(t, func() bool {
		code, _ := get(t, hs.URL)
		return code == http.StatusOK
	}, 10*time.Second, 20*time.Millisecond, "healthy again once re-subscribed")
}
