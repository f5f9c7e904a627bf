package otel_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/gopidbox/pidbox"
	"github.com/gopidbox/pidbox/internal/alloctest"
	"github.com/gopidbox/pidbox/internal/redistest"
	"github.com/gopidbox/pidbox/internal/wire"
	pidotel "github.com/gopidbox/pidbox/otel"
	"github.com/gopidbox/pidbox/transport"
	"github.com/gopidbox/pidbox/transport/memory"
	pidredis "github.com/gopidbox/pidbox/transport/redis"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var quiet = slog.New(slog.DiscardHandler)

// telemetry is a real SDK with an in-memory span recorder and a manual
// metric reader.
type telemetry struct {
	spans  *tracetest.SpanRecorder
	reader *sdkmetric.ManualReader
	obs    *pidotel.Observer
}

func newTelemetry(t *testing.T, opts pidotel.Options) *telemetry {
	t.Helper()
	tel := &telemetry{spans: tracetest.NewSpanRecorder(), reader: sdkmetric.NewManualReader()}
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(tel.spans))
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(tel.reader))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()); _ = mp.Shutdown(context.Background()) })
	opts.TracerProvider, opts.MeterProvider, opts.Propagator = tp, mp, propagation.TraceContext{}
	obs, err := pidotel.New(opts)
	require.NoError(t, err)
	tel.obs = obs
	return tel
}

// ended returns the spans ended so far named name.
func (tel *telemetry) ended(name string) []sdktrace.ReadOnlySpan {
	var out []sdktrace.ReadOnlySpan
	for _, s := range tel.spans.Ended() {
		if s.Name() == name {
			out = append(out, s)
		}
	}
	return out
}

// metrics collects the metrics, by name.
func (tel *telemetry) metrics(t *testing.T) map[string]metricdata.Aggregation {
	t.Helper()
	var rm metricdata.ResourceMetrics
	require.NoError(t, tel.reader.Collect(context.Background(), &rm))
	out := map[string]metricdata.Aggregation{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			out[m.Name] = m.Data
		}
	}
	return out
}

// histCount sums the count of a histogram's points whose attributes
// include want.
func histCount(t *testing.T, a metricdata.Aggregation, want ...attribute.KeyValue) (count uint64, sum float64) {
	t.Helper()
	switch h := a.(type) {
	case metricdata.Histogram[float64]:
		for _, p := range h.DataPoints {
			if hasAll(p.Attributes, want) {
				count += p.Count
				sum += p.Sum
			}
		}
	case metricdata.Histogram[int64]:
		for _, p := range h.DataPoints {
			if hasAll(p.Attributes, want) {
				count += p.Count
				sum += float64(p.Sum)
			}
		}
	default:
		t.Fatalf("not a histogram: %T", a)
	}
	return count, sum
}

// sum adds up a counter's points whose attributes include want.
func sum(t *testing.T, a metricdata.Aggregation, want ...attribute.KeyValue) int64 {
	t.Helper()
	s, ok := a.(metricdata.Sum[int64])
	require.True(t, ok, "not an int64 sum: %T", a)
	var n int64
	for _, p := range s.DataPoints {
		if hasAll(p.Attributes, want) {
			n += p.Value
		}
	}
	return n
}

func hasAll(set attribute.Set, want []attribute.KeyValue) bool {
	for _, kv := range want {
		if v, ok := set.Value(kv.Key); !ok || v != kv.Value {
			return false
		}
	}
	return true
}

func attr(kvs []attribute.KeyValue, key string) attribute.Value {
	for _, kv := range kvs {
		if string(kv.Key) == key {
			return kv.Value
		}
	}
	return attribute.Value{}
}

// serve runs n until the test ends.
func serve(t *testing.T, n *pidbox.Node) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Errorf("node %s did not stop", n.Hostname())
		}
	})
	select {
	case <-n.Ready():
	case err := <-done:
		t.Fatalf("node %s: %v", n.Hostname(), err)
	}
}

// fleet serves nodes on tr, each with a mailbox of its own observed by
// tel, and returns a controlling mailbox observed by tel.
func fleet(t *testing.T, tr transport.Transport, tel *telemetry, names ...string) *pidbox.Mailbox {
	t.Helper()
	opts := pidbox.Options{Logger: quiet, Observer: tel.obs}
	for _, name := range names {
		mb, err := pidbox.New(tr, opts)
		require.NoError(t, err)
		t.Cleanup(func() { _ = mb.Close() })
		n := mb.NewNode(name, pidbox.NodeOptions{})
		n.RegisterFunc("fail", func(context.Context, *pidbox.Request) (any, error) { return nil, errors.New("bad thing") })
		serve(t, n)
	}
	ctl, err := pidbox.New(tr, opts)
	require.NoError(t, err)
	t.Cleanup(func() { _ = ctl.Close() })
	return ctl
}

// tracedCall: a call to 3 nodes makes one caller span with 3 reply
// events, 3 node spans that are its children, and metrics that count
// what happened.
func tracedCall(t *testing.T, tr transport.Transport) {
	tel := newTelemetry(t, pidotel.Options{})
	nodes := []string{"a@h", "b@h", "c@h"}
	ctl := fleet(t, tr, tel, nodes...)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	res, err := ctl.Call(ctx, "ping", nil, pidbox.To(nodes...))
	require.NoError(t, err)
	require.Len(t, res.Replies, 3)
	res, err = ctl.Call(ctx, "fail", nil, pidbox.To("b@h"))
	require.NoError(t, err)
	require.Error(t, res.Replies[0].Err)
	require.Eventually(t, func() bool { return len(tel.ended("process ping")) == 3 && len(tel.ended("process fail")) == 1 },
		5*time.Second, 5*time.Millisecond, "node spans end after their reply is sent")

	calls := tel.ended("call ping")
	require.Len(t, calls, 1)
	caller := calls[0]
	assert.Equal(t, trace.SpanKindProducer, caller.SpanKind())
	assert.Equal(t, "pidbox", attr(caller.Attributes(), "messaging.system").AsString())
	assert.Equal(t, "celery.pidbox", attr(caller.Attributes(), "messaging.destination.name").AsString())
	assert.Equal(t, "all_replied", attr(caller.Attributes(), "pidbox.outcome").AsString())
	assert.Equal(t, int64(3), attr(caller.Attributes(), "pidbox.replies").AsInt64())
	assert.NotEmpty(t, attr(caller.Attributes(), "messaging.message.conversation_id").AsString())
	require.Len(t, caller.Events(), 3, "one event per reply, no child span per reply")
	var replied []string
	for _, e := range caller.Events() {
		assert.Equal(t, "pidbox.reply", e.Name)
		replied = append(replied, attr(e.Attributes, "pidbox.node").AsString())
		assert.Positive(t, attr(e.Attributes, "pidbox.reply.latency").AsFloat64())
	}
	slices.Sort(replied)
	assert.Equal(t, nodes, replied)

	var served []string
	for _, s := range tel.ended("process ping") {
		assert.Equal(t, trace.SpanKindConsumer, s.SpanKind())
		assert.Equal(t, caller.SpanContext().TraceID(), s.Parent().TraceID())
		assert.Equal(t, caller.SpanContext().SpanID(), s.Parent().SpanID(), "the caller's span is the parent")
		assert.True(t, s.Parent().IsRemote())
		served = append(served, attr(s.Attributes(), "messaging.client.id").AsString())
	}
	slices.Sort(served)
	assert.Equal(t, nodes, served)
	failed := tel.ended("process fail")[0]
	assert.Equal(t, "_OTHER", attr(failed.Attributes(), "error.type").AsString())
	assert.Equal(t, "Error", failed.Status().Code.String())
	failCall := tel.ended("call fail")[0]
	assert.Equal(t, "b@h: bad thing", attr(failCall.Events()[0].Attributes, "pidbox.reply.error").AsString())

	m := tel.metrics(t)
	ping, fail := attribute.String("pidbox.command", "ping"), attribute.String("pidbox.command", "fail")
	n, _ := histCount(t, m["messaging.client.operation.duration"], ping, attribute.String("pidbox.outcome", "all_replied"))
	assert.Equal(t, uint64(1), n)
	n, s := histCount(t, m["pidbox.call.replies"], ping)
	assert.Equal(t, uint64(1), n)
	assert.Equal(t, 3.0, s)
	n, _ = histCount(t, m["pidbox.reply.duration"], ping, attribute.String("pidbox.reply.outcome", "replied"))
	assert.Equal(t, uint64(3), n)
	n, _ = histCount(t, m["pidbox.reply.duration"], fail, attribute.String("pidbox.reply.outcome", "failed"))
	assert.Equal(t, uint64(1), n)
	assert.Equal(t, int64(1), sum(t, m["messaging.client.sent.messages"], ping))
	// A node records its handler's end after the reply has gone, so the
	// caller can be back first: wait for the nodes' side.
	assert.Eventually(t, func() bool {
		m := tel.metrics(t)
		pn, _ := histCount(t, m["messaging.process.duration"], ping)
		fn, _ := histCount(t, m["messaging.process.duration"], fail, attribute.String("error.type", "_OTHER"))
		return pn == 3 && fn == 1 && sum(t, m["pidbox.handlers.active"]) == 0
	}, 5*time.Second, 5*time.Millisecond, "every handler done and measured: 3 pings, 1 failure")
	// The fail call named b@h alone: a and c skip it, in their own time.
	assert.Eventually(t, func() bool {
		s, ok := tel.metrics(t)["pidbox.messages.skipped"].(metricdata.Sum[int64])
		return ok && len(s.DataPoints) == 1 && s.DataPoints[0].Value == 2 &&
			hasAll(s.DataPoints[0].Attributes, []attribute.KeyValue{attribute.String("pidbox.reason", "not_addressed")})
	}, 5*time.Second, 5*time.Millisecond)
	for name, a := range m {
		for _, set := range attributeSets(a) {
			for _, kv := range set.ToSlice() {
				assert.NotContains(t, []string{"messaging.client.id", "pidbox.node", "messaging.message.conversation_id"}, string(kv.Key), "%s: high-cardinality attribute", name)
			}
		}
	}
}

func attributeSets(a metricdata.Aggregation) []attribute.Set {
	var out []attribute.Set
	switch d := a.(type) {
	case metricdata.Histogram[float64]:
		for _, p := range d.DataPoints {
			out = append(out, p.Attributes)
		}
	case metricdata.Histogram[int64]:
		for _, p := range d.DataPoints {
			out = append(out, p.Attributes)
		}
	case metricdata.Sum[int64]:
		for _, p := range d.DataPoints {
			out = append(out, p.Attributes)
		}
	}
	return out
}

func TestTracedCallMemory(t *testing.T) {
	tr := memory.New(memory.Options{Logger: quiet})
	t.Cleanup(func() { _ = tr.Close() })
	tracedCall(t, tr)
}

func TestTracedCallRedis(t *testing.T) {
	srv := redistest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	tr, err := pidredis.Open(ctx, srv.URL(0), pidredis.Options{Logger: quiet})
	require.NoError(t, err)
	t.Cleanup(func() { _ = tr.Close() })
	tracedCall(t, tr)
}

// With Links, a node span is a root span linked to the caller's.
func TestLinks(t *testing.T) {
	tr := memory.New(memory.Options{Logger: quiet})
	t.Cleanup(func() { _ = tr.Close() })
	tel := newTelemetry(t, pidotel.Options{Links: true})
	ctl := fleet(t, tr, tel, "a@h")
	_, err := ctl.Call(context.Background(), "ping", nil, pidbox.To("a@h"), pidbox.Timeout(5*time.Second))
	require.NoError(t, err)
	require.Eventually(t, func() bool { return len(tel.ended("process ping")) == 1 }, 5*time.Second, 5*time.Millisecond)
	caller, node := tel.ended("call ping")[0], tel.ended("process ping")[0]
	assert.False(t, node.Parent().IsValid(), "a root span")
	require.Len(t, node.Links(), 1)
	assert.Equal(t, caller.SpanContext().SpanID(), node.Links()[0].SpanContext.SpanID())
}

// Outcomes on the caller's span and metrics: a slow node, a missing one.
func TestOutcomes(t *testing.T) {
	tr := memory.New(memory.Options{Logger: quiet})
	t.Cleanup(func() { _ = tr.Close() })
	tel := newTelemetry(t, pidotel.Options{})
	ctl := fleet(t, tr, tel, "a@h", "b@h")
	res, err := ctl.Call(context.Background(), "ping", nil, pidbox.To("a@h", "ghost@h"), pidbox.Timeout(300*time.Millisecond))
	require.ErrorIs(t, err, pidbox.ErrIncomplete)
	require.Len(t, res.Replies, 1)
	_, err = ctl.Call(context.Background(), "ping", nil, pidbox.Limit(1), pidbox.Timeout(5*time.Second))
	require.NoError(t, err)
	require.NoError(t, ctl.Cast(context.Background(), "ping", nil, pidbox.To("b@h")))
	ctx, cancel := context.WithCancel(context.Background())
	c, err := ctl.Send(ctx, "ping", nil, pidbox.To("ghost@h"))
	require.NoError(t, err)
	cancel()
	for range c.Replies() {
	}

	var got []string
	var callers []sdktrace.ReadOnlySpan
	for _, s := range tel.spans.Ended() {
		if s.SpanKind() == trace.SpanKindProducer {
			got = append(got, s.Name()+" "+attr(s.Attributes(), "pidbox.outcome").AsString())
			callers = append(callers, s)
		}
	}
	assert.Equal(t, []string{"call ping deadline", "call ping limit", "cast ping sent", "call ping cancelled"}, got)
	deadline := callers[0]
	assert.Equal(t, "Error", deadline.Status().Code.String())
	assert.Contains(t, deadline.Status().Description, "ghost@h")
	assert.Equal(t, int64(2), attr(deadline.Attributes(), "pidbox.expected").AsInt64())

	m := tel.metrics(t)
	for _, o := range []string{"deadline", "limit", "cancelled"} {
		n, _ := histCount(t, m["messaging.client.operation.duration"], attribute.String("pidbox.outcome", o), attribute.String("messaging.operation.name", "call"))
		assert.Equal(t, uint64(1), n, o)
	}
	n, _ := histCount(t, m["messaging.client.operation.duration"], attribute.String("pidbox.outcome", "sent"), attribute.String("messaging.operation.name", "cast"))
	assert.Equal(t, uint64(1), n)
}

// Hostile trace context is ignored and counted: the command still runs,
// as a root span, and nothing grows.
func TestHostileTraceparent(t *testing.T) {
	tr := memory.New(memory.Options{Logger: quiet})
	t.Cleanup(func() { _ = tr.Close() })
	tel := newTelemetry(t, pidotel.Options{})
	ctl := fleet(t, tr, tel, "a@h")
	ex := transport.Exchange{Name: "celery.pidbox", Kind: transport.Fanout}
	huge := make([]byte, 1<<20)
	for i := range huge {
		huge[i] = 'f'
	}
	hostile := []string{
		`"traceparent": "00-not-a-trace-01"`,
		`"traceparent": "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"`,
		`"traceparent": "00-00000000000000000000000000000000-b7ad6b7169203331-01"`,
		`"traceparent": "` + string(huge) + `"`,
		`"traceparent": 12345`,
		`"traceparent": {"a": [1, 2]}`,
		`"traceparent": null, "tracestate": ["x"]`,
		`"tracestate": "` + string(huge[:4000]) + `"`,
	}
	var many []string
	for i := range 200 {
		many = append(many, fmt.Sprintf(`"h%d": "v"`, i))
	}
	hostile = append(hostile, joinHeaders(many))
	body, err := wire.EncodeRequest(wire.JSON{}, &wire.Request{Method: "ping", Destination: []string{"a@h"}})
	require.NoError(t, err)
	for _, h := range hostile {
		env := string(wire.Encode(&wire.Envelope{Body: body, ContentType: "application/json", ContentEncoding: "utf-8"}))
		env = replaceOnce(env, `"headers": {`, `"headers": {`+h+`, `)
		require.NoError(t, tr.Publish(context.Background(), ex, "", []byte(env)))
	}
	require.Eventually(t, func() bool { return len(tel.ended("process ping")) == len(hostile) }, 5*time.Second, 5*time.Millisecond,
		"every hostile message still runs its command")
	for _, s := range tel.ended("process ping") {
		assert.False(t, s.Parent().IsValid(), "no trace context taken from hostile headers")
	}
	// The node still serves traced calls.
	_, err = ctl.Call(context.Background(), "ping", nil, pidbox.To("a@h"), pidbox.Timeout(5*time.Second))
	require.NoError(t, err)

	m := tel.metrics(t)
	invalid := sum(t, m["pidbox.headers.ignored"], attribute.String("pidbox.reason", "invalid"))
	// huge traceparent, 12345, object, null, the list, huge tracestate, and
	// 200-8 beyond the bound.
	assert.Equal(t, int64(6+200-wire.MaxExtraHeaders), invalid)
	assert.Equal(t, int64(3), sum(t, m["pidbox.headers.ignored"], attribute.String("pidbox.reason", "trace_context")),
		"three strings the propagator could not read")
}

func joinHeaders(hs []string) string {
	out := ""
	for i, h := range hs {
		if i > 0 {
			out += ", "
		}
		out += h
	}
	return out
}

func replaceOnce(s, old, new string) string {
	for i := 0; i+len(old) <= len(s); i++ {
		if s[i:i+len(old)] == old {
			return s[:i] + new + s[i+len(old):]
		}
	}
	return s
}

// Off costs nothing: with noop providers, a call and a dispatch allocate
// what they do with no Observer at all.
func TestNoopAllocs(t *testing.T) {
	obs, err := pidotel.New(pidotel.Options{TracerProvider: tracenoop.NewTracerProvider(), MeterProvider: metricnoop.NewMeterProvider(), Propagator: propagation.TraceContext{}})
	require.NoError(t, err)
	offCall, offCast := alloctest.Measure(t, pidbox.Options{})
	noopCall, noopCast := alloctest.Measure(t, pidbox.Options{Observer: obs})
	assert.Equal(t, offCall, noopCall, "a call")
	assert.Equal(t, offCast, noopCast, "a cast and its dispatch")

	// The global providers, before a program installs an SDK, are off too.
	global, err := pidotel.New(pidotel.Options{})
	require.NoError(t, err)
	globalCall, globalCast := alloctest.Measure(t, pidbox.Options{Observer: global})
	assert.Equal(t, offCall, globalCall, "a call")
	assert.Equal(t, offCast, globalCast, "a cast and its dispatch")
}

// The pidbox.command attribute takes at most MaxCommands values; more
// commands are counted as _OTHER.
func TestCommandCardinality(t *testing.T) {
	tr := memory.New(memory.Options{Logger: quiet})
	t.Cleanup(func() { _ = tr.Close() })
	tel := newTelemetry(t, pidotel.Options{})
	ctl := fleet(t, tr, tel)
	for i := range pidotel.MaxCommands + 50 {
		require.NoError(t, ctl.Cast(context.Background(), fmt.Sprintf("cmd%d", i), nil))
	}
	m := tel.metrics(t)
	values := map[string]bool{}
	for _, set := range attributeSets(m["messaging.client.sent.messages"]) {
		v, _ := set.Value("pidbox.command")
		values[v.AsString()] = true
	}
	assert.Len(t, values, pidotel.MaxCommands+1)
	assert.True(t, values["_OTHER"])
	assert.Equal(t, int64(pidotel.MaxCommands+50), sum(t, m["messaging.client.sent.messages"]))
}

// A node's counters: backlog waits and refusals by command, unknown
// commands skipped (with no span), handlers active while they run.
func TestNodeCounters(t *testing.T) {
	tr := memory.New(memory.Options{Logger: quiet})
	t.Cleanup(func() { _ = tr.Close() })
	tel := newTelemetry(t, pidotel.Options{})
	mb, err := pidbox.New(tr, pidbox.Options{Logger: quiet, Observer: tel.obs})
	require.NoError(t, err)
	t.Cleanup(func() { _ = mb.Close() })
	n := mb.NewNode("slow@h", pidbox.NodeOptions{Concurrency: 1, Backlog: 1})
	release := make(chan struct{})
	n.RegisterFunc("block", func(context.Context, *pidbox.Request) (any, error) { <-release; return nil, nil })
	serve(t, n)
	ctl, err := pidbox.New(tr, pidbox.Options{Logger: quiet, Observer: tel.obs})
	require.NoError(t, err)
	t.Cleanup(func() { _ = ctl.Close() })
	for range 3 {
		require.NoError(t, ctl.Cast(context.Background(), "block", nil))
	}
	block := attribute.String("pidbox.command", "block")
	require.Eventually(t, func() bool {
		m := tel.metrics(t)
		return m["pidbox.backlog.refusals"] != nil && sum(t, m["pidbox.backlog.refusals"], block) == 1
	}, 5*time.Second, 5*time.Millisecond)
	m := tel.metrics(t)
	assert.Equal(t, int64(1), sum(t, m["pidbox.backlog.waits"], block))
	assert.Equal(t, int64(1), sum(t, m["pidbox.handlers.active"], block), "one runs, one waits")
	close(release)

	_, err = ctl.Call(context.Background(), "nosuch", nil, pidbox.To("slow@h"), pidbox.Timeout(5*time.Second))
	require.NoError(t, err)
	require.Eventually(t, func() bool { return len(tel.ended("process block")) == 2 }, 5*time.Second, 5*time.Millisecond)
	m = tel.metrics(t)
	assert.Equal(t, int64(1), sum(t, m["pidbox.messages.skipped"], attribute.String("pidbox.reason", "unknown_command")))
	assert.Equal(t, int64(0), sum(t, m["pidbox.handlers.active"], block))
	assert.Empty(t, tel.ended("process nosuch"), "an unknown command makes no span")
}

// A flood of hostile headers, through a node that traces every command
// (spans made and dropped), leaves nothing behind on the heap.
func TestHostileFloodKeepsNothing(t *testing.T) {
	tr := memory.New(memory.Options{Logger: quiet})
	t.Cleanup(func() { _ = tr.Close() })
	tp := sdktrace.NewTracerProvider() // spans are made, sampled and dropped
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	obs, err := pidotel.New(pidotel.Options{TracerProvider: tp, MeterProvider: sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader())), Propagator: propagation.TraceContext{}})
	require.NoError(t, err)
	mb, err := pidbox.New(tr, pidbox.Options{Logger: quiet, Observer: obs})
	require.NoError(t, err)
	t.Cleanup(func() { _ = mb.Close() })
	node := mb.NewNode("a@h", pidbox.NodeOptions{})
	serve(t, node)

	body, err := wire.EncodeRequest(wire.JSON{}, &wire.Request{Method: "ping", Destination: []string{"a@h"}})
	require.NoError(t, err)
	var many []string
	for i := range 200 {
		many = append(many, fmt.Sprintf(`"h%d": "%0100d"`, i, i))
	}
	flood := string(wire.Encode(&wire.Envelope{Body: body, ContentType: "application/json", ContentEncoding: "utf-8"}))
	flood = replaceOnce(flood, `"headers": {`, `"headers": {"traceparent": "00-zz", `+joinHeaders(many)+`, `)
	ex := transport.Exchange{Name: "celery.pidbox", Kind: transport.Fanout}
	send := func(n int) {
		calls := node.Stats().Handlers["ping"].Calls
		for range n {
			require.NoError(t, tr.Publish(context.Background(), ex, "", []byte(flood)))
		}
		require.Eventually(t, func() bool { return node.Stats().Handlers["ping"].Calls == calls+uint64(n) }, 20*time.Second, 5*time.Millisecond)
	}
	send(100) // warm up
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	const floods = 1000
	send(floods)
	runtime.GC()
	runtime.ReadMemStats(&after)
	assert.Less(t, int64(after.HeapAlloc)-int64(before.HeapAlloc), int64(len(flood)*floods/20),
		"the heap keeps no share of %d hostile messages of %d bytes", floods, len(flood))
	// The malformed traceparent is kept (a string within bounds) and
	// refused by the propagator; 7 more fit, 193 do not.
	assert.Equal(t, uint64((200-(wire.MaxExtraHeaders-1))*(100+floods)), node.Stats().IgnoredHeaders)
}
