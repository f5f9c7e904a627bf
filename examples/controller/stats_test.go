package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/gopidbox/pidbox"
	"github.com/gopidbox/pidbox/internal/redistest"
	pidredis "github.com/gopidbox/pidbox/transport/redis"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// `controller stats` on a real redis-server: a table of every command
// summed over the nodes, the latest error with its node, and the nodes
// that cannot answer.
func TestStatsView(t *testing.T) {
	srv := redistest.Start(t)
	url := srv.URL(0)
	quiet := slog.New(slog.DiscardHandler)
	ctx, cancel := context.WithCancel(context.Background())
	tr, err := pidredis.Open(ctx, url, pidredis.Options{Logger: quiet})
	require.NoError(t, err)
	t.Cleanup(func() { _ = tr.Close() })
	var done []chan struct{}
	t.Cleanup(func() {
		cancel()
		for _, d := range done {
			<-d
		}
	})
	for _, name := range []string{"a@h", "b@h", "old@h"} {
		mb, err := pidbox.New(tr, pidbox.Options{Logger: quiet})
		require.NoError(t, err)
		t.Cleanup(func() { _ = mb.Close() })
		n := mb.NewNode(name, pidbox.NodeOptions{})
		n.RegisterFunc("work", func(context.Context, *pidbox.Request) (any, error) { return "ok", nil })
		n.RegisterFunc("fail", func(context.Context, *pidbox.Request) (any, error) { return nil, errors.New("disk full on " + name) })
		if name == "old@h" {
			n.Unregister("pidbox_stats") // as a node that predates it
		}
		d := make(chan struct{})
		done = append(done, d)
		go func() { defer close(d); _ = n.Serve(ctx) }()
		<-n.Ready()
	}
	ctl, err := pidbox.New(tr, pidbox.Options{Logger: quiet})
	require.NoError(t, err)
	t.Cleanup(func() { _ = ctl.Close() })
	for range 3 {
		_, err := ctl.Call(ctx, "work", nil, pidbox.To("a@h", "b@h"), pidbox.Timeout(5*time.Second))
		require.NoError(t, err)
	}
	_, err = ctl.Call(ctx, "fail", nil, pidbox.To("a@h"), pidbox.Timeout(5*time.Second))
	require.NoError(t, err)
	time.Sleep(10 * time.Millisecond) // a@h's fail handler timing is recorded after its reply
	_, err = ctl.Call(ctx, "fail", nil, pidbox.To("b@h"), pidbox.Timeout(5*time.Second))
	require.NoError(t, err)

	var out, errOut bytes.Buffer
	code := run(context.Background(), []string{"--broker", url, "--timeout", "3s", "--json", "stats"}, &out, &errOut)
	require.Equal(t, exitOK, code, errOut.String())
	var fs fleetStats
	require.NoError(t, json.Unmarshal(out.Bytes(), &fs), out.String())
	assert.Len(t, fs.Nodes, 2)
	assert.Contains(t, fs.Unanswered["old@h"], "unknown method")
	rows := map[string]commandRow{}
	for _, r := range fs.Commands {
		rows[r.Command] = r
	}
	assert.Equal(t, commandRow{Command: "work", Nodes: 2, HandlerStats: pidbox.HandlerStats{Calls: 6}}, zeroTimes(rows["work"]))
	fail := rows["fail"]
	assert.Equal(t, uint64(2), fail.Calls)
	assert.Equal(t, uint64(2), fail.Errors)
	assert.Equal(t, "b@h", fail.LastErrorNode, "the latest error")
	assert.Equal(t, "disk full on b@h", fail.LastError)
	assert.InDelta(t, fail.TotalSeconds/2, fail.AverageSeconds, 1e-9)

	out.Reset()
	code = run(context.Background(), []string{"--broker", url, "--timeout", "3s", "stats"}, &out, &errOut)
	require.Equal(t, exitOK, code, errOut.String())
	assert.Regexp(t, `(?m)^work +2 +6 +0 +0 `, out.String())
	assert.Regexp(t, `(?m)^fail +2 +2 +2 +0 .* b@h: disk full on b@h$`, out.String())
	assert.Contains(t, out.String(), "2 nodes reported.")
	assert.Contains(t, out.String(), "No pidbox stats from: old@h (unknown method")
}

func zeroTimes(r commandRow) commandRow {
	r.TotalSeconds, r.AverageSeconds, r.MaxSeconds = 0, 0, 0
	return r
}
