package redis_test

import (
	"context"
	"fmt"
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
	v := variant{transport.Fanout, "json"}
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
	ctl, _ := pidbox.New(ctr, pidbox.Options{Type: v.kind, Logger: quiet})
	defer ctl.Close()
	b.ReportAllocs()
	for b.Loop() {
		rs, err := ctl.Call(context.Background(), "ping", nil, pidbox.To("bench@h"), pidbox.Timeout(5*time.Second))
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
		rs, err := ctl.Call(context.Background(), "ping", nil, pidbox.Limit(n), pidbox.Timeout(5*time.Second))
		if err != nil || len(rs) != n {
			b.Fatal(err, len(rs))
		}
	}
}
