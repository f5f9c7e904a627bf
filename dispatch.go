package pidbox

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gopidbox/pidbox/internal/wire"
	"github.com/gopidbox/pidbox/reply"
	"github.com/gopidbox/pidbox/transport"
)

// errNotAuthorized is the error reply to a command that Authorize refused.
var errNotAuthorized = errors.New("not authorized")

// task is one command on its way through a node: decoded once, with its
// deadline worked out once.
type task struct {
	req      *Request
	wr       *wire.Request
	headers  wire.Headers
	deadline time.Time
}

// drop counts and logs (rate-limited) a message the node cannot use.
func (n *Node) drop(counter *atomic.Uint64, msg string, args ...any) {
	counter.Add(1)
	n.warnings.Warn(msg, args...)
}

// observe tells the Observer, if there is one, of an event on this node.
func (n *Node) observe(ctx context.Context, kind EventKind, method, reason string, count int) {
	if o := n.mb.opts.Observer; o != nil {
		o.Event(ctx, Event{Kind: kind, Node: n.hostname, Method: method, Reason: reason, Count: count})
	}
}

// startCommand tells the Observer, if there is one, that a registered
// handler starts.
func (n *Node) startCommand(ctx context.Context, e *entry, t *task) (context.Context, CommandObserver) {
	o := n.mb.opts.Observer
	if o == nil || e == n.unknown {
		return ctx, nil
	}
	return o.StartCommand(ctx, CommandInfo{Node: n.hostname, Exchange: n.mb.exchange.Name, Method: t.wr.Method, Ticket: t.wr.Ticket}, Headers{&t.headers})
}

// handlerErr is a handler's error as an observer sees it: ErrNoReply is
// no error.
func handlerErr(err error) error {
	if errors.Is(err, ErrNoReply) {
		return nil
	}
	return err
}

// handle decodes one message and starts its handler. It never blocks on a
// handler: a node keeps reading while commands run.
func (n *Node) handle(ctx context.Context, msg []byte) {
	n.received.Add(1)
	m := n.mb
	env := m.envelope()
	if err := wire.DecodeInto(msg, m.opts.MaxMessageSize, env); err != nil {
		m.reuseEnvelope(env)
		n.drop(&n.dropped, "pidbox: message dropped", "err", err)
		n.observe(ctx, EventSkipped, "", ReasonUndecodable, 1)
		return
	}
	if env.IgnoredHeaders > 0 {
		n.ignoredHeaders.Add(uint64(env.IgnoredHeaders))
		n.observe(ctx, EventHeadersIgnored, "", "", env.IgnoredHeaders)
	}
	m.opts.Clock.Adjust(env.Headers.Clock)
	codec, body, signer, err := m.open(env)
	if err != nil {
		n.drop(&n.dropped, "pidbox: message dropped", "err", err)
		n.observe(ctx, EventSkipped, "", ReasonUndecodable, 1)
		return
	}
	if n.mb.opts.Observer == nil && wire.NotAddressed(codec, body, n.hostname) {
		// For another node: known without decoding the request (an
		// Observer gets the full decode, for the method's name). Nothing
		// of the envelope is kept: it serves the next message.
		m.reuseEnvelope(env)
		return
	}
	wr, err := wire.DecodeRequest(codec, body)
	if err != nil {
		n.drop(&n.dropped, "pidbox: message dropped", "err", err)
		n.observe(ctx, EventSkipped, "", ReasonUndecodable, 1)
		return
	}
	targeted, err := n.targeted(wr)
	if err != nil {
		n.drop(&n.dropped, "pidbox: command dropped: cannot tell whether it addresses this node", "method", wr.Method, "err", err)
		n.observe(ctx, EventSkipped, wr.Method, ReasonUndecodable, 1)
		return
	}
	if !targeted {
		n.observe(ctx, EventSkipped, wr.Method, ReasonNotAddressed, 1)
		return
	}
	now := time.Now()
	if env.Headers.Expired(now) {
		n.expired.Add(1)
		n.log.Debug("pidbox: expired command dropped", "node", n.hostname, "method", wr.Method, "ticket", wr.Ticket)
		n.observe(ctx, EventSkipped, wr.Method, ReasonExpired, 1)
		return
	}
	if wr.ReplyTo != nil && wr.ReplyTo.Exchange != m.replyEx.Name {
		n.drop(&n.dropped, "pidbox: command dropped: its reply_to exchange is not this namespace's", "method", wr.Method, "reply_exchange", wr.ReplyTo.Exchange)
		n.observe(ctx, EventSkipped, wr.Method, ReasonUndecodable, 1)
		return
	}
	t := &task{wr: wr, headers: env.Headers, deadline: now.Add(n.opts.HandlerTimeout)}
	expires, hasExpiry := env.Headers.Deadline()
	if hasExpiry && expires.Before(t.deadline) {
		t.deadline = expires
	}
	t.req = &Request{
		Method: wr.Method, Arguments: reply.Raw(wr.Arguments), Ticket: wr.Ticket, Clock: env.Headers.Clock,
		Signer: signer, Node: n, codec: codec,
	}
	if hasExpiry {
		t.req.Expires = expires
	}

	n.mu.RLock()
	e := n.handlers[wr.Method]
	n.mu.RUnlock()
	if e == nil {
		e = n.unknown
		n.observe(ctx, EventSkipped, wr.Method, ReasonUnknownCommand, 1)
	}
	select {
	case e.slots <- struct{}{}:
		n.inflight.Add(1)
		if e.inline && n.opts.Authorize == nil {
			// No goroutine hand-off: it is a third of a ping's latency.
			n.runInline(ctx, e, t)
		} else {
			go n.run(ctx, e, t)
		}
		return
	default:
	}
	if e.waiting.Add(1) > int64(n.opts.Backlog) {
		e.waiting.Add(-1)
		n.drop(&n.rejected, "pidbox: command refused: its handler is at its concurrency limit with a full backlog",
			"method", wr.Method, "concurrency", cap(e.slots), "backlog", n.opts.Backlog)
		n.observe(ctx, EventBacklogRefused, wr.Method, "", 1)
		return
	}
	n.observe(ctx, EventBacklogWait, wr.Method, "", 1)
	n.inflight.Add(1)
	go n.wait(ctx, e, t)
}

// wait holds a task until its handler has a free slot, or drops it when
// its deadline passes first.
func (n *Node) wait(ctx context.Context, e *entry, t *task) {
	defer e.waiting.Add(-1)
	timer := time.NewTimer(time.Until(t.deadline))
	defer timer.Stop()
	select {
	case e.slots <- struct{}{}:
		n.run(ctx, e, t)
	case <-timer.C:
		n.expired.Add(1)
		n.warnings.Warn("pidbox: command dropped: it expired waiting for its handler", "method", t.wr.Method)
		n.observe(ctx, EventSkipped, t.wr.Method, ReasonExpired, 1)
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

// run runs one handler under the task's deadline and replies. A handler
// that overruns its deadline still gets the caller an error reply, sent
// when the deadline passes; the handler keeps its concurrency slot until
// it returns.
func (n *Node) run(ctx context.Context, e *entry, t *task) {
	defer func() { <-e.slots }()
	ctx, cancel := context.WithDeadline(ctx, t.deadline)
	defer cancel()
	ctx, obs := n.startCommand(ctx, e, t)
	ctx = context.WithValue(ctx, requestKey{}, t.req)

	var once sync.Once
	finish := func(res result) {
		once.Do(func() {
			defer n.inflight.Done()
			n.finish(t, res)
			if obs != nil {
				obs.End(handlerErr(res.err))
			}
		})
	}
	stop := context.AfterFunc(ctx, func() {
		err := fmt.Errorf("%w: %s did not return before its deadline", ErrHandlerTimeout, t.wr.Method)
		if !errors.Is(ctx.Err(), context.DeadlineExceeded) {
			err = fmt.Errorf("%w: %s: the node is shutting down", ErrHandlerTimeout, t.wr.Method)
		}
		n.warnings.Warn("pidbox: handler overran its deadline; replying with an error and leaving it running", "method", t.wr.Method)
		finish(result{err: err})
	})
	res := n.authorized(ctx, t.req)
	if res.err == nil {
		res = n.call(ctx, e, t.req)
	}
	stop()
	finish(res)
}

// runInline runs a built-in that cannot block on the reader: no deadline
// to watch, no goroutine.
// Its reply is queued where the transport can (transport.Queuer), so the
// reader goes on to the next command while the reply is on its way; the
// slot is held until it is sent.
func (n *Node) runInline(ctx context.Context, e *entry, t *task) {
	var obs CommandObserver
	if n.mb.opts.Observer != nil {
		ctx, obs = n.startCommand(ctx, e, t)
	}
	res := n.call(ctx, e, t.req)
	if q, ok := n.mb.tr.(transport.Queuer); ok {
		n.finishQueued(q, t, res, e, obs)
		return
	}
	n.finish(t, res)
	n.endInline(e, obs, res)
}

// endInline ends a command run by runInline, once its reply is sent.
func (n *Node) endInline(e *entry, obs CommandObserver, res result) {
	if obs != nil {
		obs.End(handlerErr(res.err))
	}
	<-e.slots
	n.inflight.Done()
}

// authorized asks NodeOptions.Authorize whether the request may run.
func (n *Node) authorized(ctx context.Context, req *Request) result {
	if n.opts.Authorize == nil {
		return result{}
	}
	if err := n.opts.Authorize(ctx, req); err != nil {
		n.drop(&n.refused, "pidbox: command refused: not authorized", "method", req.Method, "signer", req.Signer, "err", err)
		return result{err: errNotAuthorized}
	}
	return result{}
}

// finish replies with a handler's result, or logs a failed cast. A reply
// has no deadline of its own: the transport's timeouts bound it.
func (n *Node) finish(t *task, res result) {
	if msg, buf := n.replyFor(t, res); msg != nil {
		n.logSent(t, publish(context.Background(), n.mb.tr, n.mb.replyEx, t.wr.ReplyTo.RoutingKey, msg, n.subscription()))
		n.mb.release(buf, msg)
	}
}

// finishQueued is finish for runInline, with the reply queued; the
// command ends (endInline) once the reply is sent, or failed, or not
// needed. (One closure for the transport, none of its own.)
func (n *Node) finishQueued(q transport.Queuer, t *task, res result, e *entry, obs CommandObserver) {
	msg, buf := n.replyFor(t, res)
	if msg == nil {
		n.endInline(e, obs, res)
		return
	}
	m := n.mb
	q.PublishQueued(context.Background(), m.replyEx, t.wr.ReplyTo.RoutingKey, msg, n.subscription(), func(err error) {
		m.release(buf, msg)
		n.logSent(t, err)
		n.endInline(e, obs, res)
	})
}

// logSent logs a reply that could not be sent.
func (n *Node) logSent(t *task, err error) {
	if err != nil {
		n.warnings.Warn("pidbox: reply not sent", "method", t.wr.Method, "err", err)
	}
}

func (n *Node) call(ctx context.Context, e *entry, req *Request) (res result) {
	start := time.Now()
	defer func() {
		if p := recover(); p != nil {
			n.warnings.Log(slog.LevelError, "pidbox: handler panicked", "method", req.Method, "panic", p, "stack", string(debug.Stack()))
			res = result{err: fmt.Errorf("%w: %s: %v", ErrHandlerPanic, req.Method, p)}
		}
		e.counts.record(time.Since(start), handlerErr(res.err))
	}()
	v, err := e.h.Handle(ctx, req)
	return result{value: v, err: err}
}

// replyFor encodes {hostname: value}, for the caller's reply queue, in the
// mailbox's own serializer, as a Kombu node does, whatever the request
// came in. It returns nil when there is nothing to send: a cast, a handler
// that returned ErrNoReply, or a reply that cannot be encoded (logged).
// buf, when not nil, is the message's buffer, for Mailbox.release once the
// reply is sent.
func (n *Node) replyFor(t *task, res result) (msg []byte, buf *msgBuf) {
	if t.wr.ReplyTo == nil || errors.Is(res.err, ErrNoReply) {
		if res.err != nil && !errors.Is(res.err, ErrNoReply) {
			n.warnings.Warn("pidbox: command failed", "method", t.wr.Method, "err", res.err)
		}
		return nil, nil
	}
	m := n.mb
	value := res.value
	if res.err != nil {
		value = wire.ErrorValue{Error: res.err.Error()}
	}
	data, err := wire.EncodeReply(m.codec, n.hostname, value)
	if err != nil {
		n.warnings.Warn("pidbox: reply cannot be serialized; replying with an error", "method", t.wr.Method, "err", err)
		data, err = wire.EncodeReply(m.codec, n.hostname, wire.ErrorValue{Error: fmt.Sprintf("the reply of %s cannot be serialized: %v", t.wr.Method, err)})
		if err != nil {
			n.warnings.Error("pidbox: error reply cannot be serialized", "err", err)
			return nil, nil
		}
	}
	body, err := m.seal(Body{ContentType: m.codec.ContentType(), ContentEncoding: m.codec.ContentEncoding(), Data: data})
	if err != nil {
		n.warnings.Error("pidbox: reply not sent", "method", t.wr.Method, "err", err)
		return nil, nil
	}
	return m.encode(&wire.Envelope{
		Body:            body.Data,
		ContentType:     body.ContentType,
		ContentEncoding: body.ContentEncoding,
		Headers:         wire.Headers{Clock: m.opts.Clock.Forward(), Ticket: t.wr.Ticket, Expires: t.headers.Expires},
		Properties:      wire.Properties{DeliveryMode: wire.Transient, Exchange: t.wr.ReplyTo.Exchange, RoutingKey: t.wr.ReplyTo.RoutingKey},
	})
}
