package amqp_test

import (
	"context"
	"testing"
	"time"

	"github.com/gopidbox/pidbox"
	"github.com/gopidbox/pidbox/internal/rabbittest"
	"github.com/gopidbox/pidbox/internal/redistest"
	pidotel "github.com/gopidbox/pidbox/otel"
	"github.com/gopidbox/pidbox/transport"
	pidamqp "github.com/gopidbox/pidbox/transport/amqp"
	amqp091 "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
)

// On AMQP the trace context rides in the frame's headers table, as
// strings beside clock and expires: a Kombu node on py-amqp answers a
// traced call, and a Go node's span is the caller's child.
func TestTracedOverAMQP(t *testing.T) {
	redistest.RequirePython(t, "kombu", "amqp", "msgpack")
	srv := rabbittest.Get(t)
	v := variant{Kind: transport.Fanout, Serializer: "json"}
	ns := namespace(v, "otel")
	kombuNode(t, srv.URL(), "py@h", v, ns) // declares the exchanges, as Kombu does

	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	obs, err := pidotel.New(pidotel.Options{TracerProvider: tp, Propagator: propagation.TraceContext{}})
	require.NoError(t, err)
	opts := pidbox.Options{Namespace: ns, Type: v.Kind, Serializer: v.Serializer, Logger: quiet, Observer: obs}
	tr := open(t, withManagement(srv), pidamqp.Options{})
	nmb, err := pidbox.New(tr, opts)
	require.NoError(t, err)
	t.Cleanup(func() { _ = nmb.Close() })
	serve(t, nmb.NewNode("go@h", pidbox.NodeOptions{}))
	ctl, err := pidbox.New(tr, opts)
	require.NoError(t, err)
	t.Cleanup(func() { _ = ctl.Close() })

	conn, err := amqp091.Dial(srv.URL())
	require.NoError(t, err)
	defer conn.Close()
	ch, err := conn.Channel()
	require.NoError(t, err)
	requests := spy(t, ch, ns+".pidbox", "")

	res, err := ctl.Call(context.Background(), "ping", nil, pidbox.To("py@h", "go@h"), pidbox.Timeout(10*time.Second))
	require.NoError(t, err)
	assert.Equal(t, map[string]pidbox.Outcome{"py@h": pidbox.Replied, "go@h": pidbox.Replied}, res.Outcomes)

	req := next(t, requests)
	assert.Equal(t, []string{"clock", "expires", "traceparent"}, sortedKeys(frameOf(req).headers))
	tp0, ok := req.Headers["traceparent"].(string)
	require.True(t, ok, "a string header: %T", req.Headers["traceparent"])

	require.Eventually(t, func() bool { return len(spans.Ended()) == 2 }, 5*time.Second, 10*time.Millisecond)
	byName := map[string]sdktrace.ReadOnlySpan{}
	for _, s := range spans.Ended() {
		byName[s.Name()] = s
	}
	caller, node := byName["call ping"], byName["process ping"]
	require.NotNil(t, caller)
	require.NotNil(t, node)
	assert.Len(t, caller.Events(), 2)
	assert.Equal(t, caller.SpanContext().SpanID(), node.Parent().SpanID())
	assert.Contains(t, tp0, caller.SpanContext().TraceID().String())
}
