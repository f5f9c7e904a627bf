package redis_test

import (
	"context"
	"testing"
	"time"

	"github.com/gopidbox/pidbox"
	"github.com/gopidbox/pidbox/internal/interoptest"
	"github.com/gopidbox/pidbox/internal/redistest"
	pidotel "github.com/gopidbox/pidbox/otel"
	"github.com/gopidbox/pidbox/transport"
	pidredis "github.com/gopidbox/pidbox/transport/redis"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
)

// Trace context rides in the message headers beside clock and expires;
// Kombu and Celery read neither traceparent nor tracestate, and answer a
// traced Go controller as any other. A Kombu client's command, which
// carries no trace context, starts a root span on a traced Go node.
func TestInteropTraced(t *testing.T) {
	redistest.RequirePython(t, "kombu", "celery", "redis")
	srv := redistest.Start(t)
	srv.AllowNoTTL("_kombu.") // bindings the Python processes made
	url := srv.URL(1)         // db 1, as celery_app uses
	env := []string{"PIDBOX_BROKER=" + url}
	worker := redistest.StartProcess(t, "testdata", env, redistest.Python, "-m", "celery", "-A", "celery_app", "worker",
		"--hostname", "celery@traced", "-P", "solo", "--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "info")
	v := variant{Kind: transport.Fanout, Serializer: "json"}
	kombuNode(t, url, "kombu@traced", v)
	worker.WaitFor("celery@traced ready", 60*time.Second)
	interoptest.Answering(t, mailbox(t, open(t, srv, url, pidredis.Options{}), v), "celery@traced")

	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	obs, err := pidotel.New(pidotel.Options{TracerProvider: tp, Propagator: propagation.TraceContext{}})
	require.NoError(t, err)

	tr := open(t, srv, url, pidredis.Options{})
	ctl, err := pidbox.New(tr, pidbox.Options{Logger: quiet, Observer: obs})
	require.NoError(t, err)
	t.Cleanup(func() { _ = ctl.Close() })

	// A traced Go node beside them shows the same message carried the
	// trace context.
	mb, err := pidbox.New(tr, pidbox.Options{Logger: quiet, Observer: obs})
	require.NoError(t, err)
	t.Cleanup(func() { _ = mb.Close() })
	serve(t, mb.NewNode("go@traced", pidbox.NodeOptions{}))

	res, err := ctl.Call(context.Background(), "ping", nil, pidbox.To("celery@traced", "kombu@traced", "go@traced"), pidbox.Timeout(10*time.Second))
	require.NoError(t, err)
	assert.Equal(t, map[string]pidbox.Outcome{"celery@traced": pidbox.Replied, "kombu@traced": pidbox.Replied, "go@traced": pidbox.Replied}, res.Outcomes)
	require.Eventually(t, func() bool { return len(spans.Ended()) == 2 }, 5*time.Second, 10*time.Millisecond)
	byName := map[string]sdktrace.ReadOnlySpan{}
	for _, s := range spans.Ended() {
		byName[s.Name()] = s
	}
	caller := byName["call ping"]
	require.NotNil(t, caller)
	assert.Len(t, caller.Events(), 3, "one event per reply")
	require.NotNil(t, byName["process ping"])
	assert.Equal(t, caller.SpanContext().SpanID(), byName["process ping"].Parent().SpanID())

	// A Kombu client calls the traced Go node.
	kres := kombuCall(t, url, v, map[string]any{"method": "ping", "destination": []string{"go@traced"}})
	assert.Equal(t, map[string]string{"go@traced": `{"ok": "pong"}`}, kres.ByNode())
	require.Eventually(t, func() bool { return len(spans.Ended()) == 3 }, 5*time.Second, 10*time.Millisecond)
	node := spans.Ended()[2]
	assert.Equal(t, "process ping", node.Name())
	assert.False(t, node.Parent().IsValid(), "no trace context came: a root span")
}
