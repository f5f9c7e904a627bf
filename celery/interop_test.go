package celery_test

// Interop with real Celery processes (Debian's python3-celery under
// /usr/bin/python3) on a real redis-server.

import (
	"context"
	"testing"
	"time"

	"github.com/gopidbox/pidbox/celery"
	"github.com/gopidbox/pidbox/internal/redistest"
	"github.com/gopidbox/pidbox/transport"
	pidredis "github.com/gopidbox/pidbox/transport/redis"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// celeryApp holds the Celery app the interop tests share.
const celeryApp = "../transport/redis/testdata"

func openRedis(t *testing.T, url string) *pidredis.Transport {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	tr, err := pidredis.Open(ctx, url, pidredis.Options{Logger: quiet})
	require.NoError(t, err)
	t.Cleanup(func() { _ = tr.Close() })
	return tr
}

// waitSubscribed waits until exactly n clients are pattern-subscribed.
func waitSubscribed(t *testing.T, srv *redistest.Server, n int) {
	t.Helper()
	require.Eventually(t, func() bool {
		got, err := srv.PatternSubscribers(context.Background())
		return err == nil && got == n
	}, 20*time.Second, 20*time.Millisecond)
}

// `celery events --dump` lists a Go emitter's online, heartbeat and
// offline events, in either serializer.
func TestCeleryEventsDumpSeesGoWorker(t *testing.T) {
	redistest.RequirePython(t, "kombu", "celery", "redis")
	srv := redistest.Start(t)
	srv.AllowNoTTL("_kombu.") // bindings the Python processes made
	url := srv.URL(0)
	tr := openRedis(t, url)
	assert.Equal(t, transport.Fanout, celery.EventExchange(tr).Kind, "Celery sends events through a fanout exchange on Redis")

	// A Go receiver hears the same events (pattern-subscribed as Kombu).
	got := receive(t, tr, celery.ReceiveOptions{})
	waitSubscribed(t, srv, 1)

	// Celery's receivers accept json and their own event_serializer.
	for _, ser := range []string{"json", "msgpack"} {
		dump := redistest.StartProcess(t, celeryApp, []string{"PIDBOX_BROKER=" + url, "PIDBOX_EVENT_SERIALIZER=" + ser}, redistest.Python,
			"-u", "-m", "celery", "-A", "celery_app", "events", "--dump")
		dump.WaitFor("starting capture", 30*time.Second)
		waitSubscribed(t, srv, 2)

		host := "go-" + ser + "@events"
		em, err := celery.NewEmitter(tr, celery.EmitterOptions{Hostname: host, Serializer: ser, Interval: 200 * time.Millisecond})
		require.NoError(t, err)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- em.Run(ctx) }()
		dump.WaitFor(host+" [", 10*time.Second)
		dump.WaitFor("] heartbeat: active=0", 10*time.Second)
		cancel()
		require.NoError(t, <-done)
		dump.WaitFor("] shutdown: active=0", 10*time.Second)
		out := dump.Output()
		assert.Regexp(t, host+` \[[^]]+\] started: active=0, clock=\d+, freq=0.2, loadavg=\[[^]]*\], local_received=[0-9.]+, pid=\d+, processed=0, sw_ident=go-pidbox, sw_sys=\w+, sw_ver=dev, utcoffset=-?\d+`, out)
		assert.Regexp(t, host+` \[[^]]+\] heartbeat: active=0`, out)
		assert.Regexp(t, host+` \[[^]]+\] shutdown: active=0`, out)
		_ = dump.Stop(10 * time.Second) // celery events dies of the SIGTERM
		waitSubscribed(t, srv, 1)
		for _, typ := range []string{"worker-online", "worker-heartbeat", "worker-offline"} {
			assert.Equal(t, host, got.next(t, typ).Hostname())
		}
	}
}
