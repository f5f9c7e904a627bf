// Package alloctest measures what a call and a dispatch allocate, for the
// tests that hold pidbox's hot paths to their allocation counts (with and
// without an Observer).
package alloctest

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/gopidbox/pidbox"
	"github.com/gopidbox/pidbox/transport/memory"
)

// Measure returns the allocations of a ping call to one node, and of a
// cast with its dispatch on the node, on the memory broker, with opts on
// both sides: testing.AllocsPerRun over 200 runs, the least of three.
func Measure(t testing.TB, opts pidbox.Options) (call, cast float64) {
	t.Helper()
	if Race {
		t.Skip("allocation counts are not comparable under the race detector; scripts/test runs this without it")
	}
	quiet := slog.New(slog.DiscardHandler)
	opts.Logger = quiet
	tr := memory.New(memory.Options{Logger: quiet})
	defer tr.Close()
	nmb, err := pidbox.New(tr, opts)
	if err != nil {
		t.Fatal(err)
	}
	node := nmb.NewNode("w@h", pidbox.NodeOptions{})
	marked := make(chan struct{}, 1)
	node.RegisterFunc("mark", func(context.Context, *pidbox.Request) (any, error) { marked <- struct{}{}; return nil, nil })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = node.Serve(ctx) }()
	<-node.Ready()
	defer func() { cancel(); <-done }()
	ctl, err := pidbox.New(tr, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer ctl.Close()
	ping := func() {
		if _, err := ctl.Call(context.Background(), "ping", nil, pidbox.To("w@h"), pidbox.Timeout(5*time.Second)); err != nil {
			t.Fatal(err)
		}
	}
	mark := func() {
		if err := ctl.Cast(context.Background(), "mark", nil, pidbox.To("w@h")); err != nil {
			t.Fatal(err)
		}
		<-marked
	}
	for range 100 { // warm up: the reply queue is bound once, pools fill
		ping()
		mark()
	}
	// The least of three measures: a loaded machine's scheduling can add
	// an allocation now and then, never take one away.
	call, cast = testing.AllocsPerRun(200, ping), testing.AllocsPerRun(200, mark)
	for range 2 {
		call, cast = min(call, testing.AllocsPerRun(200, ping)), min(cast, testing.AllocsPerRun(200, mark))
	}
	return call, cast
}
