package main

import (
	"context"
	"fmt"
	"log/slog"
	"runtime"
	"sync"
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
	p := newPool(w)
	celery.Register(node, celery.Options{
		Broker:      celery.BrokerFromURL(url),
		Concurrency: p.size,
		Settings:    settings,
		Software:    "pidbox-example-worker",
		Queues:      []celery.Queue{celery.NewQueue(w.Config["queue"], "", "", "")},
		Tasks:       func() []celery.Task { return []celery.Task{{Name: workTask}} },
		Totals:      func() map[string]int64 { return map[string]int64{workTask: w.Processed()} },
		Pool:        p,
		Consumers:   consumers{log},
		Events:      em,
		Logger:      log,
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = em.Run(ctx) }()
	return func() { cancel(); <-done; p.stop() }, nil
}

// pool runs the worker's simulated work in a resizable set of goroutines:
// pool_grow and pool_shrink change how many.
type pool struct {
	w       *demo.Worker
	mu      sync.Mutex
	workers []context.CancelFunc
	wg      sync.WaitGroup
}

func newPool(w *demo.Worker) *pool {
	p := &pool{w: w}
	_ = p.Grow(context.Background(), 1)
	return p
}

func (p *pool) size() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.workers)
}

// Grow implements celery.Pool.
func (p *pool) Grow(_ context.Context, n int) error {
	if n < 1 || n > 64 {
		return fmt.Errorf("ValueError('pool_grow: n must be 1 to 64, got %d')", n)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.workers)+n > 64 {
		return fmt.Errorf("ValueError('pool_grow: at most 64 workers')")
	}
	for range n {
		ctx, cancel := context.WithCancel(context.Background())
		p.workers = append(p.workers, cancel)
		p.wg.Go(func() { p.w.Work(ctx) })
	}
	return nil
}

// Shrink implements celery.Pool; one worker always stays.
func (p *pool) Shrink(_ context.Context, n int) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if n < 1 || n >= len(p.workers) {
		return fmt.Errorf("ValueError(\"Can't shrink pool of %d by %d\")", len(p.workers), n)
	}
	for _, cancel := range p.workers[len(p.workers)-n:] {
		cancel()
	}
	p.workers = p.workers[:len(p.workers)-n]
	return nil
}

func (p *pool) stop() {
	p.mu.Lock()
	for _, cancel := range p.workers {
		cancel()
	}
	p.workers = nil
	p.mu.Unlock()
	p.wg.Wait()
}

// consumers accepts add_consumer and cancel_consumer: the example worker
// has no real task queues, so it only records them (active_queues lists
// them) and logs.
type consumers struct{ log *slog.Logger }

// AddConsumer implements celery.Consumers.
func (c consumers) AddConsumer(_ context.Context, q celery.Queue) error {
	c.log.Info("consuming from queue", "queue", q.Name)
	return nil
}

// CancelConsumer implements celery.Consumers.
func (c consumers) CancelConsumer(_ context.Context, queue string) error {
	c.log.Info("no longer consuming from queue", "queue", queue)
	return nil
}

func secondsDuration(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }
