package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/gopidbox/pidbox"
	"github.com/gopidbox/pidbox/celery"
	"github.com/spf13/cobra"
)

// Exit statuses of probe, one per failed check.
const (
	exitNotLive  = 4 // the node did not answer ping
	exitNotReady = 5 // the node answers, but consumes none or not all of its queues
	exitNoBeat   = 6 // the node answers, but sends no worker heartbeat
)

// probeCommand is `controller probe`: a liveness and readiness check of
// one worker, for Kubernetes exec probes.
func (c *cli) probeCommand() *cobra.Command {
	var ready, heartbeat bool
	var queues []string
	cmd := &cobra.Command{
		Use:   "probe -d NODE [--ready [--queue Q ...]]",
		Short: "Check that a worker is alive (and with --ready, that it consumes its queues)",
		Long: `probe checks one worker and prints one line saying which check failed.

Liveness: the node answers ping within --timeout.
Readiness (--ready): the node also consumes its task queues, as its
active_queues reply lists them: every --queue given, or at least one.
A worker that answers ping but consumes nothing (a cancelled consumer, a
consumer that never came back after a broker restart) is live, not ready.
Nodes without active_queues (Go services) pass on liveness alone.
With --heartbeat (which implies --ready), the node must also send a
worker-heartbeat event before --timeout: give a timeout above the worker's
heartbeat interval (Celery's is 2 s). Workers started without events fail it.

Exit status: 0 the checks passed; 1 the probe could not run (broker);
2 usage error; 4 not live; 5 live but not consuming its queues; 6 live
but sending no heartbeat.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return c.probe(cmd.Context(), ready || heartbeat, heartbeat, queues)
		},
	}
	cmd.Flags().BoolVar(&ready, "ready", false, "check readiness too: the node consumes its queues")
	cmd.Flags().StringSliceVar(&queues, "queue", nil, "a queue the node must consume (repeatable; implies --ready)")
	cmd.Flags().BoolVar(&heartbeat, "heartbeat", false, "check readiness and that the node sends worker heartbeats (Celery events)")
	return cmd
}

func (c *cli) probe(ctx context.Context, ready, heartbeat bool, queues []string) error {
	if len(c.destination) != 1 || strings.Contains(c.destination[0], ",") {
		return usagef("probe needs exactly one node: -d NODE")
	}
	if c.pattern != "" || c.limit != 0 {
		return usagef("probe takes -d NODE, not --pattern or --limit")
	}
	opts, err := c.options()
	if err != nil {
		return err
	}
	node := c.destination[0]
	s, err := c.open(ctx)
	if err != nil {
		return err
	}
	defer s.close()

	var beat <-chan struct{}
	if heartbeat {
		// Listen first: the next heartbeat may come while ping runs.
		var stop func()
		beat, stop = c.heartbeatFrom(ctx, s, node)
		defer stop()
	}
	start := time.Now()
	res, err := s.mb.Call(ctx, "ping", nil, opts...)
	if err != nil && !errors.Is(err, pidbox.ErrIncomplete) {
		return err
	}
	if len(res.Replies) == 0 {
		why := "did not answer ping within " + c.timeout.String()
		if res.Outcomes[node] == pidbox.Unknown {
			why = "is not known to the broker (no such node listens)"
		}
		return c.probeFailed(exitNotLive, "liveness failed: %s %s", node, why)
	}
	if err := res.Replies[0].Err; err != nil {
		return c.probeFailed(exitNotLive, "liveness failed: ping: %v", err)
	}
	live := time.Since(start)
	if !ready && len(queues) == 0 {
		fmt.Fprintf(c.stdout, "probe: %s is live (ping answered in %s)\n", node, live.Round(10*time.Microsecond))
		return nil
	}

	res, err = s.mb.Call(ctx, "active_queues", nil, opts...)
	if err != nil && !errors.Is(err, pidbox.ErrIncomplete) {
		return err
	}
	if len(res.Replies) == 0 {
		return c.probeFailed(exitNotReady, "readiness failed: %s did not answer active_queues within %s", node, c.timeout)
	}
	r := res.Replies[0]
	if r.Err != nil {
		if strings.Contains(r.Err.Error(), "unknown method") {
			if heartbeat {
				if err := c.awaitBeat(beat, node); err != nil || c.exit != 0 {
					return err
				}
			}
			fmt.Fprintf(c.stdout, "probe: %s is live and ready (it has no active_queues: queue check skipped)\n", node)
			return nil
		}
		return c.probeFailed(exitNotReady, "readiness failed: active_queues: %v", r.Err)
	}
	var active []struct {
		Name string `json:"name"`
	}
	if err := json.Unmarshal(asJSON(r), &active); err != nil {
		return c.probeFailed(exitNotReady, "readiness failed: active_queues reply is not a list of queues: %v", err)
	}
	consumed := make([]string, 0, len(active))
	for _, q := range active {
		consumed = append(consumed, q.Name)
	}
	if len(consumed) == 0 {
		return c.probeFailed(exitNotReady, "readiness failed: %s answers ping but consumes no queue", node)
	}
	var lacking []string
	for _, q := range queues {
		if !slices.Contains(consumed, q) {
			lacking = append(lacking, q)
		}
	}
	if len(lacking) > 0 {
		return c.probeFailed(exitNotReady, "readiness failed: %s does not consume %s (consumes %s)", node, strings.Join(lacking, ", "), strings.Join(consumed, ", "))
	}
	if heartbeat {
		if err := c.awaitBeat(beat, node); err != nil || c.exit != 0 {
			return err
		}
		fmt.Fprintf(c.stdout, "probe: %s is live and ready (consumes %s; heartbeat received)\n", node, strings.Join(consumed, ", "))
		return nil
	}
	fmt.Fprintf(c.stdout, "probe: %s is live and ready (consumes %s)\n", node, strings.Join(consumed, ", "))
	return nil
}

// heartbeatFrom listens for a worker-heartbeat (or worker-online) event
// from node until --timeout; the channel closes when one arrives.
func (c *cli) heartbeatFrom(ctx context.Context, s *session, node string) (<-chan struct{}, func()) {
	got := make(chan struct{})
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	var once sync.Once
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = celery.Receive(ctx, s.tr, celery.ReceiveOptions{RoutingKey: "worker.#", Logger: slog.New(slog.DiscardHandler)}, func(e celery.Event) {
			if e["hostname"] == node && (e["type"] == "worker-heartbeat" || e["type"] == "worker-online") {
				once.Do(func() { close(got) })
			}
		})
	}()
	return got, func() { cancel(); <-done }
}

// awaitBeat waits for the heartbeat heartbeatFrom listens for.
func (c *cli) awaitBeat(beat <-chan struct{}, node string) error {
	t := time.NewTimer(c.timeout)
	defer t.Stop()
	select {
	case <-beat:
		return nil
	case <-t.C:
		return c.probeFailed(exitNoBeat, "readiness failed: %s sent no worker heartbeat within %s (are its events on?)", node, c.timeout)
	}
}

// probeFailed prints the one line that names the failed check and sets
// the exit status.
func (c *cli) probeFailed(code int, format string, args ...any) error {
	fmt.Fprintf(c.stdout, "probe: "+format+"\n", args...)
	c.exit = code
	return nil
}
