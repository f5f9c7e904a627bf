package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gopidbox/pidbox"
)

func (b *bench) memory() {
	b.idleRSS()
	b.heapAfterCalls()
}

// idleRSS starts the example worker as its own process and reads its
// resident set once it has idled for two seconds.
func (b *bench) idleRSS() {
	bin := filepath.Join(b.dir, "worker")
	build := exec.Command("go", "build", "-o", bin, "./examples/worker")
	build.Stderr = os.Stderr
	check(build.Run())
	cmd := exec.Command(bin, "--broker", b.url, "--hostname", "idle@bench", "--log-level", "warn")
	check(cmd.Start())
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	ctl, done := b.controller()
	defer done()
	deadline := time.Now().Add(20 * time.Second)
	for {
		rs, err := ctl.Call(context.Background(), "ping", nil, pidbox.To("idle@bench"), pidbox.Timeout(200*time.Millisecond))
		if err == nil && len(rs.Replies) == 1 {
			break
		}
		if time.Now().After(deadline) {
			check(fmt.Errorf("worker did not answer"))
		}
	}
	time.Sleep(2 * time.Second)
	rss := readRSS(cmd.Process.Pid)
	b.record("memory", "pidbox", "idle_node_rss_mib", float64(rss)/1024)
}

func readRSS(pid int) int64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	check(err)
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kib, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			check(err)
			return kib
		}
	}
	check(fmt.Errorf("no VmRSS for %d", pid))
	return 0
}

// memCallers and memNodes are the load of the memory figure: the
// concurrent figure's first, whatever -loads says.
const memCallers, memNodes = 64, 8

// heapAfterCalls makes 100,000 calls and compares the heap, after GC,
// with its level after a warm-up.
func (b *bench) heapAfterCalls() {
	n := iters(100_000)
	f := b.startFleet("mem", memNodes)
	defer f.stop()
	ctl, done := b.controller()
	defer done()
	run := func(total int) {
		var next atomic.Int64
		var wg sync.WaitGroup
		for c := range memCallers {
			wg.Go(func() {
				dest := f.nodes[c%len(f.nodes)].Hostname()
				for next.Add(1) <= int64(total) {
					_, err := ctl.Call(context.Background(), "ping", nil, pidbox.To(dest), pidbox.Timeout(5*time.Second))
					check(err)
				}
			})
		}
		wg.Wait()
	}
	heap := func() uint64 {
		runtime.GC()
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	run(n / 10)
	before := heap()
	start := time.Now()
	run(n)
	elapsed := time.Since(start)
	after := heap()
	b.record("memory", "pidbox", "calls", n, "heap_before_kib", float64(before)/1024, "heap_after_kib", float64(after)/1024,
		"calls_per_s", float64(n)/elapsed.Seconds())
}
