package memory_test

import (
	"context"
	"fmt"

	"github.com/gopidbox/pidbox"
	"github.com/gopidbox/pidbox/transport/memory"
)

// A node and a controller sharing one in-process broker, as two processes
// share a Redis or RabbitMQ broker.
func ExampleNew() {
	tr := memory.New(memory.Options{})
	defer tr.Close()
	ctx, cancel := context.WithCancel(context.Background())

	workers, _ := pidbox.New(tr, pidbox.Options{})
	defer workers.Close()
	node := workers.NewNode("w1@host", pidbox.NodeOptions{})
	done := make(chan struct{})
	go func() { defer close(done); _ = node.Serve(ctx) }()
	defer func() { cancel(); <-done }()
	<-node.Ready()

	mb, _ := pidbox.New(tr, pidbox.Options{})
	defer mb.Close()
	res, err := mb.Call(ctx, "ping", nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, r := range res.Replies {
		fmt.Println(r.Node, string(r.Value))
	}
	// Output: w1@host {"ok":"pong"}
}
