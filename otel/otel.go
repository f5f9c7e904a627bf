// Package otel traces and measures pidbox calls and commands with
// OpenTelemetry. New returns a pidbox.Observer; set it as
// pidbox.Options.Observer on the mailboxes of callers and of nodes:
//
//	obs, err := otel.New(otel.Options{}) // the global providers and propagator
//	mb, err := pidbox.New(tr, pidbox.Options{Observer: obs})
//
// A call makes a "call <command>" span with one event per reply, and each
// node a "process <command>" span, its child: the trace context travels in
// the message headers (Kombu's own nodes ignore it). Spans and metrics
// follow the OpenTelemetry semantic conventions for messaging.
//
// It uses the OpenTelemetry API alone; a program brings the SDK and its
// exporters. With tracing and metrics off it costs nothing.
//
// docs/OBSERVABILITY.md lists every span, metric and attribute.
package otel

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"sync"
	"time"

	"github.com/gopidbox/pidbox"
	otelapi "go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"
)

// ScopeName is the instrumentation scope of pidbox's tracer and meter.
const ScopeName = "github.com/gopidbox/pidbox/otel"

// system is the messaging.system attribute value.
const system = "pidbox"

// MaxCommands bounds the distinct values of the pidbox.command attribute
// per Observer; further commands are counted as "_OTHER".
const MaxCommands = 256

// Options configure an Observer. The zero value uses the global
// providers and propagator.
type Options struct {
	// TracerProvider makes the tracer. Nil means the global one
	// (otel.GetTracerProvider()).
	TracerProvider trace.TracerProvider
	// MeterProvider makes the instruments. Nil means the global one.
	MeterProvider metric.MeterProvider
	// Propagator carries trace context in the message headers. Nil means
	// the global one (otel.GetTextMapPropagator()), which carries nothing
	// until a program sets it, for instance to propagation.TraceContext{}.
	Propagator propagation.TextMapPropagator
	// Links makes each node span a new root span linked to the caller's
	// span, rather than its child: for fleets whose traces would grow too
	// large with a thousand children under one call.
	Links bool
}

// Observer traces and measures pidbox calls and commands; it implements
// pidbox.Observer. It is safe for concurrent use.
//
// Spans: "call <command>" (kind producer; "cast <command>" for a cast) from
// a call's start to the end of gathering, with one "pidbox.reply" event per
// reply and status Error when the call ends with an error; "process
// <command>" (kind consumer) for each command a node handles, a child of the
// caller's span (with Options.Links, a root span linked to it). Metrics carry
// attributes of low cardinality only, never a node's name or a ticket.
// docs/OBSERVABILITY.md lists every name and attribute.
type Observer struct {
	tracer   trace.Tracer
	prop     propagation.TextMapPropagator
	links    bool
	traceOff bool                 // the provider is a noop one
	globalTP trace.TracerProvider // the global delegate, while no SDK is set

	opDuration, replyDuration, procDuration metric.Float64Histogram
	sent, discarded, skipped                metric.Int64Counter
	backlogWaits, backlogRefusals, ignored  metric.Int64Counter
	replies                                 metric.Int64Histogram
	active                                  metric.Int64UpDownCounter

	reasons map[string][]metric.AddOption // pidbox.reason sets

	mu       sync.RWMutex
	commands map[cmdKey]*command
}

type cmdKey struct{ exchange, method string }

// New returns an Observer. The trace context of every call is injected into
// the message headers with the propagator (traceparent and tracestate with
// the W3C one), beside Kombu's clock, expires and ticket. With noop
// providers, or with the global ones before an SDK is installed, no span is
// started, nothing is injected and no attribute is built.
func New(opts Options) (*Observer, error) {
	tp := opts.TracerProvider
	if tp == nil {
		tp = otelapi.GetTracerProvider()
	}
	mp := opts.MeterProvider
	if mp == nil {
		mp = otelapi.GetMeterProvider()
	}
	prop := opts.Propagator
	if prop == nil {
		prop = otelapi.GetTextMapPropagator()
	}
	o := &Observer{
		tracer:   tp.Tracer(ScopeName, trace.WithSchemaURL(semconv.SchemaURL)),
		prop:     prop,
		links:    opts.Links,
		commands: map[cmdKey]*command{},
	}
	switch tp.(type) {
	case tracenoop.TracerProvider, *tracenoop.TracerProvider:
		o.traceOff = true
	default:
		if isGlobalDelegate(tp) {
			o.globalTP = tp
		}
	}
	if err := o.instruments(mp.Meter(ScopeName, metric.WithSchemaURL(semconv.SchemaURL))); err != nil {
		return nil, err
	}
	o.reasons = map[string][]metric.AddOption{}
	for _, r := range []string{pidbox.ReasonNotAddressed, pidbox.ReasonExpired, pidbox.ReasonUnknownCommand, pidbox.ReasonUndecodable,
		pidbox.ReasonUnclaimed, pidbox.ReasonOverflow, reasonInvalid, reasonTraceContext, other} {
		o.reasons[r] = []metric.AddOption{metric.WithAttributeSet(attribute.NewSet(keyReason.String(r)))}
	}
	return o, nil
}

// isGlobalDelegate reports whether tp is the global provider's stand-in,
// which delegates to the provider a program sets later.
func isGlobalDelegate(tp trace.TracerProvider) bool {
	t := reflect.TypeOf(tp)
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return strings.HasSuffix(t.PkgPath(), "go.opentelemetry.io/otel/internal/global")
}

// tracing reports whether spans are to be started: not with a noop
// provider, nor with the global one while no SDK is installed.
func (o *Observer) tracing() bool {
	if o.traceOff {
		return false
	}
	if o.globalTP != nil {
		return otelapi.GetTracerProvider() != o.globalTP
	}
	return true
}

var durationBounds = []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10}

func (o *Observer) instruments(m metric.Meter) error {
	var errs []error
	add := func(err error) { errs = append(errs, err) }
	var err error
	o.opDuration, err = m.Float64Histogram("messaging.client.operation.duration", metric.WithUnit("s"),
		metric.WithDescription("Duration of a pidbox call, from sending the command to the end of gathering its replies."),
		metric.WithExplicitBucketBoundaries(durationBounds...))
	add(err)
	o.sent, err = m.Int64Counter("messaging.client.sent.messages", metric.WithUnit("{message}"),
		metric.WithDescription("Commands sent."))
	add(err)
	o.replies, err = m.Int64Histogram("pidbox.call.replies", metric.WithUnit("{reply}"),
		metric.WithDescription("Replies gathered per call."),
		metric.WithExplicitBucketBoundaries(0, 1, 2, 3, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000))
	add(err)
	o.replyDuration, err = m.Float64Histogram("pidbox.reply.duration", metric.WithUnit("s"),
		metric.WithDescription("Latency of each reply, from the start of its call."),
		metric.WithExplicitBucketBoundaries(durationBounds...))
	add(err)
	o.discarded, err = m.Int64Counter("pidbox.replies.discarded", metric.WithUnit("{reply}"),
		metric.WithDescription("Replies no call took, by reason."))
	add(err)
	o.procDuration, err = m.Float64Histogram("messaging.process.duration", metric.WithUnit("s"),
		metric.WithDescription("Duration of a node's handler for one command."),
		metric.WithExplicitBucketBoundaries(durationBounds...))
	add(err)
	o.skipped, err = m.Int64Counter("pidbox.messages.skipped", metric.WithUnit("{message}"),
		metric.WithDescription("Messages a node did not handle, by reason."))
	add(err)
	o.active, err = m.Int64UpDownCounter("pidbox.handlers.active", metric.WithUnit("{command}"),
		metric.WithDescription("Handlers running on a node."))
	add(err)
	o.backlogWaits, err = m.Int64Counter("pidbox.backlog.waits", metric.WithUnit("{command}"),
		metric.WithDescription("Commands that waited for a free slot of their handler."))
	add(err)
	o.backlogRefusals, err = m.Int64Counter("pidbox.backlog.refusals", metric.WithUnit("{command}"),
		metric.WithDescription("Commands refused because their handler's backlog was full."))
	add(err)
	o.ignored, err = m.Int64Counter("pidbox.headers.ignored", metric.WithUnit("{header}"),
		metric.WithDescription("Extra message headers ignored, by reason."))
	add(err)
	return errors.Join(errs...)
}

// Attribute keys of pidbox's own.
const (
	keyCommand      = attribute.Key("pidbox.command")
	keyOutcome      = attribute.Key("pidbox.outcome")
	keyReplyOutcome = attribute.Key("pidbox.reply.outcome")
	keyReason       = attribute.Key("pidbox.reason")
	keyLimit        = attribute.Key("pidbox.limit")
	keyTimeout      = attribute.Key("pidbox.timeout")
	keyReplies      = attribute.Key("pidbox.replies")
	keyExpected     = attribute.Key("pidbox.expected")
	keyNode         = attribute.Key("pidbox.node")
	keyLatency      = attribute.Key("pidbox.reply.latency")
	keyReplyError   = attribute.Key("pidbox.reply.error")
)

const (
	other              = "_OTHER"
	reasonInvalid      = "invalid"
	reasonTraceContext = "trace_context"
)

// Outcomes of calls, in pidbox.CallOutcome's order.
var outcomes = []pidbox.CallOutcome{pidbox.CallAllReplied, pidbox.CallLimit, pidbox.CallDeadline, pidbox.CallQuiet, pidbox.CallCancelled, pidbox.CallFailed, pidbox.CallSent}

// Error types of handlers, as error.type.
var errorTypes = []struct {
	err  error
	name string
}{
	{pidbox.ErrHandlerTimeout, "timeout"},
	{pidbox.ErrHandlerPanic, "panic"},
	{pidbox.ErrBadArguments, "bad_arguments"},
}

// command holds what is built once per command and exchange: span names
// and start options, and every attribute set its metrics use.
type command struct {
	callName, castName, procName    string
	callStart, castStart, procStart []trace.SpanStartOption
	call, cast                      [7][]metric.RecordOption // by outcome
	sent, sendFailed                []metric.AddOption
	replyOK, replyFailed            []metric.RecordOption
	proc                            []metric.RecordOption   // no error
	procErr                         [][]metric.RecordOption // by errorTypes, then _OTHER
	perCommand                      []metric.AddOption
}

func (o *Observer) command(exchange, method string) *command {
	k := cmdKey{exchange, method}
	o.mu.RLock()
	c := o.commands[k]
	o.mu.RUnlock()
	if c != nil {
		return c
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if c = o.commands[k]; c != nil {
		return c
	}
	if len(o.commands) >= MaxCommands {
		k.method = other
		if c = o.commands[k]; c != nil {
			return c
		}
	}
	c = newCommand(exchange, k.method)
	o.commands[k] = c
	return c
}

func newCommand(exchange, method string) *command {
	sys := semconv.MessagingSystemKey.String(system)
	dest := semconv.MessagingDestinationName(exchange)
	cmd := keyCommand.String(method)
	opCall := semconv.MessagingOperationName("call")
	opCast := semconv.MessagingOperationName("cast")
	opProc := semconv.MessagingOperationName("process")
	c := &command{
		callName: "call " + method,
		castName: "cast " + method,
		procName: "process " + method,
		callStart: []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindProducer),
			trace.WithAttributes(sys, semconv.MessagingOperationTypeSend, opCall, dest, cmd)},
		castStart: []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindProducer),
			trace.WithAttributes(sys, semconv.MessagingOperationTypeSend, opCast, dest, cmd)},
		procStart: []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindConsumer),
			trace.WithAttributes(sys, semconv.MessagingOperationTypeProcess, opProc, dest, cmd)},
		sent:        []metric.AddOption{metric.WithAttributeSet(attribute.NewSet(sys, dest, cmd))},
		sendFailed:  []metric.AddOption{metric.WithAttributeSet(attribute.NewSet(sys, dest, cmd, semconv.ErrorTypeOther))},
		replyOK:     []metric.RecordOption{metric.WithAttributeSet(attribute.NewSet(cmd, keyReplyOutcome.String("replied")))},
		replyFailed: []metric.RecordOption{metric.WithAttributeSet(attribute.NewSet(cmd, keyReplyOutcome.String("failed")))},
		proc:        []metric.RecordOption{metric.WithAttributeSet(attribute.NewSet(sys, opProc, dest, cmd))},
		perCommand:  []metric.AddOption{metric.WithAttributeSet(attribute.NewSet(cmd))},
	}
	for i, oc := range outcomes {
		out := keyOutcome.String(oc.String())
		c.call[i] = []metric.RecordOption{metric.WithAttributeSet(attribute.NewSet(sys, opCall, dest, cmd, out))}
		c.cast[i] = []metric.RecordOption{metric.WithAttributeSet(attribute.NewSet(sys, opCast, dest, cmd, out))}
	}
	for _, et := range errorTypes {
		c.procErr = append(c.procErr, []metric.RecordOption{metric.WithAttributeSet(attribute.NewSet(sys, opProc, dest, cmd, semconv.ErrorTypeKey.String(et.name)))})
	}
	c.procErr = append(c.procErr, []metric.RecordOption{metric.WithAttributeSet(attribute.NewSet(sys, opProc, dest, cmd, semconv.ErrorTypeOther))})
	return c
}

// errorType returns the index in command.procErr of err's type, and its
// name.
func errorType(err error) (int, string) {
	for i, et := range errorTypes {
		if errors.Is(err, et.err) {
			return i, et.name
		}
	}
	return len(errorTypes), other
}

// StartCall implements pidbox.Observer.
func (o *Observer) StartCall(ctx context.Context, info pidbox.CallInfo) (context.Context, pidbox.CallObserver) {
	tracing := o.tracing()
	if !tracing && !o.opDuration.Enabled(ctx) {
		return ctx, nil
	}
	cmd := o.command(info.Exchange, info.Method)
	c := &call{o: o, cmd: cmd, cast: info.Ticket == "", start: time.Now()}
	if tracing {
		name, start := cmd.callName, cmd.callStart
		if c.cast {
			name, start = cmd.castName, cmd.castStart
		}
		ctx, c.span = o.tracer.Start(ctx, name, start...)
		if c.span.IsRecording() {
			c.span.SetAttributes(keyLimit.Int(info.Limit), keyTimeout.Float64(info.Timeout.Seconds()))
			if info.Ticket != "" {
				c.span.SetAttributes(semconv.MessagingMessageConversationID(info.Ticket))
			}
		}
	}
	c.ctx = ctx
	return ctx, c
}

// Inject implements pidbox.CallObserver: the call's trace context goes
// into the command's headers, when tracing is on.
func (c *call) Inject(h pidbox.Headers) {
	if c.span != nil {
		c.o.prop.Inject(c.ctx, h)
	}
}

// call observes one call.
type call struct {
	o       *Observer
	cmd     *command
	ctx     context.Context
	span    trace.Span // nil when not tracing
	cast    bool
	start   time.Time
	replies int
}

// Reply implements pidbox.CallObserver.
func (c *call) Reply(node string, latency time.Duration, err error) {
	c.replies++
	if c.span != nil && c.span.IsRecording() {
		attrs := []attribute.KeyValue{keyNode.String(node), keyLatency.Float64(latency.Seconds())}
		if err != nil {
			attrs = append(attrs, keyReplyError.String(err.Error()))
		}
		c.span.AddEvent("pidbox.reply", trace.WithAttributes(attrs...))
	}
	opts := c.cmd.replyOK
	if err != nil {
		opts = c.cmd.replyFailed
	}
	c.o.replyDuration.Record(c.ctx, latency.Seconds(), opts...)
}

// End implements pidbox.CallObserver.
func (c *call) End(e pidbox.CallEnd) {
	if c.span != nil {
		if c.span.IsRecording() {
			c.span.SetAttributes(keyOutcome.String(e.Outcome.String()))
			if !c.cast {
				c.span.SetAttributes(keyReplies.Int(e.Replies), keyExpected.Int(e.Expected))
			}
			if e.Err != nil {
				c.span.SetStatus(codes.Error, e.Err.Error())
			}
		}
		c.span.End()
	}
	i := int(e.Outcome)
	if i >= len(outcomes) {
		i = len(outcomes) - 1
	}
	ctx := c.ctx
	if c.cast {
		c.o.opDuration.Record(ctx, time.Since(c.start).Seconds(), c.cmd.cast[i]...)
	} else {
		c.o.opDuration.Record(ctx, time.Since(c.start).Seconds(), c.cmd.call[i]...)
		c.o.replies.Record(ctx, int64(e.Replies), c.cmd.call[i]...)
	}
	if e.Outcome == pidbox.CallFailed {
		c.o.sent.Add(ctx, 1, c.cmd.sendFailed...)
	} else {
		c.o.sent.Add(ctx, 1, c.cmd.sent...)
	}
}

// StartCommand implements pidbox.Observer.
func (o *Observer) StartCommand(ctx context.Context, info pidbox.CommandInfo, h pidbox.Headers) (context.Context, pidbox.CommandObserver) {
	tracing := o.tracing()
	if !tracing && !o.procDuration.Enabled(ctx) {
		return ctx, nil
	}
	cmd := o.command(info.Exchange, info.Method)
	p := &process{o: o, cmd: cmd, start: time.Now()}
	if tracing {
		pctx := o.prop.Extract(ctx, h)
		remote := trace.SpanContextFromContext(pctx)
		if !remote.IsValid() && h.Get("traceparent") != "" {
			o.ignored.Add(ctx, 1, o.reasons[reasonTraceContext]...)
		}
		if o.links && remote.IsValid() {
			ctx, p.span = o.tracer.Start(pctx, cmd.procName, append(cmd.procStart[:len(cmd.procStart):len(cmd.procStart)],
				trace.WithNewRoot(), trace.WithLinks(trace.Link{SpanContext: remote}))...)
		} else {
			ctx, p.span = o.tracer.Start(pctx, cmd.procName, cmd.procStart...)
		}
		if p.span.IsRecording() {
			p.span.SetAttributes(semconv.MessagingClientID(info.Node))
			if info.Ticket != "" {
				p.span.SetAttributes(semconv.MessagingMessageConversationID(info.Ticket))
			}
		}
	}
	p.ctx = ctx
	o.active.Add(ctx, 1, cmd.perCommand...)
	return ctx, p
}

// process observes one command a node handles.
type process struct {
	o     *Observer
	cmd   *command
	ctx   context.Context
	span  trace.Span
	start time.Time
}

// End implements pidbox.CommandObserver.
func (p *process) End(err error) {
	d := time.Since(p.start).Seconds()
	opts := p.cmd.proc
	if err != nil {
		i, name := errorType(err)
		opts = p.cmd.procErr[i]
		if p.span != nil && p.span.IsRecording() {
			p.span.SetAttributes(semconv.ErrorTypeKey.String(name))
			p.span.RecordError(err)
			p.span.SetStatus(codes.Error, err.Error())
		}
	}
	if p.span != nil {
		p.span.End()
	}
	p.o.procDuration.Record(p.ctx, d, opts...)
	p.o.active.Add(p.ctx, -1, p.cmd.perCommand...)
}

// Event implements pidbox.Observer.
func (o *Observer) Event(ctx context.Context, e pidbox.Event) {
	n := int64(e.Count)
	if n <= 0 {
		n = 1
	}
	switch e.Kind {
	case pidbox.EventSkipped:
		o.skipped.Add(ctx, n, o.reason(e.Reason)...)
	case pidbox.EventReplyDiscarded:
		o.discarded.Add(ctx, n, o.reason(e.Reason)...)
	case pidbox.EventHeadersIgnored:
		o.ignored.Add(ctx, n, o.reasons[reasonInvalid]...)
	case pidbox.EventBacklogWait:
		if o.backlogWaits.Enabled(ctx) {
			o.backlogWaits.Add(ctx, n, o.command("", e.Method).perCommand...)
		}
	case pidbox.EventBacklogRefused:
		if o.backlogRefusals.Enabled(ctx) {
			o.backlogRefusals.Add(ctx, n, o.command("", e.Method).perCommand...)
		}
	}
}

func (o *Observer) reason(r string) []metric.AddOption {
	if opts, ok := o.reasons[r]; ok {
		return opts
	}
	return o.reasons[other]
}

var _ pidbox.Observer = (*Observer)(nil)
