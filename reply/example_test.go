package reply_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/gopidbox/pidbox"
	"github.com/gopidbox/pidbox/reply"
	"github.com/gopidbox/pidbox/transport/memory"
)

type scaled struct {
	From int `json:"from"`
	To   int `json:"to"`
}

func ExampleAs() {
	tr := memory.New(memory.Options{})
	defer tr.Close()
	quiet := pidbox.Options{Logger: slog.New(slog.DiscardHandler)}
	nodes, _ := pidbox.New(tr, quiet)
	defer nodes.Close()
	n := nodes.NewNode("w@h", pidbox.NodeOptions{})
	n.RegisterFunc("scale", func(context.Context, *pidbox.Request) (any, error) { return scaled{From: 2, To: 4}, nil })
	n.RegisterFunc("fail", func(context.Context, *pidbox.Request) (any, error) { return nil, errors.New("KeyError('x')") })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go n.Serve(ctx)
	<-n.Ready()

	mb, _ := pidbox.New(tr, quiet)
	defer mb.Close()
	res, _ := mb.Call(context.Background(), "scale", nil, pidbox.To("w@h"))
	s, err := reply.As[scaled](res.Replies[0])
	fmt.Println(s, err)

	res, _ = mb.Call(context.Background(), "fail", nil, pidbox.To("w@h"))
	var re *reply.RemoteError
	if errors.As(res.Replies[0].Err, &re) {
		fmt.Println(re.Node, "said", re.Message)
	}
	// Output:
	// {2 4} <nil>
	// w@h said KeyError('x')
}
