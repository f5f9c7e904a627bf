package transport_test

import (
	"context"
	"fmt"

	"github.com/gopidbox/pidbox/transport"
	"github.com/gopidbox/pidbox/transport/memory"
)

// The interface a mailbox and its nodes use, here on the in-process broker:
// bind a queue to a direct exchange, publish under its routing key, and the
// queue's handler receives the message. pidbox publishes Kombu's JSON
// envelope; the transport treats it as opaque bytes.
func Example() {
	var tr transport.Transport = memory.New(memory.Options{})
	defer tr.Close()
	ctx := context.Background()

	ex := transport.Exchange{Name: "demo.pidbox", Kind: transport.Direct}
	got := make(chan []byte, 1)
	sub, err := tr.Subscribe(ctx, transport.Binding{Exchange: ex, RoutingKey: "w1@host", Queue: "w1@host.demo.pidbox"},
		func(msg []byte) { got <- msg })
	if err != nil {
		fmt.Println(err)
		return
	}
	defer sub.Close()

	// Subscribe has returned, so the queue is bound: this message reaches it.
	if err := tr.Publish(ctx, ex, "w1@host", []byte(`{"body":"..."}`)); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(string(<-got))

	bindings, _ := tr.Bindings(ctx, ex)
	fmt.Println(bindings[0].Queue)
	// Output:
	// {"body":"..."}
	// w1@host.demo.pidbox
}
