package celery_test

import (
	"context"
	"fmt"
	"time"

	"github.com/gopidbox/pidbox"
	"github.com/gopidbox/pidbox/celery"
	"github.com/gopidbox/pidbox/transport/memory"
)

// A Go node that answers Celery's control vocabulary: here a controller
// revokes a task, as `celery control revoke` does, and asks which tasks
// the node runs, as `celery inspect registered` does.
func ExampleRegister() {
	tr := memory.New(memory.Options{})
	defer tr.Close()
	ctx, cancel := context.WithCancel(context.Background())

	workers, _ := pidbox.New(tr, pidbox.Options{})
	defer workers.Close()
	node := workers.NewNode("billing@host", pidbox.NodeOptions{})
	state := celery.Register(node, celery.Options{
		Tasks: func() []celery.Task { return []celery.Task{{Name: "billing.charge"}} },
	})
	done := make(chan struct{})
	go func() { defer close(done); _ = node.Serve(ctx) }()
	defer func() { cancel(); <-done }()
	<-node.Ready()

	mb, _ := pidbox.New(tr, pidbox.Options{})
	defer mb.Close()
	res, _ := mb.Call(ctx, "revoke", map[string]any{"task_id": "6c1b"}, pidbox.To("billing@host"))
	fmt.Println(string(res.Replies[0].Value))
	fmt.Println("revoked:", state.IsRevoked("6c1b"))

	res, _ = mb.Call(ctx, "registered", nil, pidbox.To("billing@host"), pidbox.Timeout(time.Second))
	fmt.Println(string(res.Replies[0].Value))
	// Output:
	// {"ok":"tasks 6c1b flagged as revoked"}
	// revoked: true
	// ["billing.charge"]
}

// An Emitter announces a Go worker to `celery events` and Flower; Receive
// reads events as Celery's EventReceiver does.
func ExampleNewEmitter() {
	tr := memory.New(memory.Options{})
	defer tr.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	events := make(chan celery.Event, 16)
	received := make(chan error, 1)
	go func() {
		received <- celery.Receive(ctx, tr, celery.ReceiveOptions{RoutingKey: "worker.#"},
			func(e celery.Event) { events <- e })
	}()
	// Receive subscribes on its own goroutine: wait until its queue is bound.
	for ex := celery.EventExchange(tr); ; time.Sleep(time.Millisecond) {
		if bs, _ := tr.Bindings(ctx, ex); len(bs) > 0 {
			break
		}
	}

	em, err := celery.NewEmitter(tr, celery.EmitterOptions{Hostname: "billing@host", Version: "1.4"})
	if err != nil {
		fmt.Println(err)
		return
	}
	runCtx, stop := context.WithCancel(ctx)
	ran := make(chan error, 1)
	go func() { ran <- em.Run(runCtx) }() // worker-online, heartbeats, worker-offline
	for e := range events {
		if e.Type() == "worker-online" {
			fmt.Println(e.Type(), e.Hostname(), e["sw_ver"])
			break
		}
	}
	stop()
	fmt.Println("run:", <-ran)
	for e := range events {
		if e.Type() == "worker-offline" {
			fmt.Println(e.Type(), e.Hostname())
			break
		}
	}
	cancel()
	fmt.Println("receive:", <-received)
	// Output:
	// worker-online billing@host 1.4
	// run: <nil>
	// worker-offline billing@host
	// receive: <nil>
}
