package pidbox_test

import (
	"context"
	"testing"
	"time"

	"github.com/gopidbox/pidbox"
	"github.com/gopidbox/pidbox/internal/wire"
	"github.com/gopidbox/pidbox/transport/memory"
)

// FuzzDispatch publishes arbitrary request bodies, in either codec, into a
// live node: whatever it gets, the node must not crash and must keep
// answering.
func FuzzDispatch(f *testing.F) {
	for _, c := range wire.Codecs() {
		for _, r := range []*wire.Request{
			{Method: "ping"},
			{Method: "stats", Destination: []string{"fuzz@h"}},
			{Method: "echo", Arguments: []byte(`{"a": 1}`), Pattern: "f*", Matcher: "glob"},
			{Method: "hello", Arguments: []byte(`{"from_node": 7}`), Pattern: "(", Matcher: "pcre"},
			{Method: "shutdown", Destination: []string{"someone-else"}},
		} {
			if c.Name() == "msgpack" && len(r.Arguments) > 0 {
				continue
			}
			b, _ := wire.EncodeRequest(c, r)
			f.Add(c.Name() == "msgpack", b)
		}
	}
	tr := memory.New(memory.Options{Logger: quiet})
	defer tr.Close()
	ctl, _ := pidbox.New(tr, pidbox.Options{Logger: quiet})
	defer ctl.Close()
	node := ctl.NewNode("fuzz@h", pidbox.NodeOptions{HandlerTimeout: 100 * time.Millisecond})
	node.Unregister("shutdown") // keep the node up whatever the input says
	node.RegisterFunc("echo", func(_ context.Context, r *pidbox.Request) (any, error) {
		var v map[string]any
		return v, r.Decode(&v)
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = node.Serve(ctx) }()
	<-node.Ready()
	defer func() { cancel(); <-done }()

	f.Fuzz(func(t *testing.T, msgpack bool, body []byte) {
		var c wire.Codec = wire.JSON{}
		if msgpack {
			c = wire.Msgpack{}
		}
		msg := wire.Encode(&wire.Envelope{Body: body, ContentType: c.ContentType(), ContentEncoding: c.ContentEncoding()})
		if err := tr.Publish(context.Background(), celeryExchange, "", msg); err != nil {
			t.Fatal(err)
		}
		rs, err := replies(ctl.Call(context.Background(), "ping", nil, pidbox.To("fuzz@h"), pidbox.Timeout(5*time.Second)))
		if err != nil || len(rs) != 1 || rs[0].Err != nil {
			t.Fatalf("node stopped answering after %q: %v %v", body, rs, err)
		}
	})
}
