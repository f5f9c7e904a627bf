package redis_test

import (
	"context"
	"fmt"
	goredis "github.com/redis/go-redis/v9"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gopidbox/pidbox"
	"github.com/gopidbox/pidbox/internal/redistest"
	"github.com/gopidbox/pidbox/transport"
	pidredis "github.com/gopidbox/pidbox/transport/redis"
)

// BenchmarkCall is one sequential call round trip through a real
// redis-server: publish, the node's reply push, the controller's pop.
func BenchmarkCall(b *testing.B) {
	srv := redistest.Start(b)
	v := variant{Kind: transport.Fanout, Serializer: "json"}
	ntr, err := pidredis.Open(context.Background(), srv.URL(0)+benchQuery, pidredis.Options{Logger: quiet})
	if err != nil {
		b.Fatal(err)
	}
	defer ntr.Close()
	nmb, _ := pidbox.New(ntr, pidbox.Options{Logger: quiet})
	node := nmb.NewNode("bench@h", pidbox.NodeOptions{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = node.Serve(ctx) }()
	<-node.Ready()
	defer func() { cancel(); <-done }()
	ctr, err := pidredis.Open(context.Background(), srv.URL(0)+benchQuery, pidredis.Options{Logger: quiet})
	if err != nil {
		b.Fatal(err)
	}
	defer ctr.Close()
	ctl, _ := pidbox.New(ctr, pidbox.Options{Type: v.Kind, Logger: quiet})
	defer ctl.Close()
	b.ReportAllocs()
	for b.Loop() {
		rs, err := replies(ctl.Call(context.Background(), "ping", nil, pidbox.To("bench@h"), pidbox.Timeout(5*time.Second)))
		if err != nil || len(rs) != 1 {
			b.Fatal(err, len(rs))
		}
	}
}

var benchQuery = ""

// BenchmarkGather100 is one broadcast gathering the replies of 100 nodes,
// each with its own subscription, through a real redis-server.
func BenchmarkGather100(b *testing.B) {
	srv := redistest.Start(b)
	ntr, err := pidredis.Open(context.Background(), srv.URL(0)+benchQuery, pidredis.Options{Logger: quiet})
	if err != nil {
		b.Fatal(err)
	}
	defer ntr.Close()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	const n = 100
	for i := range n {
		mb, _ := pidbox.New(ntr, pidbox.Options{Logger: quiet})
		node := mb.NewNode(fmt.Sprintf("n%03d@h", i), pidbox.NodeOptions{})
		wg.Go(func() { _ = node.Serve(ctx) })
		<-node.Ready()
	}
	defer func() { cancel(); wg.Wait() }()
	ctr, err := pidredis.Open(context.Background(), srv.URL(0)+benchQuery, pidredis.Options{Logger: quiet})
	if err != nil {
		b.Fatal(err)
	}
	defer ctr.Close()
	ctl, _ := pidbox.New(ctr, pidbox.Options{Logger: quiet})
	defer ctl.Close()
	b.ReportAllocs()
	for b.Loop() {
		rs, err := replies(ctl.Call(context.Background(), "ping", nil, pidbox.Limit(n), pidbox.Timeout(5*time.Second)))
		if err != nil || len(rs) != n {
			b.Fatal(err, len(rs))
		}
	}
}

var floorPushScript = goredis.NewScript(`redis.call('LPUSH', KEYS[1], ARGV[1]) redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1`)

// BenchmarkFloorCall is BenchmarkCall's Redis traffic driven raw with
// go-redis, with no pidbox code: the floor pidbox is measured against.
func BenchmarkFloorCall(b *testing.B) {
	srv := redistest.Start(b)
	o, _ := goredis.ParseURL(srv.URL(0) + "?protocol=2")
	node, ctl := goredis.NewClient(o), goredis.NewClient(o)
	defer node.Close()
	defer ctl.Close()
	ctx := context.Background()
	ps := node.Subscribe(ctx, "/0.floor")
	if _, err := ps.Receive(ctx); err != nil {
		b.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			msg, err := ps.ReceiveMessage(ctx)
			if err != nil {
				return
			}
			_ = floorPushScript.Run(ctx, node, []string{"floor.reply"}, msg.Payload, 60000).Err()
		}
	}()
	defer func() { ps.Close(); <-done }()
	payload := strings.Repeat("x", 420)
	b.ReportAllocs()
	for b.Loop() {
		if err := ctl.Publish(ctx, "/0.floor", payload).Err(); err != nil {
			b.Fatal(err)
		}
		if _, err := ctl.BRPop(ctx, 5*time.Second, "floor.reply").Result(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkFloorGather100 is BenchmarkGather100's Redis traffic driven raw:
// one PUBLISH, 100 raw subscribers each replying with one script call, and
// the controller popping the replies with BRPOP then RPOP with a count.
func BenchmarkFloorGather100(b *testing.B) {
	srv := redistest.Start(b)
	o, _ := goredis.ParseURL(srv.URL(0) + "?protocol=2")
	nodes, ctl := goredis.NewClient(o), goredis.NewClient(o)
	defer nodes.Close()
	defer ctl.Close()
	ctx := context.Background()
	const n = 100
	var wg sync.WaitGroup
	var subs []*goredis.PubSub
	for range n {
		ps := nodes.Subscribe(ctx, "/0.floor")
		if _, err := ps.Receive(ctx); err != nil {
			b.Fatal(err)
		}
		subs = append(subs, ps)
		wg.Go(func() {
			for {
				msg, err := ps.ReceiveMessage(ctx)
				if err != nil {
					return
				}
				_ = floorPushScript.Run(ctx, nodes, []string{msg.Payload[:40]}, strings.Repeat("r", 380), 60000).Err()
			}
		})
	}
	defer func() {
		for _, ps := range subs {
			ps.Close()
		}
		wg.Wait()
	}()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		key := fmt.Sprintf("floor.reply.%028d", i)
		if err := ctl.Publish(ctx, "/0.floor", key+strings.Repeat("x", 420)).Err(); err != nil {
			b.Fatal(err)
		}
		for got := 0; got < n; {
			if _, err := ctl.BRPop(ctx, 5*time.Second, key).Result(); err != nil {
				b.Fatal(err)
			}
			got++
			if got < n {
				vals, _ := ctl.RPopCount(ctx, key, n-got).Result()
				got += len(vals)
			}
		}
	}
}

// BenchmarkReplyPush is a node's reply on its own, one round trip each:
// pidbox's (LPUSH and PEXPIRE in a MULTI, straight to the caller's list)
// beside the floor's one-script push. Each reports Redis's own time a
// reply, from INFO commandstats, as redis-µs/op: what a gather of N nodes
// costs Redis's one core N times.
func BenchmarkReplyPush(b *testing.B) {
	srv := redistest.Start(b)
	rdb := srv.Client(0)
	defer rdb.Close()
	ctx := context.Background()
	msg := []byte(strings.Repeat("r", 500))
	const oid = "5f0c2a8e-8b1d-4e7a-9c3f-2d6b1a0e9f47"
	key := oid + ".reply.celery.pidbox"
	measure := func(b *testing.B, push func() error) {
		if err := rdb.ConfigResetStat(ctx).Err(); err != nil {
			b.Fatal(err)
		}
		n := 0
		for b.Loop() {
			if err := push(); err != nil {
				b.Fatal(err)
			}
			if n++; n%1000 == 0 {
				rdb.Del(ctx, key)
			}
		}
		b.ReportMetric(redisMicros(b, rdb)/float64(n), "redis-µs/op")
		rdb.Del(ctx, key)
	}
	b.Run("pidbox", func(b *testing.B) {
		tr, err := pidredis.Open(ctx, srv.URL(0), pidredis.Options{Logger: quiet})
		if err != nil {
			b.Fatal(err)
		}
		defer tr.Close()
		replyEx := transport.Exchange{Name: "reply.celery.pidbox", Kind: transport.Direct}
		measure(b, func() error { return tr.Publish(ctx, replyEx, oid, msg) })
	})
	b.Run("floor", func(b *testing.B) {
		floorPushScript.Load(ctx, rdb)
		measure(b, func() error { return floorPushScript.Run(ctx, rdb, []string{key}, msg, 300000).Err() })
	})
}

// redisMicros is Redis's time in commands since the last CONFIG
// RESETSTAT, less that of the DELs and the reading itself.
func redisMicros(b *testing.B, rdb *goredis.Client) float64 {
	info, err := rdb.Info(context.Background(), "commandstats").Result()
	if err != nil {
		b.Fatal(err)
	}
	var total float64
	for _, line := range strings.Split(info, "\n") {
		name, rest, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok || !strings.HasPrefix(name, "cmdstat_") || name == "cmdstat_del" || strings.HasPrefix(name, "cmdstat_config") || name == "cmdstat_info" {
			continue
		}
		for _, kv := range strings.Split(rest, ",") {
			if v, ok := strings.CutPrefix(kv, "usec="); ok {
				var us float64
				if _, err := fmt.Sscan(v, &us); err == nil {
					total += us
				}
			}
		}
	}
	return total
}
