package otel_test

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"time"

	"github.com/gopidbox/pidbox"
	pidotel "github.com/gopidbox/pidbox/otel"
	"github.com/gopidbox/pidbox/transport/memory"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
)

// A call traced end to end: the caller's span with one event per reply,
// and each node's span, a child of the caller's. The spans go to a tiny
// printer here; a program would give the SDK an OTLP exporter instead.
func Example() {
	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	defer func() { _ = tp.Shutdown(context.Background()) }()
	obs, err := pidotel.New(pidotel.Options{TracerProvider: tp, Propagator: propagation.TraceContext{}})
	if err != nil {
		panic(err)
	}

	tr := memory.New(memory.Options{})
	defer tr.Close()
	opts := pidbox.Options{Observer: obs, Logger: slog.New(slog.DiscardHandler)}
	stop := serveNodes(tr, opts, map[string]time.Duration{"fast@h": 0, "slow@h": 150 * time.Millisecond})
	defer stop()
	ctl, _ := pidbox.New(tr, opts)
	defer ctl.Close()

	// One node is slow, one never answers: it does not exist.
	_, err = ctl.Call(context.Background(), "work", nil, pidbox.To("fast@h", "slow@h", "ghost@h"), pidbox.Timeout(400*time.Millisecond))
	fmt.Println("call:", err)
	waitSpans(spans, 3)
	printSpans(spans.Ended())
	// Output:
	// call: pidbox: work: expected nodes did not reply: 1 of 3 expected nodes missing at the deadline; not known to the broker: ghost@h
	// call work (producer) pidbox.outcome=deadline pidbox.replies=2 pidbox.expected=3 status=Error
	//   event pidbox.reply pidbox.node=fast@h latency<100ms
	//   event pidbox.reply pidbox.node=slow@h latency>=100ms
	// process work (consumer) messaging.client.id=fast@h parent=call work
	// process work (consumer) messaging.client.id=slow@h parent=call work
}

// serveNodes serves a "work" command on each node, taking the given time.
func serveNodes(tr *memory.Broker, opts pidbox.Options, nodes map[string]time.Duration) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	var done []chan struct{}
	for name, d := range nodes {
		mb, _ := pidbox.New(tr, opts)
		n := mb.NewNode(name, pidbox.NodeOptions{})
		n.RegisterFunc("work", func(context.Context, *pidbox.Request) (any, error) {
			time.Sleep(d)
			return "done", nil
		})
		ch := make(chan struct{})
		done = append(done, ch)
		go func() { defer close(ch); _ = n.Serve(ctx) }()
		<-n.Ready()
	}
	return func() {
		cancel()
		for _, ch := range done {
			<-ch
		}
	}
}

// waitSpans waits until n spans have ended: a node's span ends once its
// reply is sent, which can be after the caller has it.
func waitSpans(r *tracetest.SpanRecorder, n int) {
	for deadline := time.Now().Add(5 * time.Second); len(r.Ended()) < n && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
}

// printSpans prints the caller's span, then the nodes', in a stable order.
func printSpans(spans []sdktrace.ReadOnlySpan) {
	names := map[string]string{}
	for _, s := range spans {
		names[s.SpanContext().SpanID().String()] = s.Name()
	}
	var lines []string
	for _, s := range spans {
		var b strings.Builder
		fmt.Fprintf(&b, "%s (%s)", s.Name(), s.SpanKind())
		for _, kv := range s.Attributes() {
			switch kv.Key {
			case "pidbox.outcome", "pidbox.replies", "pidbox.expected", "messaging.client.id":
				fmt.Fprintf(&b, " %s=%s", kv.Key, kv.Value.Emit())
			}
		}
		if p := s.Parent(); p.IsValid() {
			fmt.Fprintf(&b, " parent=%s", names[p.SpanID().String()])
		}
		if s.Status().Code.String() == "Error" {
			b.WriteString(" status=Error")
		}
		var events []string
		for _, e := range s.Events() {
			line := "\n  event " + e.Name
			for _, kv := range e.Attributes {
				switch kv.Key {
				case "pidbox.node":
					line += " pidbox.node=" + kv.Value.AsString()
				case "pidbox.reply.latency":
					if kv.Value.AsFloat64() < 0.1 {
						line += " latency<100ms"
					} else {
						line += " latency>=100ms"
					}
				}
			}
			events = append(events, line)
		}
		sort.Strings(events)
		lines = append(lines, b.String()+strings.Join(events, ""))
	}
	sort.Strings(lines) // "call ..." sorts before "process ..."
	for _, l := range lines {
		fmt.Println(l)
	}
}
