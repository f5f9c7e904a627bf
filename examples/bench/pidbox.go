package main

import (
	"context"
	"fmt"
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

func (b *bench) startFleetOn(prefix string, n int, plain bool) *fleet {
	f := &fleet{tr: b.openTransport()}
	var tr transport.Transport = f.tr
	if plain {
		tr = noRebind{f.tr}
	}
	ctx, cancel := context.WithCancel(context.Background())
	f.cancel = cancel
	var mu sync.Mutex
	var start sync.WaitGroup
	sem := make(chan struct{}, 64)
	for i := range n {
		start.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			mb, err := pidbox.New(tr, pidbox.Options{Logger: quiet})
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
	return f
}

func (f *fleet) stop() {
	f.cancel()
	f.wg.Wait()
	_ = f.tr.Close()
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
	for range rounds {
		measure(call, &lat, &total, n/rounds)
		measure(floorCall, &flat, &ftotal, n/rounds)
		measure(plainCall, &plat, &ptotal, n/rounds)
	}
	b.record("seq_call", "pidbox", "n", len(lat), "p50_ms", lat.pct(0.5), "p90_ms", lat.pct(0.9), "p99_ms", lat.pct(0.99), "calls_per_s", float64(len(lat))/total.Seconds())
	b.record("seq_call", "pidbox_norebind", "n", len(plat), "p50_ms", plat.pct(0.5), "p90_ms", plat.pct(0.9), "p99_ms", plat.pct(0.99), "calls_per_s", float64(len(plat))/ptotal.Seconds())
	b.record("seq_call", "floor", "n", len(flat), "p50_ms", flat.pct(0.5), "p90_ms", flat.pct(0.9), "p99_ms", flat.pct(0.99), "calls_per_s", float64(len(flat))/ftotal.Seconds())
}

const concurrentCallers, concurrentNodes = 64, 8

func (b *bench) concurrent() {
	d := 5 * time.Second
	if *quick {
		d = time.Second
	}
	f := b.startFleet("conc", concurrentNodes)
	ctl, done := b.controller()
	var calls atomic.Int64
	var mu sync.Mutex
	var lat latencies
	var wg sync.WaitGroup
	deadline := time.Now().Add(d)
	for c := range concurrentCallers {
		wg.Go(func() {
			dest := f.nodes[c%concurrentNodes].Hostname()
			var mine latencies
			for time.Now().Before(deadline) {
				t := time.Now()
				rs, err := ctl.Call(context.Background(), "ping", nil, pidbox.To(dest), pidbox.Timeout(5*time.Second))
				check(err)
				if len(rs.Replies) == 1 {
					calls.Add(1)
					mine = append(mine, time.Since(t))
				}
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		})
	}
	wg.Wait()
	done()
	f.stop()
	b.record("concurrent", "pidbox", "callers", concurrentCallers, "nodes", concurrentNodes,
		"calls_per_s", float64(calls.Load())/d.Seconds(), "p99_ms", lat.pct(0.99))
	b.floorConcurrent(d)
}

func (b *bench) gathers() {
	for _, n := range []int{10, 50, 100, 1000} {
		if n > *maxNodes {
			continue
		}
		it := iters(map[int]int{10: 300, 50: 200, 100: 200, 1000: 40}[n])
		f := b.startFleet("g", n)
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
		b.record(fmt.Sprintf("gather_%d", n), "pidbox", "nodes", n, "iters", len(lat), "p50_ms", lat.pct(0.5), "p99_ms", lat.pct(0.99))
		b.record(fmt.Sprintf("gather_%d", n), "floor", "nodes", n, "iters", len(flat), "p50_ms", flat.pct(0.5), "p99_ms", flat.pct(0.99))
	}
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

// noLimit is the Celery inspect case: a broadcast with no limit, which
// returns once every node the controller knows to be alive replied.
func (b *bench) noLimit() {
	const n = 100
	it := iters(200)
	f := b.startFleet("nl", n)
	ctl, done := b.controller()
	b.gatherPidbox(ctl, n, 3)
	lat := b.gatherPidbox(ctl, n, it)
	done()
	f.stop()
	b.record("nolimit_100", "pidbox", "nodes", n, "iters", it, "p50_ms", lat.pct(0.5), "p99_ms", lat.pct(0.99))
}
