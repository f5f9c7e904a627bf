package pidbox

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gopidbox/pidbox/internal/ratelog"
	"github.com/gopidbox/pidbox/transport"
)

// Defaults for NodeOptions.
const (
	DefaultConcurrency    = 16
	DefaultBacklog        = 256
	DefaultHandlerTimeout = 30 * time.Second
	DefaultShutdownGrace  = 5 * time.Second
)

// NodeOptions configure a Node. The zero value works.
type NodeOptions struct {
	// State is handed to handlers through Request.Node.State, as Kombu
	// hands its handlers a state object.
	State any
	// Concurrency bounds the calls of one handler running at once, so one
	// slow command cannot hold up the others. Default 16.
	Concurrency int
	// Backlog bounds the requests of one handler waiting for a free slot;
	// a request waits at most until its deadline. Requests beyond the
	// backlog are refused and logged. Default 256.
	Backlog int
	// HandlerTimeout bounds a handler's run when the request's own expiry
	// is later or absent. The caller then gets an error reply wrapping
	// ErrHandlerTimeout. Default 30s.
	HandlerTimeout time.Duration
	// ShutdownGrace is how long Serve lets running handlers finish once it
	// is asked to stop, before it cancels their contexts. Default 5s.
	ShutdownGrace time.Duration
	// Logger overrides the mailbox's logger for this node.
	Logger *slog.Logger
	// Authorize, when set, decides whether a command may run. It sees the
	// request (with its verified Signer when messages are signed) before
	// the handler does; an error refuses the command: the caller gets
	// the error reply {"error": "not authorized"}, the node logs the
	// reason (rate-limited), and nothing else happens.
	Authorize func(ctx context.Context, req *Request) error
}

func (o *NodeOptions) setDefaults(mailboxLog *slog.Logger) {
	if o.Concurrency <= 0 {
		o.Concurrency = DefaultConcurrency
	}
	if o.Backlog <= 0 {
		o.Backlog = DefaultBacklog
	}
	if o.HandlerTimeout <= 0 {
		o.HandlerTimeout = DefaultHandlerTimeout
	}
	if o.ShutdownGrace <= 0 {
		o.ShutdownGrace = DefaultShutdownGrace
	}
	if o.Logger == nil {
		o.Logger = mailboxLog
	}
}

// Node serves commands under one hostname. Make it with Mailbox.NewNode,
// register handlers, then call Serve.
type Node struct {
	mb       *Mailbox
	hostname string
	opts     NodeOptions
	log      *slog.Logger
	warnings *ratelog.Logger // for what each bad message can cause
	created  time.Time
	patterns patternCache

	mu       sync.RWMutex
	handlers map[string]*entry
	counts   map[string]*counts // by method; kept when a handler is replaced
	unknown  *entry

	sub      atomic.Pointer[transport.Subscription] // while serving
	serving  atomic.Bool
	ready    chan struct{}
	stop     chan struct{}
	stopOnce sync.Once
	inflight sync.WaitGroup

	received, dropped, expired, rejected, refused atomic.Uint64
	ignoredHeaders                                atomic.Uint64
}

// entry is a registered handler with its concurrency slots.
type entry struct {
	h       Handler
	slots   chan struct{}
	waiting atomic.Int64
	inline  bool // runs on the reader: a built-in that cannot block
	counts  *counts
}

// counts are one method's call counters. Atomics: no lock on the hot path.
type counts struct {
	calls, errors   atomic.Uint64
	total, maxNanos atomic.Int64
	lastErr         atomic.Pointer[lastError]
}

// lastError is a method's latest error, kept on the failure path only.
type lastError struct {
	msg string
	at  time.Time
}

// maxLastError bounds the text of a kept error.
const maxLastError = 512

func (c *counts) record(d time.Duration, err error) {
	c.calls.Add(1)
	if err != nil {
		c.errors.Add(1)
		msg := err.Error()
		if len(msg) > maxLastError {
			msg = msg[:maxLastError] + "..."
		}
		c.lastErr.Store(&lastError{msg: msg, at: time.Now()})
	}
	c.total.Add(int64(d))
	for {
		cur := c.maxNanos.Load()
		if int64(d) <= cur || c.maxNanos.CompareAndSwap(cur, int64(d)) {
			return
		}
	}
}

func (e *entry) stats() HandlerStats {
	s := HandlerStats{
		Calls:        e.counts.calls.Load(),
		Errors:       e.counts.errors.Load(),
		Running:      len(e.slots),
		Waiting:      int(e.waiting.Load()),
		TotalSeconds: time.Duration(e.counts.total.Load()).Seconds(),
		MaxSeconds:   time.Duration(e.counts.maxNanos.Load()).Seconds(),
	}
	if s.Calls > 0 {
		s.AverageSeconds = s.TotalSeconds / float64(s.Calls)
	}
	if le := e.counts.lastErr.Load(); le != nil {
		s.LastError = le.msg
		s.LastErrorAt = le.at.UTC().Format(time.RFC3339Nano)
	}
	return s
}

// NewNode returns a node named hostname (os.Hostname() when empty) with
// the built-in commands registered: ping, clock, hello, stats,
// pidbox_stats and shutdown.
func (m *Mailbox) NewNode(hostname string, opts NodeOptions) *Node {
	if hostname == "" {
		hostname, _ = os.Hostname()
	}
	opts.setDefaults(m.opts.Logger)
	n := &Node{
		mb:       m,
		hostname: hostname,
		opts:     opts,
		log:      opts.Logger,
		warnings: ratelog.New(opts.Logger, "node", hostname),
		created:  time.Now(),
		handlers: map[string]*entry{},
		counts:   map[string]*counts{},
		ready:    make(chan struct{}),
		stop:     make(chan struct{}),
	}
	n.unknown = &entry{
		h: HandlerFunc(func(_ context.Context, r *Request) (any, error) {
			return nil, fmt.Errorf("%w %q", ErrUnknownMethod, r.Method)
		}),
		slots:  make(chan struct{}, opts.Concurrency),
		counts: &counts{},
	}
	for name, b := range builtins() {
		n.register(name, b.h, b.inline)
	}
	return n
}

// Hostname returns the node's name.
func (n *Node) Hostname() string { return n.hostname }

// queue returns the name of the node's queue, "<hostname>.<namespace>.pidbox".
func (n *Node) queue() string { return n.hostname + "." + n.mb.exchange.Name }

// State returns NodeOptions.State.
func (n *Node) State() any { return n.opts.State }

// Mailbox returns the mailbox the node belongs to.
func (n *Node) Mailbox() *Mailbox { return n.mb }

// Register serves method with h, replacing any handler it had, built-in
// ones included. It may be called while the node serves; the method's
// counts in Stats carry on across the replacement.
func (n *Node) Register(method string, h Handler) { n.register(method, h, false) }

func (n *Node) register(method string, h Handler, inline bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	c := n.counts[method]
	if c == nil {
		c = &counts{}
		n.counts[method] = c
	}
	n.handlers[method] = &entry{h: h, slots: make(chan struct{}, n.opts.Concurrency), inline: inline, counts: c}
}

// RegisterFunc serves method with fn.
func (n *Node) RegisterFunc(method string, fn func(ctx context.Context, req *Request) (any, error)) {
	n.Register(method, HandlerFunc(fn))
}

// Unregister stops serving method; callers then get an unknown-method
// error reply.
func (n *Node) Unregister(method string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	delete(n.handlers, method)
}

// Methods lists the registered method names, sorted.
func (n *Node) Methods() []string {
	n.mu.RLock()
	defer n.mu.RUnlock()
	names := make([]string, 0, len(n.handlers))
	for name := range n.handlers {
		names = append(names, name)
	}
	slices.Sort(names)
	return names
}

// Ready is closed once Serve is listening: from then on, commands sent to
// the node reach it.
func (n *Node) Ready() <-chan struct{} { return n.ready }

// Shutdown asks Serve to stop, as the shutdown command does. It does not
// wait.
func (n *Node) Shutdown() { n.stopOnce.Do(func() { close(n.stop) }) }

// Serve binds the node's queue and serves commands until ctx is done or
// Shutdown is called (the shutdown command calls it). It then stops
// taking commands, lets running handlers finish for up to ShutdownGrace,
// unbinds the queue and returns nil. It returns an error if the queue
// cannot be bound or the subscription fails for good. A node serves once.
func (n *Node) Serve(ctx context.Context) error {
	if !n.serving.CompareAndSwap(false, true) {
		return fmt.Errorf("pidbox: node %s is already serving or has served", n.hostname)
	}
	handlerCtx, cancelHandlers := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelHandlers()
	b := transport.Binding{Exchange: n.mb.exchange, Queue: n.queue()}
	sub, err := n.mb.tr.Subscribe(ctx, b, func(msg []byte) { n.handle(handlerCtx, msg) })
	if err != nil {
		return fmt.Errorf("pidbox: node %s: bind %s: %w", n.hostname, b.Queue, err)
	}
	n.sub.Store(&sub)
	close(n.ready)
	n.log.Info("pidbox: node listening", "node", n.hostname, "exchange", b.Exchange.Name, "type", string(b.Exchange.Kind))

	var failed error
	select {
	case <-ctx.Done():
	case <-n.stop:
	case <-sub.Done():
		failed = fmt.Errorf("pidbox: node %s: %w", n.hostname, transport.ErrClosed)
		n.log.Error("pidbox: node subscription ended", "node", n.hostname, "err", failed)
	}
	closeErr := sub.Close()
	n.sub.Store(nil)
	if !waitTimeout(&n.inflight, n.opts.ShutdownGrace) {
		n.log.Warn("pidbox: handlers still running after the shutdown grace; cancelling them", "node", n.hostname, "grace", n.opts.ShutdownGrace)
	}
	cancelHandlers()
	n.inflight.Wait()
	n.log.Info("pidbox: node stopped", "node", n.hostname)
	if failed != nil {
		return failed
	}
	if closeErr != nil && !errors.Is(closeErr, transport.ErrClosed) {
		return fmt.Errorf("pidbox: node %s: unbind: %w", n.hostname, closeErr)
	}
	return nil
}

// NodeHealth is a node's own view of whether it can serve: what a
// Kubernetes probe of a Go worker should look at, without touching the
// broker.
type NodeHealth struct {
	Node string `json:"node"`
	// Serving is true from Ready until Serve returns.
	Serving bool `json:"serving"`
	// Subscribed is true while the node's broker subscription consumes.
	// Brokers whose transport cannot tell report true while serving.
	Subscribed bool `json:"subscribed"`
	// LastSeen is when the broker last answered the node: a message, or
	// the reply to a health check. Zero when unknown.
	LastSeen time.Time `json:"last_seen"`
	// InFlight counts the commands running now; Backlog those waiting for
	// a free handler slot.
	InFlight int `json:"in_flight"`
	Backlog  int `json:"backlog"`
}

// Healthy reports whether the node serves with a live subscription.
func (h NodeHealth) Healthy() bool { return h.Serving && h.Subscribed }

// Health reports the node's health now.
func (n *Node) Health() NodeHealth {
	h := NodeHealth{Node: n.hostname}
	sub := n.subscription()
	if sub != nil {
		select {
		case <-sub.Done():
		default:
			h.Serving = n.serving.Load()
		}
	}
	if h.Serving {
		h.Subscribed = true
		if hr, ok := sub.(transport.HealthReporter); ok {
			th := hr.Health()
			h.Subscribed, h.LastSeen = th.Live, th.LastSeen
		}
	}
	n.mu.RLock()
	for _, e := range n.handlers {
		h.InFlight += len(e.slots)
		h.Backlog += int(e.waiting.Load())
	}
	n.mu.RUnlock()
	return h
}

// subscription returns the node's subscription while it serves, else nil.
func (n *Node) subscription() transport.Subscription {
	if p := n.sub.Load(); p != nil {
		return *p
	}
	return nil
}

func waitTimeout(wg *sync.WaitGroup, d time.Duration) bool {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-done:
		return true
	case <-t.C:
		return false
	}
}
