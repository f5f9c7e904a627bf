package memory_test

import (
	"context"
	"log/slog"
	"strings"
	"testing"

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
	var logs strings.Builder
	b := memory.New(memory.Options{QueueLimit: 3, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	defer b.Close()
	ctx := context.Background()
	ex := transport.Exchange{Name: "x", Kind: transport.Direct}
	s, err := b.Subscribe(ctx, transport.Binding{Exchange: ex, Queue: "q"})
	require.NoError(t, err)
	for _, m := range []string{"1", "2", "3", "4", "5"} {
		require.NoError(t, b.Publish(ctx, ex, "", []byte(m)))
	}
	for _, want := range []string{"1", "2", "3"} {
		got, err := s.Receive(ctx)
		require.NoError(t, err)
		assert.Equal(t, want, string(got))
	}
	assert.Contains(t, logs.String(), "queue full")
	require.NoError(t, b.Publish(ctx, ex, "", []byte("6")), "room again after receiving")
	got, err := s.Receive(ctx)
	require.NoError(t, err)
	assert.Equal(t, "6", string(got))
}

func TestUnknownKind(t *testing.T) {
	b := memory.New(memory.Options{})
	defer b.Close()
	ex := transport.Exchange{Name: "x", Kind: "topic"}
	assert.ErrorContains(t, b.Publish(context.Background(), ex, "", nil), "unknown kind")
	_, err := b.Subscribe(context.Background(), transport.Binding{Exchange: ex, Queue: "q"})
	assert.ErrorContains(t, err, "unknown kind")
}
