package otel_test

import (
	"context"
	"testing"
	"time"

	"github.com/gopidbox/pidbox"
	pidotel "github.com/gopidbox/pidbox/otel"
	"github.com/gopidbox/pidbox/transport/memory"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	tracenoop "go.opentelemetry.io/otel/trace/noop"
)

// BenchmarkCall is a ping call to one node on the memory broker with no
// Observer (none), the otel Observer on noop providers (off), and a real
// SDK with a batched in-memory exporter and a manual reader (on).
func BenchmarkCall(b *testing.B) {
	off, _ := pidotel.New(pidotel.Options{TracerProvider: tracenoop.NewTracerProvider(), MeterProvider: metricnoop.NewMeterProvider(), Propagator: propagation.TraceContext{}})
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp))
	defer func() { _ = tp.Shutdown(context.Background()) }()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
	on, _ := pidotel.New(pidotel.Options{TracerProvider: tp, MeterProvider: mp, Propagator: propagation.TraceContext{}})
	for _, v := range []struct {
		name string
		obs  pidbox.Observer
	}{{"none", nil}, {"off", off}, {"on", on}} {
		b.Run(v.name, func(b *testing.B) {
			tr := memory.New(memory.Options{Logger: quiet})
			defer tr.Close()
			opts := pidbox.Options{Logger: quiet, Observer: v.obs}
			nmb, _ := pidbox.New(tr, opts)
			node := nmb.NewNode("w@h", pidbox.NodeOptions{})
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { defer close(done); _ = node.Serve(ctx) }()
			<-node.Ready()
			defer func() { cancel(); <-done }()
			ctl, _ := pidbox.New(tr, opts)
			defer ctl.Close()
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				if _, err := ctl.Call(context.Background(), "ping", nil, pidbox.To("w@h"), pidbox.Timeout(5*time.Second)); err != nil {
					b.Fatal(err)
				}
				if i%10000 == 0 {
					exp.Reset()
				}
			}
		})
	}
}
