package main

// Topology figures (go run ./examples/bench -only topology,broadcast5000,clusterpubsub):
//
//   - gather latency of a broadcast to 100 nodes on single Redis, on
//     Sentinel (1 master, 1 replica, 3 sentinels) and on Redis Cluster
//     (3 masters, 3 replicas), and the Redis connections each topology
//     costs per node;
//   - a broadcast to 5,000 nodes on single Redis, the nodes in a child
//     process: gather latency, the controller's memory, Redis's memory and
//     CPU per broadcast;
//   - classic PUBLISH beside sharded SPUBLISH on the cluster.
//
// This file uses from the rest of the bench command only its small helpers
// (record, iters, check, latencies, readRSS, quiet); the 5,000-node fleet
// runs in a child process started from this same binary (see init).

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gopidbox/pidbox"
	"github.com/gopidbox/pidbox/internal/redistest"
	pidredis "github.com/gopidbox/pidbox/transport/redis"
	goredis "github.com/redis/go-redis/v9"
)

// fleetEnv, when set in the environment, makes this binary serve a fleet
// of nodes instead of benchmarking: "URL|NODES|PER_TRANSPORT".
const fleetEnv = "PIDBOX_BENCH_FLEET"

func init() {
	if spec := os.Getenv(fleetEnv); spec != "" {
		serveFleetProcess(spec)
		os.Exit(0)
	}
}

// serveFleetProcess serves the fleet, prints "READY rss_kib=N" once every
// node listens, and serves until its standard input closes (the parent
// exited or is done).
func serveFleetProcess(spec string) {
	parts := strings.Split(spec, "|")
	if len(parts) != 3 {
		check(fmt.Errorf("bad %s=%q", fleetEnv, spec))
	}
	n, err := strconv.Atoi(parts[1])
	check(err)
	per, err := strconv.Atoi(parts[2])
	check(err)
	stop := serveNodes(parts[0], "n", n, per)
	fmt.Printf("READY rss_kib=%d\n", readRSS(os.Getpid()))
	_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
	stop()
}

// serveNodes serves n fanout nodes, perTransport of them sharing one
// transport, and returns once every node listens. Each node still has its
// own pub/sub connection; transports share the command pool and the
// blocking-pop connections.
func serveNodes(url, prefix string, n, perTransport int) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	var trs []*pidredis.Transport
	var served, start sync.WaitGroup
	sem := make(chan struct{}, 32)
	var tr *pidredis.Transport
	for i := range n {
		if i%perTransport == 0 {
			octx, ocancel := context.WithTimeout(context.Background(), 30*time.Second)
			var err error
			tr, err = pidredis.Open(octx, url, pidredis.Options{Logger: quiet})
			ocancel()
			check(err)
			trs = append(trs, tr)
		}
		tr := tr
		start.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			mb, err := pidbox.New(tr, pidbox.Options{Logger: quiet})
			check(err)
			node := mb.NewNode(fmt.Sprintf("%s%05d@topology", prefix, i), pidbox.NodeOptions{})
			served.Go(func() { _ = node.Serve(ctx) })
			select {
			case <-node.Ready():
			case <-time.After(2 * time.Minute):
				check(fmt.Errorf("node %d not ready after 2 minutes", i))
			}
		})
	}
	start.Wait()
	return func() {
		cancel()
		served.Wait()
		for _, tr := range trs {
			_ = tr.Close()
		}
	}
}

// gatherLatencies broadcasts ping with Limit(n) it times and returns the
// latencies of the calls that got all n replies.
func gatherLatencies(url string, n, it int) latencies {
	ctx, cancel := ctxTimeout(30 * time.Second)
	tr, err := pidredis.Open(ctx, url, pidredis.Options{Logger: quiet})
	cancel()
	check(err)
	defer tr.Close()
	mb, err := pidbox.New(tr, pidbox.Options{Logger: quiet})
	check(err)
	defer mb.Close()
	var lat latencies
	for i := range it + 3 {
		start := time.Now()
		res, err := mb.Call(context.Background(), "ping", nil, pidbox.Limit(n), pidbox.Timeout(30*time.Second))
		if err != nil || len(res.Replies) != n {
			got := 0
			if res != nil {
				got = len(res.Replies)
			}
			check(fmt.Errorf("broadcast to %d nodes: %d replies, err %v", n, got, err))
		}
		if i >= 3 { // warm-up
			lat = append(lat, time.Since(start))
		}
	}
	return lat
}

// serverInfo reads one numeric field of INFO from each addr and sums it.
func serverInfo(addrs []string, section, field string) float64 {
	sum := 0.0
	for _, a := range addrs {
		c := goredis.NewClient(&goredis.Options{Addr: a})
		info, err := c.Info(context.Background(), section).Result()
		_ = c.Close()
		check(err)
		for _, line := range strings.Split(info, "\r\n") {
			if v, ok := strings.CutPrefix(line, field+":"); ok {
				f, err := strconv.ParseFloat(v, 64)
				check(err)
				sum += f
			}
		}
	}
	return sum
}

// quietRedis drops go-redis's own log lines (sentinel discovery, dial
// retries).
type quietRedis struct{}

func (quietRedis) Printf(context.Context, string, ...any) {}

// topology measures a broadcast to 100 nodes on each topology.
func (b *bench) topology() {
	goredis.SetLogger(quietRedis{})
	const n, per = 100, 20
	it := iters(200)
	type topo struct {
		name  string
		url   string
		addrs []string // the data servers, where connections are counted
		close func()
	}
	var topos []topo
	single, err := redistest.Launch(mkTemp(b.dir, "single"))
	check(err)
	topos = append(topos, topo{"single", single.URL(0), []string{single.Addr()}, single.Kill})
	if s, err := redistest.LaunchSentinel(mkTemp(b.dir, "sentinel")); err == nil {
		ctx, cancel := ctxTimeout(10 * time.Second)
		m, err := s.MasterAddr(ctx)
		cancel()
		check(err)
		topos = append(topos, topo{"sentinel", s.URL(0), []string{m}, s.Close})
	} else {
		fmt.Fprintln(os.Stderr, "bench: no Sentinel figures:", err)
	}
	if c, err := redistest.LaunchCluster(mkTemp(b.dir, "cluster")); err == nil {
		topos = append(topos, topo{"cluster", c.URL(), c.Addrs(), c.Close})
	} else {
		fmt.Fprintln(os.Stderr, "bench: no Cluster figures:", err)
	}
	for _, tp := range topos {
		before := serverInfo(tp.addrs, "clients", "connected_clients")
		stop := serveNodes(tp.url, tp.name, n, per)
		after := serverInfo(tp.addrs, "clients", "connected_clients")
		lat := gatherLatencies(tp.url, n, it)
		stop()
		tp.close()
		b.record("topology_gather_100", tp.name, "n", len(lat), "p50_ms", lat.pct(0.5), "p90_ms", lat.pct(0.9),
			"p99_ms", lat.pct(0.99), "conns_per_node", (after-before)/n, "nodes_per_transport", per)
	}
}

func mkTemp(parent, name string) string {
	d, err := os.MkdirTemp(parent, name)
	check(err)
	return d
}

// broadcast5000 measures a broadcast to 5,000 nodes on single Redis. The
// nodes run in a child process, 50 to a transport; the controller, alone
// in this process, is what the memory figures describe.
func (b *bench) broadcast5000() {
	goredis.SetLogger(quietRedis{})
	const n, per = 5000, 50
	srv, err := redistest.Launch(mkTemp(b.dir, "b5000"))
	check(err)
	defer srv.Kill()
	addrs := []string{srv.Addr()}
	memBefore := serverInfo(addrs, "memory", "used_memory")
	clientsBefore := serverInfo(addrs, "clients", "connected_clients")

	exe, err := os.Executable()
	check(err)
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s|%d|%d", fleetEnv, srv.URL(0), n, per))
	stdin, err := cmd.StdinPipe()
	check(err)
	out, err := cmd.StdoutPipe()
	check(err)
	cmd.Stderr = os.Stderr
	check(cmd.Start())
	started := time.Now()
	defer func() {
		_ = stdin.Close()
		_ = cmd.Wait()
	}()
	sc := bufio.NewScanner(out)
	fleetRSS := 0.0
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "READY rss_kib="); ok {
			fleetRSS, _ = strconv.ParseFloat(v, 64)
			break
		}
	}
	if fleetRSS == 0 {
		check(fmt.Errorf("the fleet process ended before its nodes were ready"))
	}
	ready := time.Since(started)
	memFleet := serverInfo(addrs, "memory", "used_memory")
	clientsFleet := serverInfo(addrs, "clients", "connected_clients")

	runtime.GC()
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	cpu0 := serverInfo(addrs, "cpu", "used_cpu_sys") + serverInfo(addrs, "cpu", "used_cpu_user")
	it := iters(30)
	lat := gatherLatencies(srv.URL(0), n, it)
	cpu1 := serverInfo(addrs, "cpu", "used_cpu_sys") + serverInfo(addrs, "cpu", "used_cpu_user")
	runtime.ReadMemStats(&m1)
	peak := serverInfo(addrs, "memory", "used_memory_peak")
	runtime.GC()
	var m2 runtime.MemStats
	runtime.ReadMemStats(&m2)
	kib := func(v uint64) float64 { return float64(v) / 1024 }
	b.record("broadcast_5000", "pidbox", "n", len(lat), "p50_ms", lat.pct(0.5), "p90_ms", lat.pct(0.9),
		"nodes_ready_s", ready.Seconds(),
		"controller_alloc_per_broadcast_kib", kib(m1.TotalAlloc-m0.TotalAlloc)/float64(it+3),
		"controller_heap_after_gc_kib", kib(m2.HeapAlloc), "controller_rss_mib", float64(readRSS(os.Getpid()))/1024,
		"fleet_rss_kib_per_node", fleetRSS/n,
		"redis_mem_fleet_mib", (memFleet-memBefore)/(1<<20), "redis_mem_per_node_kib", (memFleet-memBefore)/1024/n,
		"redis_mem_peak_mib", peak/(1<<20),
		"redis_cpu_ms_per_broadcast", (cpu1-cpu0)*1000/float64(it+3),
		"redis_conns_per_node", (clientsFleet-clientsBefore)/n)
}

// clusterPubSub compares classic PUBLISH (what the transport uses on
// Cluster) with sharded SPUBLISH, raw with go-redis: one channel, 100
// subscriber connections, one publisher; the time until every subscriber
// has a message, and the CPU the whole cluster spends per message.
func (b *bench) clusterPubSub() {
	goredis.SetLogger(quietRedis{})
	c, err := redistest.LaunchCluster(mkTemp(b.dir, "pubsub"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench: no Cluster pub/sub figures:", err)
		return
	}
	defer c.Close()
	const subs, channel = 100, "/0.celery.pidbox"
	it := iters(300)
	cc := goredis.NewClusterClient(&goredis.ClusterOptions{Addrs: c.Addrs(), Protocol: 2})
	defer cc.Close()
	ctx := context.Background()
	for _, sharded := range []bool{false, true} {
		got := make(chan struct{}, subs*4)
		var pss []*goredis.PubSub
		for range subs {
			var ps *goredis.PubSub
			if sharded {
				ps = cc.SSubscribe(ctx, channel)
			} else {
				ps = cc.Subscribe(ctx, channel)
			}
			_, err := ps.Receive(ctx) // the confirmation
			check(err)
			pss = append(pss, ps)
			go func() {
				for range ps.Channel() {
					got <- struct{}{}
				}
			}()
		}
		master, err := cc.MasterForKey(ctx, channel)
		check(err)
		publish := func(i int) error {
			if sharded {
				return cc.SPublish(ctx, channel, strconv.Itoa(i)).Err()
			}
			return master.Publish(ctx, channel, strconv.Itoa(i)).Err()
		}
		cpu := func() float64 {
			return serverInfo(c.Addrs(), "cpu", "used_cpu_sys") + serverInfo(c.Addrs(), "cpu", "used_cpu_user")
		}
		cpu0 := cpu()
		var lat latencies
		for i := range it {
			start := time.Now()
			check(publish(i))
			for range subs {
				<-got
			}
			lat = append(lat, time.Since(start))
		}
		cpu1 := cpu()
		for _, ps := range pss {
			_ = ps.Close()
		}
		impl := "publish"
		if sharded {
			impl = "spublish"
		}
		b.record("cluster_pubsub_100", impl, "n", len(lat), "p50_ms", lat.pct(0.5), "p90_ms", lat.pct(0.9),
			"cluster_cpu_us_per_msg", (cpu1-cpu0)*1e6/float64(it))
	}
}
