package main

// The cost of observability, in one run: the same calls with no
// instrumentation at all (none), with the otel Observer on noop providers
// (off), and with a real OpenTelemetry SDK recording every span into an
// in-memory exporter and every metric into a manual reader (on). Rounds
// alternate the three, each round starting with another, so that drift in
// a shared machine's speed hits them alike. See docs/BENCHMARKS.md, "Observability".

import (
	"context"
	"fmt"
	"runtime"
	"time"

	"github.com/gopidbox/pidbox"
	pidotel "github.com/gopidbox/pidbox/otel"
	"github.com/gopidbox/pidbox/transport"
	"github.com/gopidbox/pidbox/transport/memory"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	tracenoop "go.opentelemetry.io/otel/trace/noop"
)

const otelGatherNodes = 10

// otelSetup is one variant's observer, and what to do between rounds.
type otelSetup struct {
	name  string
	obs   pidbox.Observer
	flush func() // exports and drops what the SDK recorded
	close func()
}

func otelSetups() []*otelSetup {
	noop, err := pidotel.New(pidotel.Options{TracerProvider: tracenoop.NewTracerProvider(), MeterProvider: metricnoop.NewMeterProvider(), Propagator: propagation.TraceContext{}})
	check(err)
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp))
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	on, err := pidotel.New(pidotel.Options{TracerProvider: tp, MeterProvider: mp, Propagator: propagation.TraceContext{}})
	check(err)
	return []*otelSetup{
		{name: "none", flush: func() {}, close: func() {}},
		{name: "off", obs: noop, flush: func() {}, close: func() {}},
		{name: "on", obs: on,
			flush: func() {
				check(tp.ForceFlush(context.Background()))
				var rm metricdata.ResourceMetrics
				check(reader.Collect(context.Background(), &rm))
				exp.Reset()
			},
			close: func() { _ = tp.Shutdown(context.Background()); _ = mp.Shutdown(context.Background()) }},
	}
}

// otelRig is one variant's controller and nodes on one transport.
type otelRig struct {
	ctl   *pidbox.Mailbox
	names []string
	stop  func()
}

func otelRigOn(tr transport.Transport, obs pidbox.Observer, nodes int) *otelRig {
	opts := pidbox.Options{Logger: quiet, Observer: obs}
	ctx, cancel := context.WithCancel(context.Background())
	r := &otelRig{}
	var done []chan struct{}
	var mbs []*pidbox.Mailbox
	for i := range nodes {
		mb, err := pidbox.New(tr, opts)
		check(err)
		mbs = append(mbs, mb)
		n := mb.NewNode(fmt.Sprintf("otel%02d@bench", i), pidbox.NodeOptions{})
		d := make(chan struct{})
		done = append(done, d)
		go func() { defer close(d); _ = n.Serve(ctx) }()
		<-n.Ready()
		r.names = append(r.names, n.Hostname())
	}
	ctl, err := pidbox.New(tr, opts)
	check(err)
	r.ctl = ctl
	r.stop = func() {
		_ = ctl.Close()
		cancel()
		for _, d := range done {
			<-d
		}
		for _, mb := range mbs {
			_ = mb.Close()
		}
	}
	return r
}

// timed runs call n times and returns every duration, and the
// allocations per call.
func timed(n int, call func()) (latencies, float64) {
	var before, after runtime.MemStats
	ls := make(latencies, 0, n)
	runtime.ReadMemStats(&before)
	for range n {
		t := time.Now()
		call()
		ls = append(ls, time.Since(t))
	}
	runtime.ReadMemStats(&after)
	return ls, float64(after.Mallocs-before.Mallocs) / float64(n)
}

func (b *bench) otel() {
	setups := otelSetups()
	defer func() {
		for _, s := range setups {
			s.close()
		}
	}()
	type rigs struct{ mem, redis *otelRig }
	all := map[string]rigs{}
	for _, s := range setups {
		mtr := memory.New(memory.Options{Logger: quiet})
		defer mtr.Close()
		rtr := b.openTransport()
		defer rtr.Close()
		rg := rigs{mem: otelRigOn(mtr, s.obs, 1), redis: otelRigOn(rtr, s.obs, otelGatherNodes)}
		defer rg.mem.stop()
		defer rg.redis.stop()
		all[s.name] = rg
	}
	call := func(r *otelRig, opts ...pidbox.CallOption) func() {
		return func() {
			ctx, cancel := ctxTimeout(5 * time.Second)
			defer cancel()
			res, err := r.ctl.Call(ctx, "ping", nil, opts...)
			check(err)
			if len(res.Replies) == 0 {
				check(fmt.Errorf("no reply"))
			}
		}
	}
	memN, seqN, gatherN := iters(20_000), iters(2_000), iters(500)
	mem, seq, gather := map[string]latencies{}, map[string]latencies{}, map[string]latencies{}
	allocs := map[string]float64{}
	for round := range rounds + 1 {
		// Each round starts with another variant: none of them always
		// follows the garbage of another.
		for i := range setups {
			s := setups[(i+round)%len(setups)]
			rg := all[s.name]
			first := rg.redis.names[0]
			if round == 0 { // warm up
				timed(iters(1000), call(rg.mem, pidbox.To("otel00@bench")))
				timed(iters(200), call(rg.redis, pidbox.To(first)))
				s.flush()
				continue
			}
			ls, a := timed(memN, call(rg.mem, pidbox.To("otel00@bench")))
			mem[s.name] = append(mem[s.name], ls...)
			allocs[s.name] += a / rounds
			s.flush()
			ls, _ = timed(seqN, call(rg.redis, pidbox.To(first)))
			seq[s.name] = append(seq[s.name], ls...)
			s.flush()
			ls, _ = timed(gatherN, call(rg.redis, pidbox.To(rg.redis.names...)))
			gather[s.name] = append(gather[s.name], ls...)
			s.flush()
		}
	}
	us := func(l latencies, p float64) float64 { return l.pct(p) * 1000 }
	for _, s := range setups {
		n := s.name
		b.record("otel_memory_call", n, "p50_us", us(mem[n], 0.5), "p99_us", us(mem[n], 0.99), "mean_us", mean(mem[n]), "allocs_per_call", allocs[n])
		b.record("otel_redis_call", n, "p50_ms", seq[n].pct(0.5), "p99_ms", seq[n].pct(0.99))
		b.record(fmt.Sprintf("otel_redis_gather_%d", otelGatherNodes), n, "p50_ms", gather[n].pct(0.5), "p99_ms", gather[n].pct(0.99))
	}
	ratios := []struct{ name, figure, key string }{
		{"otel_memory_call_p50", "otel_memory_call", "p50_us"},
		{"otel_memory_call_mean", "otel_memory_call", "mean_us"},
		{"otel_redis_call_p50", "otel_redis_call", "p50_ms"},
		{fmt.Sprintf("otel_redis_gather%d_p50", otelGatherNodes), fmt.Sprintf("otel_redis_gather_%d", otelGatherNodes), "p50_ms"},
	}
	for _, r := range ratios {
		none := b.results[r.figure+"/none/"+r.key]
		for _, v := range []string{"off", "on"} {
			if none > 0 {
				fmt.Printf("ratio=%s of=%s/none value=%.3f\n", r.name, v, b.results[r.figure+"/"+v+"/"+r.key]/none)
			}
		}
	}
}

func mean(l latencies) float64 {
	if len(l) == 0 {
		return 0
	}
	var sum time.Duration
	for _, d := range l {
		sum += d
	}
	return float64(sum) / float64(len(l)) / float64(time.Microsecond)
}
