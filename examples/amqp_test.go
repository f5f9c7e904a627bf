package examples_test

import (
	"testing"
	"time"

	"github.com/gopidbox/pidbox/internal/rabbittest"
	"github.com/gopidbox/pidbox/internal/redistest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Celery's command line reaches the Go example worker on RabbitMQ, and
// the controller takes Kombu's spelling of the broker URL.
func TestCeleryCommandLineAgainstGoWorkerOnRabbitMQ(t *testing.T) {
	redistest.RequirePython(t, "kombu", "celery", "amqp")
	srv := rabbittest.Get(t)
	url := srv.URL()
	w := worker(t, url+"?management="+srv.ManagementURL(), "go@rabbit")

	out, err := celery(t, url, "inspect", "ping")
	require.NoError(t, err, out)
	assert.Contains(t, out, "go@rabbit: OK")
	assert.Contains(t, out, "pong")
	out, err = celery(t, url, "inspect", "stats", "-d", "go@rabbit")
	require.NoError(t, err, out)
	assert.Contains(t, out, `"transport": "amqp"`, "Celery-shaped stats")

	r := controller(t, "--broker", "py"+url+"?management="+srv.ManagementURL(), "ping")
	require.Equal(t, 0, r.code, r.stderr)
	assert.Contains(t, r.stdout, "go@rabbit: OK pong")

	// Celery's shutdown sends no reply: "No nodes replied" (exit status 69).
	out, _ = celery(t, url, "control", "shutdown", "-d", "go@rabbit")
	assert.Contains(t, out, "No nodes replied")
	require.NoError(t, w.Wait(15*time.Second), "worker exits 0 on celery control shutdown:\n%s", w.Output())
}
