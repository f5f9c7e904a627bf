// Package demo holds what the example worker and controller share: the
// worker's custom commands, opening a broker by URL, and the in-process
// fleet that memory:// runs.
package demo

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gopidbox/pidbox"
	"github.com/gopidbox/pidbox/transport"
	pidamqp "github.com/gopidbox/pidbox/transport/amqp"
	"github.com/gopidbox/pidbox/transport/memory"
	pidredis "github.com/gopidbox/pidbox/transport/redis"
	goredis "github.com/redis/go-redis/v9"
)

// DefaultBroker is the broker used when neither a flag nor $PIDBOX_BROKER
// names one.
const DefaultBroker = "redis://127.0.0.1:6379/0"

// BrokerURL returns flag, else $PIDBOX_BROKER, else DefaultBroker.
func BrokerURL(flag string) string {
	if flag != "" {
		return flag
	}
	if env := os.Getenv("PIDBOX_BROKER"); env != "" {
		return env
	}
	return DefaultBroker
}

// IsMemory reports whether url names the in-process broker.
func IsMemory(url string) bool { return strings.HasPrefix(url, "memory://") }

// Open connects to the broker a URL names: memory://, an AMQP URL
// (amqp://, amqps://, and Kombu's pyamqp:// and librabbitmq://), or a
// Redis URL.
func Open(ctx context.Context, url string, log *slog.Logger) (transport.Transport, error) {
	if IsMemory(url) {
		return memory.New(memory.Options{Logger: log}), nil
	}
	for _, scheme := range []string{"amqp://", "amqps://", "pyamqp://", "librabbitmq://"} {
		if strings.HasPrefix(url, scheme) {
			return pidamqp.Open(ctx, url, pidamqp.Options{Logger: log})
		}
	}
	return pidredis.Open(ctx, url, pidredis.Options{Logger: log})
}

// Worker is the example worker's state: a log level that can be changed
// remotely, a configuration to report, and simulated work that can be
// paused and resumed.
type Worker struct {
	Level  *slog.LevelVar
	Config map[string]string

	paused    atomic.Bool
	processed atomic.Int64
}

// NewWorker returns a worker with a small configuration.
func NewWorker(level *slog.LevelVar, config map[string]string) *Worker {
	return &Worker{Level: level, Config: config}
}

// SetLogLevelArgs are the arguments of set_log_level.
type SetLogLevelArgs struct {
	Level string `json:"level"`
}

// SetLogLevelReply is the reply of set_log_level.
type SetLogLevelReply struct {
	Previous string `json:"previous"`
	Level    string `json:"level"`
}

// ConfigArgs are the arguments of get_config.
type ConfigArgs struct {
	Key string `json:"key"`
}

// ConfigReply is the reply of get_config.
type ConfigReply struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

// Status is the reply of status, pause and resume.
type Status struct {
	Paused    bool  `json:"paused"`
	Processed int64 `json:"processed"`
}

// Register adds the worker's commands to a node.
func (w *Worker) Register(n *pidbox.Node) {
	n.Register("set_log_level", pidbox.Typed(func(_ context.Context, a SetLogLevelArgs) (SetLogLevelReply, error) {
		var l slog.Level
		if err := l.UnmarshalText([]byte(a.Level)); err != nil {
			return SetLogLevelReply{}, fmt.Errorf("level %q: want debug, info, warn or error", a.Level)
		}
		prev := w.Level.Level()
		w.Level.Set(l)
		return SetLogLevelReply{Previous: strings.ToLower(prev.String()), Level: strings.ToLower(l.String())}, nil
	}))
	n.Register("get_config", pidbox.Typed(func(_ context.Context, a ConfigArgs) (any, error) {
		if a.Key == "" {
			keys := make([]string, 0, len(w.Config))
			for k := range w.Config {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			return map[string]any{"keys": keys}, nil
		}
		v, ok := w.Config[a.Key]
		if !ok {
			return nil, fmt.Errorf("no config key %q", a.Key)
		}
		return ConfigReply{Key: a.Key, Value: v}, nil
	}))
	n.Register("pause", pidbox.Typed(func(context.Context, struct{}) (Status, error) {
		w.paused.Store(true)
		return w.status(), nil
	}))
	n.Register("resume", pidbox.Typed(func(context.Context, struct{}) (Status, error) {
		w.paused.Store(false)
		return w.status(), nil
	}))
	n.Register("status", pidbox.Typed(func(context.Context, struct{}) (Status, error) {
		return w.status(), nil
	}))
}

func (w *Worker) status() Status {
	return Status{Paused: w.paused.Load(), Processed: w.processed.Load()}
}

// Work simulates the worker's real job until ctx ends: a unit of work
// every 50 ms, unless paused.
func (w *Worker) Work(ctx context.Context) {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if !w.paused.Load() {
				w.processed.Add(1)
			}
		}
	}
}

// Fleet is a set of example workers serving in this process.
type Fleet struct {
	Nodes  []*pidbox.Node
	cancel context.CancelFunc
	wg     sync.WaitGroup
	errs   chan error
}

// FleetNames returns the names of the workers the in-process demo fleet
// runs.
func FleetNames() []string { return []string{"worker1@demo", "worker2@demo", "worker3@demo"} }

// StartFleet serves example workers named names on tr, each on its own
// mailbox as separate processes would, and returns once all listen.
func StartFleet(ctx context.Context, tr transport.Transport, opts pidbox.Options, names []string) (*Fleet, error) {
	fctx, cancel := context.WithCancel(context.Background())
	f := &Fleet{cancel: cancel, errs: make(chan error, len(names))}
	for i, name := range names {
		mb, err := pidbox.New(tr, opts)
		if err != nil {
			f.Stop()
			return nil, err
		}
		n := mb.NewNode(name, pidbox.NodeOptions{})
		level := new(slog.LevelVar)
		w := NewWorker(level, map[string]string{"queue": "default", "concurrency": fmt.Sprint(4 * (i + 1)), "region": "demo"})
		w.Register(n)
		f.Nodes = append(f.Nodes, n)
		f.wg.Add(2)
		go func() { defer f.wg.Done(); w.Work(fctx) }()
		go func() {
			defer f.wg.Done()
			defer mb.Close()
			if err := n.Serve(fctx); err != nil {
				f.errs <- err
			}
		}()
	}
	for _, n := range f.Nodes {
		select {
		case <-n.Ready():
		case err := <-f.errs:
			f.Stop()
			return nil, err
		case <-ctx.Done():
			f.Stop()
			return nil, ctx.Err()
		}
	}
	return f, nil
}

// Stop stops every worker and waits for them.
func (f *Fleet) Stop() error {
	f.cancel()
	f.wg.Wait()
	close(f.errs)
	var errs []error
	for err := range f.errs {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Redact hides a URL's password, for messages.
func Redact(url string) string {
	if IsMemory(url) {
		return url
	}
	return pidredis.Redact(url)
}

// RouteRedisLogs sends go-redis's own log lines (dial retries and the
// like, which pidbox already reports in its own words) to log at debug
// level. go-redis's logger is process-wide, so only a program's main
// should call this.
func RouteRedisLogs(log *slog.Logger) { goredis.SetLogger(redisLogger{log}) }

type redisLogger struct{ log *slog.Logger }

// Printf implements go-redis's logging interface.
func (l redisLogger) Printf(ctx context.Context, format string, v ...any) {
	l.log.DebugContext(ctx, "go-redis: "+fmt.Sprintf(format, v...))
}

// Processed returns how many units of work the worker has done.
func (w *Worker) Processed() int64 { return w.processed.Load() }

// Paused reports whether the worker's work is paused.
func (w *Worker) Paused() bool { return w.paused.Load() }
