package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"time"

	"github.com/gopidbox/pidbox/internal/redistest"
)

// kombu measures Debian's python3-kombu on the same Redis: Kombu nodes as
// Python processes, driven by a Kombu client.
func (b *bench) kombu() {
	if _, err := os.Stat(redistest.Python); err != nil {
		fmt.Println("figure=kombu skipped=no-python")
		return
	}
	if err := exec.Command(redistest.Python, "-c", "import kombu, redis").Run(); err != nil {
		fmt.Println("figure=kombu skipped=no-kombu")
		return
	}
	stop := b.kombuNodes("k", 1)
	lat := b.kombuRun("seq", "k0000@bench", strconv.Itoa(iters(500)))
	stop()
	b.record("seq_call", "kombu", "n", len(lat), "p50_ms", lat.pct(0.5), "p99_ms", lat.pct(0.99), "calls_per_s", 1000/lat.pct(0.5))

	for _, n := range []int{10, 50} {
		stop := b.kombuNodes("k", n)
		lat := b.kombuRun("gather", strconv.Itoa(n), strconv.Itoa(iters(100)))
		b.record(fmt.Sprintf("gather_%d", n), "kombu", "nodes", n, "iters", len(lat), "p50_ms", lat.pct(0.5), "p99_ms", lat.pct(0.99))
		if n == 10 {
			lat := b.kombuRun("nolimit", strconv.Itoa(max(iters(10), 3)))
			b.record("nolimit", "kombu", "nodes", n, "iters", len(lat), "p50_ms", lat.pct(0.5), "p99_ms", lat.pct(0.99))
		}
		stop()
	}
}

const kombuNodeScript = "transport/redis/testdata/kombu_node.py"

func (b *bench) kombuNodes(prefix string, n int) (stop func()) {
	var cmds []*exec.Cmd
	var wg sync.WaitGroup
	var mu sync.Mutex
	for i := range n {
		wg.Go(func() {
			cmd := exec.Command(redistest.Python, kombuNodeScript, b.url, fmt.Sprintf("%s%04d@bench", prefix, i), "fanout", "json")
			out, err := cmd.StdoutPipe()
			check(err)
			check(cmd.Start())
			buf := make([]byte, 6)
			if _, err := out.Read(buf); err != nil || string(buf[:5]) != "READY" {
				check(fmt.Errorf("kombu node did not start: %q %v", buf, err))
			}
			mu.Lock()
			cmds = append(cmds, cmd)
			mu.Unlock()
		})
	}
	wg.Wait()
	time.Sleep(200 * time.Millisecond)
	return func() {
		for _, c := range cmds {
			_ = c.Process.Kill()
			_ = c.Wait()
		}
	}
}

func (b *bench) kombuRun(args ...string) latencies {
	cmd := exec.Command(redistest.Python, append([]string{"examples/bench/kombu_bench.py", b.url}, args...)...)
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	check(err)
	var msv []float64
	check(json.Unmarshal(out, &msv))
	lat := make(latencies, len(msv))
	for i, v := range msv {
		lat[i] = ms(v)
	}
	return lat
}
