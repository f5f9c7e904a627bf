package main

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/gopidbox/pidbox"
	"github.com/gopidbox/pidbox/examples/internal/demo"
	"github.com/gopidbox/pidbox/transport/memory"
)

// demo tours the public API on an in-process fleet: broadcast, inspect,
// typed commands, glob and pcre patterns, error replies, and shutdown.
func (c *cli) demo(ctx context.Context) error {
	log := slog.New(slog.NewTextHandler(c.stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	tr := memory.New(memory.Options{Logger: log})
	defer tr.Close()
	opts := pidbox.Options{Logger: log}
	fleet, err := demo.StartFleet(ctx, tr, opts, demo.FleetNames())
	if err != nil {
		return err
	}
	defer fleet.Stop()
	mb, err := pidbox.New(tr, opts)
	if err != nil {
		return err
	}
	defer mb.Close()
	fmt.Fprintf(c.stdout, "In-process fleet on the memory broker: %s\n", strings.Join(demo.FleetNames(), ", "))

	steps := []struct {
		about, cmdline, method string
		args                   map[string]any
		opts                   []pidbox.CallOption
		dest                   []string
	}{
		{"Broadcast: every node replies; the call returns as soon as all known nodes have.",
			"ping", "ping", nil, nil, nil},
		{"Inspect one node.",
			"inspect stats -d worker1@demo", "stats", nil, []pidbox.CallOption{pidbox.To("worker1@demo")}, []string{"worker1@demo"}},
		{"A custom typed command: the handler gets a Go struct, returns one.",
			"call set_log_level level=debug -d worker2@demo", "set_log_level", map[string]any{"level": "debug"},
			[]pidbox.CallOption{pidbox.To("worker2@demo")}, []string{"worker2@demo"}},
		{"A glob pattern selects nodes by name (fnmatch).",
			"call get_config key=concurrency --pattern 'worker[12]@*'", "get_config", map[string]any{"key": "concurrency"},
			[]pidbox.CallOption{pidbox.Glob("worker[12]@*")}, nil},
		{"A pcre pattern (anchored at the start of the name).",
			"call pause --pattern 'worker[23]' --matcher pcre", "pause", nil, []pidbox.CallOption{pidbox.PCRE("worker[23]")}, nil},
		{"Errors come back as error replies: bad arguments, unknown commands.",
			"call set_log_level level=loud -d worker1@demo", "set_log_level", map[string]any{"level": "loud"},
			[]pidbox.CallOption{pidbox.To("worker1@demo")}, []string{"worker1@demo"}},
		{"",
			"call reboot -d worker1@demo", "reboot", nil, []pidbox.CallOption{pidbox.To("worker1@demo")}, []string{"worker1@demo"}},
	}
	for _, s := range steps {
		if s.about != "" {
			fmt.Fprintf(c.stdout, "\n# %s\n", s.about)
		}
		fmt.Fprintf(c.stdout, "$ controller %s\n", s.cmdline)
		start := time.Now()
		if err := c.gather(ctx, mb, s.method, s.args, append(s.opts, pidbox.Timeout(2*time.Second))); err != nil {
			return err
		}
		fmt.Fprintf(c.stdout, "(%s)\n", time.Since(start).Round(10*time.Microsecond))
	}

	fmt.Fprintf(c.stdout, "\n# Shutdown sends no reply; the node stops and unbinds its queue.\n$ controller shutdown -d worker3@demo\n")
	if err := mb.Cast(ctx, "shutdown", nil, pidbox.To("worker3@demo")); err != nil {
		return err
	}
	deadline := time.Now().Add(2 * time.Second)
	for {
		names, err := mb.Nodes(ctx)
		if err != nil {
			return err
		}
		if len(names) < len(demo.FleetNames()) || time.Now().After(deadline) {
			fmt.Fprintf(c.stdout, "$ controller nodes\n")
			for _, n := range names {
				fmt.Fprintf(c.stdout, "->  %s\n", n)
			}
			fmt.Fprintf(c.stdout, "\n%d nodes known.\n", len(names))
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	c.exit = exitOK
	return nil
}
