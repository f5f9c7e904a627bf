package main

import (
	"context"
	"log/slog"
	"runtime"
	"time"

	"github.com/gopidbox/pidbox"
	"github.com/gopidbox/pidbox/celery"
	"github.com/gopidbox/pidbox/examples/internal/demo"
	"github.com/gopidbox/pidbox/transport"
)

// workTask is the name the example worker's simulated work goes by, for
// Celery's registered, stats and rate_limit.
const workTask = "demo.work"

// celeryMember makes the worker a member of a Celery control plane: it
// serves Celery's whole inspect/control vocabulary on node and starts
// sending Celery's worker events. The function it returns sends
// worker-offline and waits for the emitter; call it once the node has
// stopped, before the transport closes.
func celeryMember(node *pidbox.Node, tr transport.Transport, url, serializer string, interval float64, w *demo.Worker, log *slog.Logger) (stop func(), err error) {
	em, err := celery.NewEmitter(tr, celery.EmitterOptions{
		Hostname: node.Hostname(),
		// Celery's event_serializer (json) is the one every Celery event
		// receiver accepts, whatever the mailbox's serializer.
		Serializer: serializer,
		Interval:   secondsDuration(interval),
		Clock:      node.Mailbox().Clock(),
		Active: func() int {
			if w.Paused() {
				return 0
			}
			return 1
		},
		Processed: func() int { return int(w.Processed()) },
		Logger:    log,
	})
	if err != nil {
		return nil, err
	}
	settings := map[string]any{"broker_url": url, "go_version": runtime.Version()}
	for k, v := range w.Config {
		settings[k] = v
	}
	celery.Register(node, celery.Options{
		Broker:      celery.BrokerFromURL(url),
		Concurrency: 1,
		Settings:    settings,
		Software:    "pidbox-example-worker",
		Tasks:       func() []celery.Task { return []celery.Task{{Name: workTask}} },
		Totals:      func() map[string]int64 { return map[string]int64{workTask: w.Processed()} },
		Events:      em,
		Logger:      log,
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = em.Run(ctx) }()
	return func() { cancel(); <-done }, nil
}

func secondsDuration(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }
