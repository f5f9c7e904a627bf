package pidbox_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gopidbox/pidbox"
	"github.com/gopidbox/pidbox/reply"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Per-command stats: requests, errors, the last error, total and average
// time; one broadcast of pidbox_stats gathers them from every node, and
// still does when stats is replaced by a Celery-shaped one.
func TestPerCommandStats(t *testing.T) {
	f := newFleet(t, pidbox.Options{})
	for _, name := range []string{"a", "b"} {
		n := f.node(name, pidbox.NodeOptions{})
		var calls atomic.Int32
		n.RegisterFunc("work", func(context.Context, *pidbox.Request) (any, error) {
			time.Sleep(2 * time.Millisecond)
			if calls.Add(1)%2 == 0 {
				return nil, errors.New("failed on " + name + strings.Repeat("!", 1000))
			}
			return "done", nil
		})
		n.RegisterFunc("stats", func(context.Context, *pidbox.Request) (any, error) { return map[string]any{"celery": "shaped"}, nil })
		f.start(n)
	}
	ctx := ctxTimeout(t, 10*time.Second)
	for range 4 {
		_, err := f.ctl.Call(ctx, "work", nil, pidbox.To("a"))
		require.NoError(t, err)
	}
	_, err := f.ctl.Call(ctx, "work", nil, pidbox.To("b"))
	require.NoError(t, err)

	res, err := f.ctl.Call(ctx, "pidbox_stats", nil, pidbox.To("a", "b"))
	require.NoError(t, err)
	require.Len(t, res.Replies, 2)
	byNode := map[string]pidbox.NodeStats{}
	for _, r := range res.Replies {
		st, err := reply.As[pidbox.NodeStats](r)
		require.NoError(t, err)
		byNode[r.Node] = st
	}
	a, b := byNode["a"].Handlers["work"], byNode["b"].Handlers["work"]
	assert.Equal(t, uint64(4), a.Calls)
	assert.Equal(t, uint64(2), a.Errors)
	assert.True(t, strings.HasPrefix(a.LastError, "failed on a!!!"), a.LastError)
	assert.LessOrEqual(t, len(a.LastError), 512+3, "bounded")
	_, err = time.Parse(time.RFC3339Nano, a.LastErrorAt)
	assert.NoError(t, err)
	assert.GreaterOrEqual(t, a.TotalSeconds, 4*0.002)
	assert.InDelta(t, a.TotalSeconds/4, a.AverageSeconds, 1e-9)
	assert.LessOrEqual(t, a.AverageSeconds, a.MaxSeconds)
	assert.Equal(t, uint64(1), b.Calls)
	assert.Zero(t, b.Errors)
	assert.Empty(t, b.LastError)

	// Node.Stats says the same, in process.
	local := f.nodes["a"].Stats().Handlers["work"]
	assert.Equal(t, a.Calls, local.Calls)
	assert.Equal(t, a.LastError, local.LastError)

	// The replaced stats answers in its own shape.
	res, err = f.ctl.Call(ctx, "stats", nil, pidbox.To("a"))
	require.NoError(t, err)
	assert.JSONEq(t, `{"celery": "shaped"}`, string(res.Replies[0].Value))
}
