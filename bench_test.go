package pidbox_test

import (
	"context"
	"testing"
	"time"

	"github.com/gopidbox/pidbox"
	"github.com/gopidbox/pidbox/transport/memory"
)

// BenchmarkMemoryCall is a whole call on the in-process broker: encoding,
// dispatch on the node, the handler, the reply and the demultiplexer,
// with no network in the way.
func BenchmarkMemoryCall(b *testing.B) {
	for _, ser := range []string{"json", "msgpack"} {
		b.Run(ser, func(b *testing.B) {
			tr := memory.New(memory.Options{Logger: quiet})
			defer tr.Close()
			nmb, _ := pidbox.New(tr, pidbox.Options{Logger: quiet})
			node := nmb.NewNode("w@h", pidbox.NodeOptions{})
			node.Register("echo", pidbox.Typed(func(_ context.Context, a setLevel) (setLevel, error) { return a, nil }))
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { defer close(done); _ = node.Serve(ctx) }()
			<-node.Ready()
			defer func() { cancel(); <-done }()
			ctl, _ := pidbox.New(tr, pidbox.Options{Logger: quiet, Serializer: ser})
			defer ctl.Close()
			for _, method := range []string{"ping", "echo"} {
				b.Run(method, func(b *testing.B) {
					b.ReportAllocs()
					for b.Loop() {
						rs, err := replies(ctl.Call(context.Background(), method, setLevel{Level: "debug", Burst: 3}, pidbox.To("w@h"), pidbox.Timeout(5*time.Second)))
						if err != nil || len(rs) != 1 || rs[0].Err != nil {
							b.Fatal(err, rs)
						}
					}
				})
			}
		})
	}
}
