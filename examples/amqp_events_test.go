package examples_test

import (
	"strings"
	"testing"
	"time"

	"github.com/gopidbox/pidbox/internal/rabbittest"
	"github.com/gopidbox/pidbox/internal/redistest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// On RabbitMQ celeryev is a durable topic exchange, which Celery's event
// receiver declares first here: `celery events --dump` lists the Go
// worker's events, and the Go controller's events view lists the worker.
func TestCeleryEventsOnRabbitMQ(t *testing.T) {
	redistest.RequirePython(t, "kombu", "celery", "amqp")
	srv := rabbittest.Get(t)
	url := srv.URL()
	dump := redistest.StartProcess(t, celeryApp, []string{"PIDBOX_BROKER=" + url}, redistest.Python, "-u", "-m", "celery", "-A", "celery_app", "events", "--dump")
	dump.WaitFor("starting capture", 30*time.Second)
	// Kombu declares, binds and consumes after it says so, and RabbitMQ
	// offers nothing to poll for the last step; the online event is sent
	// once, so give the receiver time to be there.
	time.Sleep(2 * time.Second)

	w := worker(t, url+"?management="+srv.ManagementURL(), "go@rabbitev", "--heartbeat-interval", "0.5")
	dump.WaitFor("go@rabbitev [", 20*time.Second)
	dump.WaitFor("] heartbeat: active=", 10*time.Second)
	r := controller(t, "--broker", url, "events", "--duration", "2s")
	require.Equal(t, 0, r.code, r.stderr)
	assert.Regexp(t, `(?m)^go@rabbitev\s+online `, r.stdout)
	require.NoError(t, w.Stop(10*time.Second), w.Output())
	dump.WaitFor("] shutdown: active=", 10*time.Second)
	assert.Regexp(t, `go@rabbitev \[[^]]+\] started: active=\d, clock=\d+, freq=0.5,`, dump.Output())
	assert.False(t, strings.Contains(w.Output(), "event not sent"), "every event sent:\n%s", w.Output())
}
