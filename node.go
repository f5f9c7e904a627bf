package pidbox

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gopidbox/pidbox/transport"
	"github.com/gopidbox/pidbox/wire"
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
}

// Node serves commands under one hostname. Make it with Mailbox.NewNode,
// register handlers, then call Serve.
type Node struct {
	mb       *Mailbox
	hostname string
	opts     NodeOptions
	log      *slog.Logger
	created  time.Time
	patterns patternCache
	drops    logLimiter

	mu       sync.RWMutex
	handlers map[string]*entry
	unknown  *entry

	serving  atomic.Bool
	ready    chan struct{}
	stop     chan struct{}
	stopOnce sync.Once
	inflight sync.WaitGroup

	received, dropped, expired, rejected atomic.Uint64
}

// entry is a registered handler with its concurrency slots and counters.
type entry struct {
	h       Handler
	slots   chan struct{}
	waiting atomic.Int64
	inline  bool // runs on the reader: a built-in that cannot block

	calls, errors   atomic.Uint64
	total, maxNanos atomic.Int64
}

func newEntry(h Handler, concurrency int) *entry {
	return &entry{h: h, slots: make(chan struct{}, concurrency)}
}

func (e *entry) record(d time.Duration, failed bool) {
	e.calls.Add(1)
	if failed {
		e.errors.Add(1)
	}
	e.total.Add(int64(d))
	for {
		cur := e.maxNanos.Load()
		if int64(d) <= cur || e.maxNanos.CompareAndSwap(cur, int64(d)) {
			return
		}
	}
}

func (e *entry) stats() HandlerStats {
	return HandlerStats{
		Calls:        e.calls.Load(),
		Errors:       e.errors.Load(),
		Running:      len(e.slots),
		Waiting:      int(e.waiting.Load()),
		TotalSeconds: time.Duration(e.total.Load()).Seconds(),
		MaxSeconds:   time.Duration(e.maxNanos.Load()).Seconds(),
	}
}

// NewNode returns a node named hostname (os.Hostname() when empty) with
// the built-in commands registered: ping, clock, hello, stats and
// shutdown.
func (m *Mailbox) NewNode(hostname string, opts NodeOptions) *Node {
	if hostname == "" {
		hostname, _ = os.Hostname()
	}
	if opts.Concurrency <= 0 {
		opts.Concurrency = DefaultConcurrency
	}
	if opts.Backlog <= 0 {
		opts.Backlog = DefaultBacklog
	}
	if opts.HandlerTimeout <= 0 {
		opts.HandlerTimeout = DefaultHandlerTimeout
	}
	if opts.ShutdownGrace <= 0 {
		opts.ShutdownGrace = DefaultShutdownGrace
	}
	if opts.Logger == nil {
		opts.Logger = m.log
	}
	n := &Node{
		mb:       m,
		hostname: hostname,
		opts:     opts,
		log:      opts.Logger,
		created:  time.Now(),
		handlers: map[string]*entry{},
		ready:    make(chan struct{}),
		stop:     make(chan struct{}),
	}
	n.unknown = newEntry(HandlerFunc(func(_ context.Context, r *Request) (any, error) {
		return nil, fmt.Errorf("%w %q", ErrUnknownMethod, r.Method)
	}), opts.Concurrency)
	for name, b := range builtins() {
		n.Register(name, b.h)
		n.handlers[name].inline = b.inline
	}
	return n
}

// Hostname returns the node's name.
func (n *Node) Hostname() string { return n.hostname }

// Queue returns the name of the node's queue, "<hostname>.<namespace>.pidbox".
func (n *Node) Queue() string { return n.hostname + "." + n.mb.exchange.Name }

// State returns NodeOptions.State.
func (n *Node) State() any { return n.opts.State }

// Mailbox returns the mailbox the node belongs to.
func (n *Node) Mailbox() *Mailbox { return n.mb }

// Register serves method with h, replacing any handler it had, built-in
// ones included. It may be called while the node serves.
func (n *Node) Register(method string, h Handler) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.handlers[method] = newEntry(h, n.opts.Concurrency)
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
	b := transport.Binding{Exchange: n.mb.exchange, Queue: n.Queue()}
	sub, err := n.mb.tr.Subscribe(ctx, b, func(msg []byte) { n.handle(handlerCtx, msg) })
	if err != nil {
		return fmt.Errorf("pidbox: node %s: bind %s: %w", n.hostname, b.Queue, err)
	}
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

// drop counts and logs a message the node cannot use.
func (n *Node) drop(counter *atomic.Uint64, msg string, args ...any) {
	counter.Add(1)
	n.warn(msg, args...)
}

// warn logs a per-message warning, rate-limited so that a flood of bad
// commands cannot flood the log too.
func (n *Node) warn(msg string, args ...any) { n.logLimited(slog.LevelWarn, msg, args...) }

func (n *Node) logLimited(level slog.Level, msg string, args ...any) {
	if ok, suppressed := n.drops.allow(time.Now()); ok {
		args = append(args, "node", n.hostname)
		if suppressed > 0 {
			args = append(args, "suppressed", suppressed)
		}
		n.log.Log(context.Background(), level, msg, args...)
	}
}

// handle decodes one message and starts its handler. It never blocks on a
// handler: a node keeps reading while commands run.
func (n *Node) handle(ctx context.Context, msg []byte) {
	n.received.Add(1)
	m := n.mb
	env, err := wire.Decode(msg, m.opts.MaxMessageSize)
	if err != nil {
		n.drop(&n.dropped, "pidbox: message dropped", "err", err)
		return
	}
	m.clock.Adjust(env.Headers.Clock)
	codec, err := wire.CodecFor(env.ContentType, m.opts.Accept)
	if err != nil {
		n.drop(&n.dropped, "pidbox: message dropped", "err", err)
		return
	}
	req, err := wire.DecodeRequest(codec, env.Body)
	if err != nil {
		n.drop(&n.dropped, "pidbox: message dropped", "err", err)
		return
	}
	targeted, err := n.targeted(req)
	if err != nil {
		n.drop(&n.dropped, "pidbox: command dropped: cannot tell whether it addresses this node", "method", req.Method, "err", err)
		return
	}
	if !targeted {
		return
	}
	if env.Headers.Expired(time.Now()) {
		n.expired.Add(1)
		n.log.Debug("pidbox: expired command dropped", "node", n.hostname, "method", req.Method, "ticket", req.Ticket)
		return
	}
	if req.ReplyTo != nil && req.ReplyTo.Exchange != m.replyEx.Name {
		n.drop(&n.dropped, "pidbox: command dropped: its reply_to exchange is not this namespace's", "method", req.Method, "reply_exchange", req.ReplyTo.Exchange)
		return
	}
	n.mu.RLock()
	e := n.handlers[req.Method]
	n.mu.RUnlock()
	if e == nil {
		e = n.unknown
	}
	select {
	case e.slots <- struct{}{}:
		n.inflight.Add(1)
		if e.inline {
			// No goroutine hand-off: it is a third of a ping's latency.
			n.runInline(ctx, e, req, codec, env.Headers)
		} else {
			go n.run(ctx, e, req, codec, env.Headers)
		}
		return
	default:
	}
	if e.waiting.Add(1) > int64(n.opts.Backlog) {
		e.waiting.Add(-1)
		n.drop(&n.rejected, "pidbox: command refused: its handler is at its concurrency limit with a full backlog",
			"method", req.Method, "concurrency", cap(e.slots), "backlog", n.opts.Backlog)
		return
	}
	n.inflight.Add(1)
	go n.wait(ctx, e, req, codec, env.Headers)
}

// wait holds a request until its handler has a free slot, or drops it
// when its deadline passes first.
func (n *Node) wait(ctx context.Context, e *entry, req *wire.Request, codec wire.Codec, h wire.Headers) {
	defer e.waiting.Add(-1)
	deadline := time.Now().Add(n.opts.HandlerTimeout)
	if exp, ok := h.Deadline(); ok && exp.Before(deadline) {
		deadline = exp
	}
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	select {
	case e.slots <- struct{}{}:
		n.run(ctx, e, req, codec, h)
	case <-t.C:
		n.expired.Add(1)
		n.warn("pidbox: command dropped: it expired waiting for its handler", "method", req.Method)
		n.inflight.Done()
	case <-ctx.Done():
		n.inflight.Done()
	}
}

// targeted reports whether a request addresses this node, by Kombu's
// rules: a destination list names it, or a pattern with a matcher matches
// it, or neither is given.
func (n *Node) targeted(req *wire.Request) (bool, error) {
	if len(req.Destination) > 0 {
		return slices.Contains(req.Destination, n.hostname), nil
	}
	if req.Pattern != "" && req.Matcher != "" {
		return n.patterns.match(n.hostname, req.Pattern, req.Matcher)
	}
	return true, nil
}

type result struct {
	value any
	err   error
}

// run runs one handler under its deadline and replies. A handler that
// overruns its deadline still gets the caller an error reply, sent when
// the deadline passes; the handler keeps its concurrency slot until it
// returns.
func (n *Node) run(ctx context.Context, e *entry, wr *wire.Request, codec wire.Codec, h wire.Headers) {
	defer func() { <-e.slots }()
	deadline := time.Now().Add(n.opts.HandlerTimeout)
	if exp, ok := h.Deadline(); ok && exp.Before(deadline) {
		deadline = exp
	}
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	req := &Request{Method: wr.Method, Arguments: wr.Arguments, Ticket: wr.Ticket, Clock: h.Clock, Node: n, codec: codec}
	ctx = context.WithValue(ctx, requestKey{}, req)

	var once sync.Once
	finish := func(res result) {
		once.Do(func() {
			defer n.inflight.Done()
			n.finish(wr, codec, h, res)
		})
	}
	stop := context.AfterFunc(ctx, func() {
		err := fmt.Errorf("%w: %s did not return before its deadline", ErrHandlerTimeout, wr.Method)
		if !errors.Is(ctx.Err(), context.DeadlineExceeded) {
			err = fmt.Errorf("%w: %s: the node is shutting down", ErrHandlerTimeout, wr.Method)
		}
		n.warn("pidbox: handler overran its deadline; replying with an error and leaving it running", "method", wr.Method)
		finish(result{err: err})
	})
	res := n.call(ctx, e, req)
	stop()
	finish(res)
}

// runInline runs a built-in that cannot block on the reader: no deadline
// to watch, no goroutine.
func (n *Node) runInline(ctx context.Context, e *entry, wr *wire.Request, codec wire.Codec, h wire.Headers) {
	defer n.inflight.Done()
	defer func() { <-e.slots }()
	req := &Request{Method: wr.Method, Arguments: wr.Arguments, Ticket: wr.Ticket, Clock: h.Clock, Node: n, codec: codec}
	n.finish(wr, codec, h, n.call(ctx, e, req))
}

// finish replies with a handler's result, or logs a failed cast.
func (n *Node) finish(wr *wire.Request, codec wire.Codec, h wire.Headers, res result) {
	if wr.ReplyTo == nil || errors.Is(res.err, ErrNoReply) {
		if res.err != nil && !errors.Is(res.err, ErrNoReply) {
			n.warn("pidbox: command failed", "method", wr.Method, "err", res.err)
		}
		return
	}
	n.reply(wr, codec, h, res)
}

func (n *Node) call(ctx context.Context, e *entry, req *Request) (res result) {
	start := time.Now()
	defer func() {
		if p := recover(); p != nil {
			n.logLimited(slog.LevelError, "pidbox: handler panicked", "method", req.Method, "panic", p, "stack", string(debug.Stack()))
			res = result{err: fmt.Errorf("%w: %s: %v", ErrHandlerPanic, req.Method, p)}
		}
		e.record(time.Since(start), res.err != nil && !errors.Is(res.err, ErrNoReply))
	}()
	v, err := e.h.Handle(ctx, req)
	return result{value: v, err: err}
}

// reply sends {hostname: value} to the caller's reply queue, in the codec
// the request came in.
func (n *Node) reply(wr *wire.Request, codec wire.Codec, h wire.Headers, res result) {
	value := res.value
	if res.err != nil {
		value = wire.ErrorValue{Error: res.err.Error()}
	}
	body, err := wire.EncodeReply(codec, n.hostname, value)
	if err != nil {
		n.warn("pidbox: reply cannot be serialized; replying with an error", "method", wr.Method, "err", err)
		body, err = wire.EncodeReply(codec, n.hostname, wire.ErrorValue{Error: fmt.Sprintf("the reply of %s cannot be serialized: %v", wr.Method, err)})
		if err != nil {
			n.log.Error("pidbox: error reply cannot be serialized", "node", n.hostname, "err", err)
			return
		}
	}
	msg := wire.Encode(&wire.Envelope{
		Body:            body,
		ContentType:     codec.ContentType(),
		ContentEncoding: codec.ContentEncoding(),
		Headers:         wire.Headers{Clock: n.mb.clock.Forward(), Ticket: wr.Ticket, Expires: h.Expires},
		Properties:      wire.Properties{DeliveryMode: wire.Transient, Exchange: wr.ReplyTo.Exchange, RoutingKey: wr.ReplyTo.RoutingKey},
	})
	// No deadline of its own: the transport's timeouts bound a reply.
	if err := n.mb.tr.Publish(context.Background(), n.mb.replyEx, wr.ReplyTo.RoutingKey, msg); err != nil {
		n.warn("pidbox: reply not sent", "method", wr.Method, "err", err)
	}
}

// logLimiter lets through a burst of log lines per second and counts the
// rest, so a flood of bad messages cannot flood the log too.
type logLimiter struct {
	mu         sync.Mutex
	window     time.Time
	n          int
	suppressed int
}

const logBurst = 20

func (l *logLimiter) allow(now time.Time) (ok bool, suppressed int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.window) >= time.Second {
		l.window, l.n = now, 0
	}
	if l.n >= logBurst {
		l.suppressed++
		return false, 0
	}
	l.n++
	suppressed, l.suppressed = l.suppressed, 0
	return true, suppressed
}
