package pidbox_test

import (
	"context"
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
// by exchange, as the caller handed it over.
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

// borrowing is recording, saying it holds no message once published.
type borrowing struct{ *recording }

func (borrowing) BorrowsMessages() {}

// On a transport.Borrower, requests and replies are encoded into buffers
// that are reused once published; on other transports each message keeps
// a buffer of its own, since the transport may hold on to it.
func TestMessageBuffersReusedOnBorrowers(t *testing.T) {
	for _, borrows := range []bool{true, false} {
		rec := &recording{Broker: memory.New(memory.Options{Logger: quiet}), msgs: map[string][][]byte{}}
		t.Cleanup(func() { _ = rec.Close() })
		var tr transport.Transport = rec
		if borrows {
			tr = borrowing{rec}
		}
		ctl, err := pidbox.New(tr, pidbox.Options{Logger: quiet})
		require.NoError(t, err)
		t.Cleanup(func() { _ = ctl.Close() })
		nmb, err := pidbox.New(tr, pidbox.Options{Logger: quiet})
		require.NoError(t, err)
		node := nmb.NewNode("w1@h", pidbox.NodeOptions{})
		ctx, cancel := context.WithCancel(context.Background())
		served := make(chan struct{})
		go func() { _ = node.Serve(ctx); close(served) }()
		t.Cleanup(func() { cancel(); <-served })
		<-node.Ready()

		const calls = 20
		for range calls {
			res, err := ctl.Call(ctxTimeout(t, 5*time.Second), "ping", nil, pidbox.To("w1@h"))
			require.NoError(t, err)
			require.Len(t, res.Replies, 1)
		}
		// The recorder holds every message, so buffers that were not
		// reused cannot share an address.
		for _, ex := range []string{"celery.pidbox", "reply.celery.pidbox"} {
			buffers, msgs := rec.buffers(ex)
			require.Equal(t, calls, msgs, ex)
			if borrows {
				assert.Less(t, buffers, msgs, "%s: no buffer was reused", ex)
			} else {
				assert.Equal(t, msgs, buffers, "%s: a buffer was reused on a transport that may hold messages", ex)
			}
		}
	}
}
