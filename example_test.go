package pidbox_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"time"

	"github.com/gopidbox/pidbox"
	"github.com/gopidbox/pidbox/reply"
	"github.com/gopidbox/pidbox/transport/memory"
)

// serveExample starts nodes on their own mailboxes, as separate processes
// would, and returns a function that stops them.
func serveExample(tr *memory.Broker, setup func(*pidbox.Node), names ...string) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	var done []chan struct{}
	for _, name := range names {
		mb, _ := pidbox.New(tr, pidbox.Options{Logger: slog.New(slog.DiscardHandler)})
		n := mb.NewNode(name, pidbox.NodeOptions{})
		if setup != nil {
			setup(n)
		}
		ch := make(chan struct{})
		done = append(done, ch)
		go func() { defer close(ch); defer mb.Close(); _ = n.Serve(ctx) }()
		<-n.Ready()
	}
	return func() {
		cancel()
		for _, ch := range done {
			<-ch
		}
	}
}

func Example() {
	tr := memory.New(memory.Options{})
	defer tr.Close()
	stop := serveExample(tr, nil, "w1@host", "w2@host")
	defer stop()

	mb, _ := pidbox.New(tr, pidbox.Options{})
	defer mb.Close()
	res, err := mb.Call(context.Background(), "ping", nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	sort.Slice(res.Replies, func(i, j int) bool { return res.Replies[i].Node < res.Replies[j].Node })
	for _, r := range res.Replies {
		fmt.Println(r.Node, string(r.Value))
	}
	// Output:
	// w1@host {"ok":"pong"}
	// w2@host {"ok":"pong"}
}

type resize struct {
	Workers int `json:"workers"`
}

type resized struct {
	From int `json:"from"`
	To   int `json:"to"`
}

func ExampleTyped() {
	tr := memory.New(memory.Options{})
	defer tr.Close()
	stop := serveExample(tr, func(n *pidbox.Node) {
		workers := 4
		n.Register("resize", pidbox.Typed(func(_ context.Context, a resize) (resized, error) {
			if a.Workers < 1 {
				return resized{}, errors.New("workers must be at least 1")
			}
			prev := workers
			workers = a.Workers
			return resized{From: prev, To: workers}, nil
		}))
	}, "billing@host")
	defer stop()

	mb, _ := pidbox.New(tr, pidbox.Options{})
	defer mb.Close()
	ctx := context.Background()
	res, _ := mb.Call(ctx, "resize", resize{Workers: 8}, pidbox.To("billing@host"))
	got, _ := reply.As[resized](res.Replies[0])
	fmt.Printf("%s: %+v\n", res.Replies[0].Node, got)

	res, _ = mb.Call(ctx, "resize", resize{Workers: 0}, pidbox.To("billing@host"))
	fmt.Println(res.Replies[0].Err, res.Outcomes["billing@host"])

	res, _ = mb.Call(ctx, "resize", map[string]any{"workers": "many"}, pidbox.To("billing@host"))
	var re *reply.RemoteError
	fmt.Println(errors.As(res.Replies[0].Err, &re))
	// Output:
	// billing@host: {From:4 To:8}
	// billing@host: workers must be at least 1 failed
	// true
}

func ExampleMailbox_Send() {
	tr := memory.New(memory.Options{})
	defer tr.Close()
	stop := serveExample(tr, nil, "a@h", "b@h", "c@h")
	defer stop()

	mb, _ := pidbox.New(tr, pidbox.Options{})
	defer mb.Close()
	call, err := mb.Send(context.Background(), "ping", nil, pidbox.Timeout(time.Second))
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("expecting", len(call.Expected()), "nodes")
	// Act on each reply as it arrives; stop at the first one.
	for r, err := range call.Replies() {
		if err != nil {
			fmt.Println(err)
			break
		}
		fmt.Println("first reply is a pong:", string(r.Value) == `{"ok":"pong"}`)
		break
	}
	// Output:
	// expecting 3 nodes
	// first reply is a pong: true
}

func ExampleMailbox_Call_missing() {
	tr := memory.New(memory.Options{})
	defer tr.Close()
	stop := serveExample(tr, nil, "a@h")
	defer stop()

	mb, _ := pidbox.New(tr, pidbox.Options{})
	defer mb.Close()
	res, err := mb.Call(context.Background(), "ping", nil, pidbox.To("a@h", "ghost@h"), pidbox.Timeout(200*time.Millisecond))
	fmt.Println(errors.Is(err, pidbox.ErrIncomplete))
	fmt.Println("a@h:", res.Outcomes["a@h"])
	fmt.Println("ghost@h:", res.Outcomes["ghost@h"])
	fmt.Println("missing:", res.Missing())
	// Output:
	// true
	// a@h: replied
	// ghost@h: unknown
	// missing: [ghost@h]
}

func ExampleMailbox_Cast() {
	tr := memory.New(memory.Options{})
	defer tr.Close()
	paused := make(chan string, 1)
	stop := serveExample(tr, func(n *pidbox.Node) {
		n.RegisterFunc("pause", func(_ context.Context, r *pidbox.Request) (any, error) {
			paused <- r.Node.Hostname()
			return nil, nil
		})
	}, "w@h")
	defer stop()

	mb, _ := pidbox.New(tr, pidbox.Options{})
	defer mb.Close()
	// No reply is asked for: Cast returns once the command is sent.
	if err := mb.Cast(context.Background(), "pause", nil, pidbox.To("w@h")); err != nil {
		fmt.Println(err)
	}
	fmt.Println("paused:", <-paused)
	// Output: paused: w@h
}

func ExampleGlob() {
	tr := memory.New(memory.Options{})
	defer tr.Close()
	stop := serveExample(tr, nil, "worker1@a", "worker2@a", "beat@a")
	defer stop()

	mb, _ := pidbox.New(tr, pidbox.Options{})
	defer mb.Close()
	res, _ := mb.Call(context.Background(), "ping", nil, pidbox.Glob("worker*"))
	fmt.Println(len(res.Replies), "workers replied")
	// Output: 2 workers replied
}

func ExampleNode_Register() {
	tr := memory.New(memory.Options{})
	defer tr.Close()
	stop := serveExample(tr, func(n *pidbox.Node) {
		n.Unregister("shutdown") // this node cannot be stopped remotely
		n.RegisterFunc("ping", func(context.Context, *pidbox.Request) (any, error) {
			return pidbox.OK{OK: "custom pong"}, nil
		})
	}, "w@h")
	defer stop()

	mb, _ := pidbox.New(tr, pidbox.Options{})
	defer mb.Close()
	res, _ := mb.Call(context.Background(), "ping", nil, pidbox.To("w@h"))
	fmt.Println(string(res.Replies[0].Value))
	res, _ = mb.Call(context.Background(), "shutdown", nil, pidbox.To("w@h"))
	fmt.Println(res.Replies[0].Err)
	// Output:
	// {"ok":"custom pong"}
	// w@h: unknown method "shutdown"
}
