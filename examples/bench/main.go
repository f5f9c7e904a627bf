// Command bench measures pidbox against the raw Redis floor and against
// Kombu, in one run on one redis-server it starts itself, and prints one
// key=value line per figure, then the ratios; then the same on a
// rabbitmq-server it starts (amqp.go). See docs/BENCHMARKS.md.
//
//	go run ./examples/bench             # everything (Kombu needs /usr/bin/python3 with python3-kombu)
//	go run ./examples/bench -quick      # fewer iterations
//	go run ./examples/bench -kombu=false
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"runtime/pprof"
	"sort"
	"strings"
	"time"

	"github.com/gopidbox/pidbox/internal/redistest"
)

var (
	quick    = flag.Bool("quick", false, "fewer iterations")
	kombu    = flag.Bool("kombu", true, "measure Kombu side by side (needs /usr/bin/python3 with kombu)")
	only     = flag.String("only", "", "comma-separated figures to run (seq,concurrent,gather,memory,otel,topology,broadcast5000,clusterpubsub,kombu,amqp); default all")
	maxNodes = flag.Int("max-nodes", 1000, "largest gather size")
	cpuprof  = flag.String("cpuprofile", "", "write a CPU profile of the whole run to this file")
	loads    = flag.String("loads", "64x8,2x2", "the concurrent figure's loads, callers x nodes, comma-separated")
)

var quiet = slog.New(slog.DiscardHandler)

func main() {
	flag.Parse()
	if *cpuprof != "" {
		f, err := os.Create(*cpuprof)
		check(err)
		check(pprof.StartCPUProfile(f))
		defer pprof.StopCPUProfile()
	}
	dir, err := os.MkdirTemp("", "pidbox-bench")
	check(err)
	defer os.RemoveAll(dir)
	srv, err := redistest.Launch(dir)
	check(err)
	defer srv.Kill()
	b := &bench{url: srv.URL(0), dir: dir, results: map[string]float64{}}
	fmt.Printf("bench go=%s cpus=%d gomaxprocs=%d redis=%s\n", runtime.Version(), runtime.NumCPU(), runtime.GOMAXPROCS(0), srv.Addr())

	run := func(name string, fn func()) {
		if *only == "" || strings.Contains(","+*only+",", ","+name+",") {
			fn()
		}
	}
	run("seq", b.sequential)
	run("concurrent", b.concurrent)
	run("gather", b.gathers)
	run("memory", b.memory)
	run("otel", b.otel)
	run("topology", b.topology)           // topology.go
	run("broadcast5000", b.broadcast5000) // topology.go
	run("clusterpubsub", b.clusterPubSub) // topology.go
	if *kombu {
		run("kombu", b.kombu)
	}
	b.ratios()
	run("amqp", b.amqp) // its own broker, figures and ratios: amqp.go
}

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

type bench struct {
	url     string
	dir     string
	results map[string]float64
}

// iters scales an iteration count down for -quick.
func iters(n int) int {
	if *quick {
		return max(n/10, 5)
	}
	return n
}

// record prints a figure line and keeps its values for the ratios.
func (b *bench) record(figure, impl string, kv ...any) {
	var sb strings.Builder
	fmt.Fprintf(&sb, "figure=%s impl=%s", figure, impl)
	for i := 0; i+1 < len(kv); i += 2 {
		k := kv[i].(string)
		switch v := kv[i+1].(type) {
		case float64:
			fmt.Fprintf(&sb, " %s=%.3f", k, v)
			b.results[figure+"/"+impl+"/"+k] = v
		default:
			fmt.Fprintf(&sb, " %s=%v", k, v)
		}
	}
	fmt.Println(sb.String())
}

// latencies summarises a set of durations.
type latencies []time.Duration

func (l latencies) pct(p float64) float64 {
	if len(l) == 0 {
		return 0
	}
	s := append(latencies(nil), l...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := int(p * float64(len(s)-1))
	return float64(s[i]) / float64(time.Millisecond)
}

func ms(v float64) time.Duration { return time.Duration(v * float64(time.Millisecond)) }

func ctxTimeout(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d)
}

func (b *bench) ratios() {
	type ratio struct {
		name, num, den string
		target         float64
		lessIsBetter   bool
	}
	rs := []ratio{
		{"seq_call_p50 pidbox/floor", "seq_call/pidbox/p50_ms", "seq_call/floor/p50_ms", 1.1, true},
		{"seq_call_p50 pidbox/pidbox_norebind", "seq_call/pidbox/p50_ms", "seq_call/pidbox_norebind/p50_ms", 0, true},
		{"seq_call_p50 pidbox/kombu", "seq_call/pidbox/p50_ms", "seq_call/kombu/p50_ms", 0.2, true},
		{"concurrent_calls_per_s pidbox/floor", "concurrent/pidbox/calls_per_s", "concurrent/floor/calls_per_s", 1.0, false},
		{"concurrent_p99 pidbox/floor", "concurrent/pidbox/p99_ms", "concurrent/floor/p99_ms", 0, true},
		{"concurrent2_calls_per_s pidbox/floor", "concurrent_2/pidbox/calls_per_s", "concurrent_2/floor/calls_per_s", 0, false},
		{"gather10_p50 pidbox/kombu", "gather_10/pidbox/p50_ms", "gather_10/kombu/p50_ms", 0, true},
		{"gather50_p50 pidbox/kombu", "gather_50/pidbox/p50_ms", "gather_50/kombu/p50_ms", 0, true},
	}
	for _, n := range []int{100, 500, 1000} {
		rs = append(rs,
			ratio{fmt.Sprintf("gather%d_p50 pidbox/floor", n), fmt.Sprintf("gather_%d/pidbox/p50_ms", n), fmt.Sprintf("gather_%d/floor/p50_ms", n), 1.2, true},
			ratio{fmt.Sprintf("nolimit%d_p50 pidbox/gather%d_floor", n, n), fmt.Sprintf("nolimit_%d/pidbox/p50_ms", n), fmt.Sprintf("gather_%d/floor/p50_ms", n), 1.2, true})
	}
	rs = append(rs,
		ratio{"gather100_apart_p50 pidbox/floor", "gather_100_apart/pidbox/p50_ms", "gather_100_apart/floor/p50_ms", 0, true},
		ratio{"nolimit_p50 pidbox/kombu", "nolimit_100/pidbox/p50_ms", "nolimit/kombu/p50_ms", 0, true},
		ratio{"controller_heap after/before", "memory/pidbox/heap_after_kib", "memory/pidbox/heap_before_kib", 1.10, true})
	for _, r := range rs {
		num, ok1 := b.results[r.num]
		den, ok2 := b.results[r.den]
		if !ok1 || !ok2 || den == 0 {
			continue
		}
		v := num / den
		line := fmt.Sprintf("ratio=%s value=%.3f", strings.ReplaceAll(r.name, " ", " of="), v)
		if r.target > 0 {
			met := v <= r.target
			op := "<="
			if !r.lessIsBetter {
				met, op = v >= r.target, ">="
			}
			line += fmt.Sprintf(" target=%s%.2f met=%v", op, r.target, met)
		}
		fmt.Println(line)
	}
	if rss, ok := b.results["memory/pidbox/idle_node_rss_mib"]; ok {
		fmt.Printf("ratio=idle_node_rss_mib value=%.1f target=<=15 met=%v\n", rss, rss <= 15)
	}
}
