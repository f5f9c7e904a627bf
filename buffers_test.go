package pidbox_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gopidbox/pidbox"
	"github.com/gopidbox/pidbox/transport"
	"github.com/gopidbox/pidbox/transport/memory"
)

// recording is a memory broker that keeps every message published to it,
// by exchange, as the caller handed it over: it reads none of them again,
// it only counts their buffers.
type recording struct {
	*memory.Broker
	mu   sync.Mutex
	msgs map[string][][]byte
}

func (r *recording) Publish(ctx context.Context, ex transport.Exchange, routingKey string, msg []byte) error {
	r.mu.Lock()
	r.msgs[ex.Name] = append(r.msgs[ex.Name], msg)
	r.mu.Unlock()
	return r.Broker.Publish(ctx, ex, routingKey, msg) // it copies msg
}

// buffers counts the distinct buffers the messages to ex were in.
func (r *recording) buffers(ex string) (buffers, msgs int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	seen := map[*byte]bool{}
	for _, m := range r.msgs[ex] {
		seen[unsafe.SliceData(m)] = true
	}
	return len(seen), len(r.msgs[ex])
}

// Requests and replies are encoded into buffers that are reused once
// published: transports keep no message once published (package
// transport), and the memory broker copies what it queues.
func TestMessageBuffersReused(t *testing.T) {
	rec := &recording{Broker: memory.New(memory.Options{Logger: quiet}), msgs: map[string][][]byte{}}
	t.Cleanup(func() { _ = rec.Close() })
	ctl, err := pidbox.New(rec, pidbox.Options{Logger: quiet})
	require.NoError(t, err)
	t.Cleanup(func() { _ = ctl.Close() })
	nmb, err := pidbox.New(rec, pidbox.Options{Logger: quiet})
	require.NoError(t, err)
	node := nmb.NewNode("w1@h", pidbox.NodeOptions{})
	node.Register("echo", pidbox.Typed(func(_ context.Context, a map[string]int) (map[string]int, error) { return a, nil }))
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan struct{})
	go func() { _ = node.Serve(ctx); close(served) }()
	t.Cleanup(func() { cancel(); <-served })
	<-node.Ready()

	const calls = 20
	for i := range calls {
		res, err := ctl.Call(ctxTimeout(t, 5*time.Second), "echo", map[string]int{"i": i}, pidbox.To("w1@h"))
		require.NoError(t, err)
		require.Len(t, res.Replies, 1)
		assert.JSONEq(t, fmt.Sprintf(`{"i": %d}`, i), string(res.Replies[0].Value), "each reply is its own, though its buffer is reused")
	}
	// The recorder holds every message, so buffers that were not reused
	// cannot share an address.
	for _, ex := range []string{"celery.pidbox", "reply.celery.pidbox"} {
		buffers, msgs := rec.buffers(ex)
		require.Equal(t, calls, msgs, ex)
		assert.Less(t, buffers, msgs, "%s: no buffer was reused", ex)
	}
}
