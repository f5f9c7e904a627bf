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
// redis-server: publish, the node's reply script, the controller's pop.
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
