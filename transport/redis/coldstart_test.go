package redis_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/gopidbox/pidbox/internal/redistest"
	"github.com/gopidbox/pidbox/transport"
	pidredis "github.com/gopidbox/pidbox/transport/redis"
	goredis "github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Subscribe refuses a queue beyond MaxQueues with ErrTooManyQueues, counts
// fanout subscriptions apart (they hold no pop connection), and takes a
// queue again once one is closed.
func TestMaxQueues(t *testing.T) {
	srv := redistest.Start(t)
	tr := open(t, srv, srv.URL(0), pidredis.Options{MaxQueues: 2})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	direct := transport.Exchange{Name: "mq", Kind: transport.Direct}
	bind := func(q string) transport.Binding { return transport.Binding{Exchange: direct, RoutingKey: q, Queue: q} }
	nop := func([]byte) {}

	s1, err := tr.Subscribe(ctx, bind("q1"), nop)
	require.NoError(t, err)
	_, err = tr.Subscribe(ctx, bind("q2"), nop)
	require.NoError(t, err)
	_, err = tr.Subscribe(ctx, bind("q3"), nop)
	require.ErrorIs(t, err, pidredis.ErrTooManyQueues)
	assert.Contains(t, err.Error(), "q3")
	members, err := srv.Client(0).SMembers(ctx, "_kombu.binding.mq").Result()
	require.NoError(t, err)
	assert.Len(t, members, 2, "the refused queue is not bound")

	fan := transport.Binding{Exchange: transport.Exchange{Name: "mqf", Kind: transport.Fanout}, Queue: "f1"}
	_, err = tr.Subscribe(ctx, fan, nop)
	require.NoError(t, err, "a fanout subscription holds no pop connection")

	require.NoError(t, s1.Close())
	got := make(chan []byte, 1)
	s3, err := tr.Subscribe(ctx, bind("q3"), func(m []byte) { got <- append([]byte(nil), m...) })
	require.NoError(t, err, "a closed queue frees its place")
	require.NoError(t, tr.Publish(ctx, direct, "q3", []byte("hello")))
	select {
	case m := <-got:
		assert.Equal(t, "hello", string(m))
	case <-ctx.Done():
		t.Fatal("the queue taken in the freed place reads nothing")
	}
	require.NoError(t, s3.Close())
}

// Open checks the server on one connection, in one round trip after the
// connection's handshake: PING and CONFIG GET go together, and the client
// does not spend a round trip naming its library (CLIENT SETINFO, which
// Redis 7.2 counts as a command and older servers refuse as an error).
func TestOpenOneConnection(t *testing.T) {
	srv := redistest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	admin := srv.Client(0)
	before := clients(t, ctx, admin)
	require.NoError(t, admin.ConfigResetStat(ctx).Err())
	open(t, srv, srv.URL(0), pidredis.Options{})

	var ours []string
	for addr, line := range clients(t, ctx, admin) {
		if _, ok := before[addr]; !ok {
			ours = append(ours, line)
		}
	}
	require.Len(t, ours, 1, "Open uses one connection: %v", ours)
	assert.NotContains(t, ours[0], "lib-name=go-redis")
	stats, err := admin.Info(ctx, "commandstats", "errorstats").Result()
	require.NoError(t, err)
	assert.Contains(t, stats, "cmdstat_ping:calls=1,")
	assert.NotContains(t, stats, "setinfo")
	assert.NotContains(t, stats, "errorstat_")
}

// clients maps each client connection's address to its CLIENT LIST line.
func clients(t *testing.T, ctx context.Context, admin *goredis.Client) map[string]string {
	t.Helper()
	list, err := admin.ClientList(ctx).Result()
	require.NoError(t, err)
	out := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(list), "\n") {
		for _, f := range strings.Fields(line) {
			if addr, ok := strings.CutPrefix(f, "addr="); ok {
				out[addr] = line
			}
		}
	}
	return out
}
