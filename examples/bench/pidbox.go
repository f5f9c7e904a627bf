package main

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gopidbox/pidbox"
	"github.com/gopidbox/pidbox/transport"
	pidredis "github.com/gopidbox/pidbox/transport/redis"
)

// fleet is pidbox nodes serving in this process on one transport, each
// node with its own subscription connection.
type fleet struct {
	tr     *pidredis.Transport
	apart  []*pidredis.Transport // one per node, when they have their own
	nodes  []*pidbox.Node
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func (b *bench) openTransport() *pidredis.Transport {
	ctx, cancel := ctxTimeout(10 * time.Second)
	defer cancel()
	tr, err := pidredis.Open(ctx, b.url, pidredis.Options{Logger: quiet})
	check(err)
	return tr
}

// noRebind hides a transport's transport.Rebinder, for measuring what
// re-declaring bindings with every publish costs.
type noRebind struct{ transport.Transport }

func (b *bench) startFleet(prefix string, n int) *fleet { return b.startFleetOn(prefix, n, false) }

// startFleetApart starts n nodes each on a transport of its own, as nodes
// in their own processes are: their replies cannot share pipelines.
func (b *bench) startFleetApart(prefix string, n int) *fleet {
	f := &fleet{}
	for range n {
		f.apart = append(f.apart, b.openTransport())
	}
	f.start(prefix, n, func(i int) transport.Transport { return f.apart[i] })
	return f
}

func (b *bench) startFleetOn(prefix string, n int, plain bool) *fleet {
	f := &fleet{tr: b.openTransport()}
	var tr transport.Transport = f.tr
	if plain {
		tr = noRebind{f.tr}
	}
	f.start(prefix, n, func(int) transport.Transport { return tr })
	return f
}

func (f *fleet) start(prefix string, n int, trFor func(i int) transport.Transport) {
	ctx, cancel := context.WithCancel(context.Background())
	f.cancel = cancel
	var mu sync.Mutex
	var start sync.WaitGroup
	sem := make(chan struct{}, 64)
	for i := range n {
		start.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			mb, err := pidbox.New(trFor(i), pidbox.Options{Logger: quiet})
			check(err)
			node := mb.NewNode(fmt.Sprintf("%s%04d@bench", prefix, i), pidbox.NodeOptions{Concurrency: 256})
			f.wg.Go(func() { _ = node.Serve(ctx) })
			<-node.Ready()
			mu.Lock()
			f.nodes = append(f.nodes, node)
			mu.Unlock()
		})
	}
	start.Wait()
}

func (f *fleet) stop() {
	f.cancel()
	f.wg.Wait()
	if f.tr != nil {
		_ = f.tr.Close()
	}
	for _, tr := range f.apart {
		_ = tr.Close()
	}
}

func (b *bench) controller() (*pidbox.Mailbox, func()) { return b.controllerOn(false) }

func (b *bench) controllerOn(plain bool) (*pidbox.Mailbox, func()) {
	rtr := b.openTransport()
	var tr transport.Transport = rtr
	if plain {
		tr = noRebind{rtr}
	}
	mb, err := pidbox.New(tr, pidbox.Options{Logger: quiet})
	check(err)
	return mb, func() { _ = mb.Close(); _ = rtr.Close() }
}

// rounds alternates the pidbox and floor measurements, so that drift in a
// shared machine's speed hits both alike.
const rounds = 5

func (b *bench) sequential() {
	n := iters(3000)
	f := b.startFleet("seq", 1)
	defer f.stop()
	ctl, done := b.controller()
	defer done()
	pf := b.startFleetOn("seqplain", 1, true)
	defer pf.stop()
	pctl, pdone := b.controllerOn(true)
	defer pdone()
	caller := func(ctl *pidbox.Mailbox, dest string) func() {
		return func() {
			rs, err := ctl.Call(context.Background(), "ping", nil, pidbox.To(dest), pidbox.Timeout(5*time.Second))
			check(err)
			if len(rs.Replies) != 1 {
				check(fmt.Errorf("sequential call: %d replies", len(rs.Replies)))
			}
		}
	}
	call := caller(ctl, f.nodes[0].Hostname())
	plainCall := caller(pctl, pf.nodes[0].Hostname())
	floorCall, stopFloor := b.floorSequential()
	defer stopFloor()
	var lat, flat, plat latencies
	var total, ftotal, ptotal time.Duration
	measure := func(fn func(), lat *latencies, total *time.Duration, k int) {
		start := time.Now()
		for range k {
			t := time.Now()
			fn()
			*lat = append(*lat, time.Since(t))
		}
		*total += time.Since(start)
	}
	var discard latencies
	var dt time.Duration
	measure(call, &discard, &dt, 200)
	measure(floorCall, &discard, &dt, 200)
	measure(plainCall, &discard, &dt, 200)
	// Short rounds: this machine's wake-up latency changes with its load
	// (a loopback round trip takes 40 µs on a busy core, 150 µs on an idle
	// one), and a change must hit all three alike.
	const chunk = 50
	for range max(n/chunk, 1) {
		measure(call, &lat, &total, chunk)
		measure(floorCall, &flat, &ftotal, chunk)
		measure(plainCall, &plat, &ptotal, chunk)
	}
	b.record("seq_call", "pidbox", "n", len(lat), "p50_ms", lat.pct(0.5), "p90_ms", lat.pct(0.9), "p99_ms", lat.pct(0.99), "calls_per_s", float64(len(lat))/total.Seconds())
	b.record("seq_call", "pidbox_norebind", "n", len(plat), "p50_ms", plat.pct(0.5), "p90_ms", plat.pct(0.9), "p99_ms", plat.pct(0.99), "calls_per_s", float64(len(plat))/ptotal.Seconds())
	b.record("seq_call", "floor", "n", len(flat), "p50_ms", flat.pct(0.5), "p90_ms", flat.pct(0.9), "p99_ms", flat.pct(0.99), "calls_per_s", float64(len(flat))/ftotal.Seconds())
}

// concurrentLoads are the caller and node counts of the concurrent
// figures (-loads; by default many callers, and two, which must gain too).
func concurrentLoads() []struct{ callers, nodes int } {
	var out []struct{ callers, nodes int }
	for _, l := range strings.Split(*loads, ",") {
		var c, n int
		if _, err := fmt.Sscanf(strings.TrimSpace(l), "%dx%d", &c, &n); err != nil || c < 1 || n < 1 {
			check(fmt.Errorf("-loads: %q is not callers x nodes", l))
		}
		out = append(out, struct{ callers, nodes int }{c, n})
	}
	return out
}

func (b *bench) concurrent() {
	d := 5 * time.Second
	if *quick {
		d = time.Second
	}
	for _, l := range concurrentLoads() {
		name := "concurrent"
		if l.callers != 64 {
			name = fmt.Sprintf("concurrent_%d", l.callers)
		}
		f := b.startFleet("conc", l.nodes)
		names := make([]string, l.nodes)
		for i, n := range f.nodes {
			names[i] = n.Hostname()
		}
		ctl, done := b.controller()
		pidboxCall := func(dest string) bool {
			rs, err := ctl.Call(context.Background(), "ping", nil, pidbox.To(dest), pidbox.Timeout(5*time.Second))
			check(err)
			return len(rs.Replies) == 1
		}
		floorCall, stopFloor := b.floorCaller(l.nodes, l.callers)
		// Alternate, as the other figures do: five slices of each.
		var pl, fl latencies
		var pn, fn int
		for range rounds {
			pn += runCallers(l.callers, d/rounds, names, pidboxCall, &pl)
			fn += runCallers(l.callers, d/rounds, nil, floorCall, &fl)
		}
		stopFloor()
		done()
		f.stop()
		b.record(name, "pidbox", "callers", l.callers, "nodes", l.nodes,
			"calls_per_s", float64(pn)/d.Seconds(), "p50_ms", pl.pct(0.5), "p90_ms", pl.pct(0.9), "p99_ms", pl.pct(0.99))
		b.record(name, "floor", "callers", l.callers, "nodes", l.nodes,
			"calls_per_s", float64(fn)/d.Seconds(), "p50_ms", fl.pct(0.5), "p90_ms", fl.pct(0.9), "p99_ms", fl.pct(0.99))
	}
}

// runCallers runs callers goroutines calling for d, caller c on node
// c%len(nodes) (names for pidbox, indexes for the floor), and returns the
// calls answered; their latencies are added to lat.
func runCallers(callers int, d time.Duration, names []string, call func(dest string) bool, lat *latencies) int {
	var calls atomic.Int64
	var mu sync.Mutex
	var wg sync.WaitGroup
	deadline := time.Now().Add(d)
	for c := range callers {
		wg.Go(func() {
			dest := fmt.Sprint(c)
			if names != nil {
				dest = names[c%len(names)]
			}
			var mine latencies
			for time.Now().Before(deadline) {
				t := time.Now()
				if call(dest) {
					calls.Add(1)
					mine = append(mine, time.Since(t))
				}
			}
			mu.Lock()
			*lat = append(*lat, mine...)
			mu.Unlock()
		})
	}
	wg.Wait()
	return int(calls.Load())
}

// gatherSizes are the node counts of the gather figures; from 100 nodes
// up, a broadcast without a limit is measured too.
var gatherSizes = []int{10, 50, 100, 500, 1000}

func (b *bench) gathers() {
	for _, n := range gatherSizes {
		if n > *maxNodes {
			continue
		}
		it := iters(map[int]int{10: 300, 50: 200, 100: 200, 500: 60, 1000: 40}[n])
		f := b.startFleet("g", n)
		ctl, done := b.controller()
		floorGather, stopFloor := b.floorGather(n)
		nolimit := n >= 100
		b.gatherPidbox(ctl, n, 3, pidbox.Limit(n))
		if nolimit {
			b.gatherPidbox(ctl, n, 3)
		}
		floorGather(3)
		var lat, nlat, flat latencies
		for range rounds {
			lat = append(lat, b.gatherPidbox(ctl, n, max(it/rounds, 1), pidbox.Limit(n))...)
			if nolimit {
				nlat = append(nlat, b.gatherPidbox(ctl, n, max(it/rounds, 1))...)
			}
			flat = append(flat, floorGather(max(it/rounds, 1))...)
		}
		stopFloor()
		done()
		f.stop()
		b.record(fmt.Sprintf("gather_%d", n), "pidbox", "nodes", n, "iters", len(lat), "p50_ms", lat.pct(0.5), "p99_ms", lat.pct(0.99))
		if nolimit {
			// The Celery inspect case: no limit; the call returns once
			// every node the broker lists as bound replied.
			b.record(fmt.Sprintf("nolimit_%d", n), "pidbox", "nodes", n, "iters", len(nlat), "p50_ms", nlat.pct(0.5), "p99_ms", nlat.pct(0.99))
		}
		b.record(fmt.Sprintf("gather_%d", n), "floor", "nodes", n, "iters", len(flat), "p50_ms", flat.pct(0.5), "p99_ms", flat.pct(0.99))
	}
	b.gatherApart(100)
}

// gatherApart is gather_N with every node on a transport of its own, as
// in a fleet of processes: the figures above let the replies of nodes
// that share a transport share pipelines, which nodes in their own
// processes cannot.
func (b *bench) gatherApart(n int) {
	it := iters(200)
	f := b.startFleetApart("ga", n)
	ctl, done := b.controller()
	floorGather, stopFloor := b.floorGather(n)
	b.gatherPidbox(ctl, n, 3, pidbox.Limit(n))
	floorGather(3)
	var lat, flat latencies
	for range rounds {
		lat = append(lat, b.gatherPidbox(ctl, n, max(it/rounds, 1), pidbox.Limit(n))...)
		flat = append(flat, floorGather(max(it/rounds, 1))...)
	}
	stopFloor()
	done()
	f.stop()
	name := fmt.Sprintf("gather_%d_apart", n)
	b.record(name, "pidbox", "nodes", n, "iters", len(lat), "p50_ms", lat.pct(0.5), "p99_ms", lat.pct(0.99))
	b.record(name, "floor", "nodes", n, "iters", len(flat), "p50_ms", flat.pct(0.5), "p99_ms", flat.pct(0.99))
}

func (b *bench) gatherPidbox(ctl *pidbox.Mailbox, n, it int, opts ...pidbox.CallOption) latencies {
	opts = append(opts, pidbox.Timeout(10*time.Second))
	var lat latencies
	for range it {
		t := time.Now()
		rs, err := ctl.Call(context.Background(), "ping", nil, opts...)
		d := time.Since(t)
		check(err)
		if len(rs.Replies) != n {
			check(fmt.Errorf("gather of %d nodes got %d replies", n, len(rs.Replies)))
		}
		lat = append(lat, d)
	}
	return lat
}
