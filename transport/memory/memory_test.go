package memory_test

import (
	"context"
	"testing"
	"time"

	"github.com/gopidbox/pidbox/internal/testlog"
	"github.com/gopidbox/pidbox/transport"
	"github.com/gopidbox/pidbox/transport/memory"
	"github.com/gopidbox/pidbox/transport/transporttest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestConformance(t *testing.T) {
	transporttest.Run(t, func(*testing.T) transport.Transport { return memory.New(memory.Options{}) })
}

func TestQueueLimitDropsNewest(t *testing.T) {
	var logs testlog.Buffer
	b := memory.New(memory.Options{QueueLimit: 3, Logger: logs.Logger()})
	defer b.Close()
	ctx := context.Background()
	ex := transport.Exchange{Name: "x", Kind: transport.Direct}
	got := make(chan string, 10)
	gate := make(chan struct{})
	s, err := b.Subscribe(ctx, transport.Binding{Exchange: ex, Queue: "q"}, func(m []byte) {
		if string(m) == "1" {
			<-gate // a slow handler: the queue fills behind it
		}
		got <- string(m)
	})
	require.NoError(t, err)
	defer s.Close()
	require.NoError(t, b.Publish(ctx, ex, "", []byte("1")))
	time.Sleep(50 * time.Millisecond)
	for _, m := range []string{"2", "3", "4", "5", "6"} {
		require.NoError(t, b.Publish(ctx, ex, "", []byte(m)))
	}
	assert.Contains(t, logs.String(), "queue full")
	close(gate)
	var order []string
	for i := range 5 {
		if i == 4 {
			require.NoError(t, b.Publish(ctx, ex, "", []byte("7")), "room again")
		}
		select {
		case m := <-got:
			order = append(order, m)
		case <-time.After(5 * time.Second):
			t.Fatalf("got only %v", order)
		}
	}
	assert.Equal(t, []string{"1", "2", "3", "4", "7"}, order, "5 and 6 found the queue full")
}

func TestUnknownKind(t *testing.T) {
	b := memory.New(memory.Options{})
	defer b.Close()
	ex := transport.Exchange{Name: "x", Kind: "headers"}
	assert.ErrorContains(t, b.Publish(context.Background(), ex, "", nil), "unknown kind")
	_, err := b.Subscribe(context.Background(), transport.Binding{Exchange: ex, Queue: "q"}, func([]byte) {})
	assert.ErrorContains(t, err, "unknown kind")
}
