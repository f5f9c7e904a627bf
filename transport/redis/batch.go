package redis

import (
	"context"
	"errors"
	"slices"
	"sync"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/gopidbox/pidbox/transport"
)

// Publishes are coalesced: while maxInflight publishes are on their way to
// Redis, the next ones wait in a queue, and the queue goes out as one
// pipeline, one write and one read, as soon as a slot frees. A lone
// publish never waits: it finds a free slot and runs exactly as it would
// without the queue. Under load, N concurrent callers (or a node replying
// to N callers at once, or N nodes sharing a transport) cost Redis and the
// kernel a handful of round trips instead of N; this is what go-redis's
// connection pool cannot do, since it gives each command a connection of
// its own.
//
// Nothing waits for a batch to fill: a queue only forms behind publishes
// already in flight, so batching adds no latency of its own.

// maxInflight bounds the publishes (single ones and batches) on their way
// at once. Two keep a second caller from waiting behind the first when
// there are only two, while a third and later ones queue up.
const maxInflight = 2

// maxBatch bounds the publishes in one pipeline, so one write stays a few
// hundred kilobytes at most.
const maxBatch = 512

// pubOp is one publish: msg to ex under routingKey, with an SADD of
// rebind's binding when rebind is not nil.
type pubOp struct {
	ctx        context.Context
	ex         transport.Exchange
	routingKey string
	msg        []byte
	rebind     *subscription

	err  error
	done chan struct{} // closed once err is set, for coalesce
	then func(error)   // called with err instead, for PublishQueued
}

// coalescer is the queue of publishes waiting for a free slot.
type coalescer struct {
	mu       sync.Mutex
	max      int // maxInflight; tests set 0 to send everything in batches
	inflight int
	queue    []*pubOp
	spare    []*pubOp // the last batch's slice, for reuse
}

// coalesce publishes o: at once when a slot is free, else with the next
// batch. It returns when o is published, or when o's context ends first;
// in that case o may still be published (as with any command whose reply
// did not arrive in time) unless it had not left the queue.
func (t *Transport) coalesce(o *pubOp) error {
	o, err := t.start(o)
	if o == nil {
		return err
	}
	select {
	case <-o.done:
		return o.err
	case <-o.ctx.Done():
	}
	c := &t.co
	c.mu.Lock()
	if i := slices.Index(c.queue, o); i >= 0 {
		c.queue = slices.Delete(c.queue, i, i+1)
		c.mu.Unlock()
		return t.errorf("publish to %s: %w", o.ex.Name, context.Cause(o.ctx))
	}
	c.mu.Unlock()
	select {
	case <-o.done: // it went out just now
		return o.err
	default:
		return t.errorf("publish to %s: no answer: %w", o.ex.Name, context.Cause(o.ctx))
	}
}

var _ transport.Queuer = (*Transport)(nil)

// PublishQueued implements transport.Queuer: o runs at once when a slot
// is free, and done is called before PublishQueued returns; otherwise it
// joins the next batch, and the goroutine sending that batch calls done.
func (t *Transport) PublishQueued(ctx context.Context, ex transport.Exchange, routingKey string, msg []byte, sub transport.Subscription, done func(error)) {
	if t.isClosed() {
		done(transport.ErrClosed)
		return
	}
	o := pubOp{ctx: ctx, ex: ex, routingKey: routingKey, msg: msg, then: done}
	if s := t.own(sub); s != nil && s.rebindDue(time.Now()) {
		o.rebind = s
	}
	switch {
	case !t.coalesces(ex) && o.rebind != nil:
		done(t.publishRebind(ctx, ex, routingKey, msg, o.rebind))
	case !t.coalesces(ex):
		done(t.publishPlain(ctx, ex, routingKey, msg))
	default:
		if q, err := t.start(&o); q == nil {
			done(err)
		}
	}
}

// start publishes o at once when a slot is free and returns its error;
// otherwise it queues a copy of o and returns the copy. (o itself is not
// kept: a publish that goes out at once allocates no op.)
func (t *Transport) start(o *pubOp) (queued *pubOp, err error) {
	c := &t.co
	c.mu.Lock()
	if c.inflight < c.max {
		c.inflight++
		c.mu.Unlock()
		err := t.publishOne(o)
		t.release()
		return nil, err
	}
	q := new(pubOp)
	*q = *o
	// The caller may reuse msg once we return, which is before the batch
	// is written.
	q.msg = slices.Clone(q.msg)
	if q.then == nil {
		q.done = make(chan struct{})
	}
	c.queue = append(c.queue, q)
	if c.inflight == 0 { // only when max is 0: nobody in flight will flush
		c.inflight++
		go t.flush()
	}
	c.mu.Unlock()
	return q, nil
}

// release frees a slot, or, when publishes are queued, keeps it for a
// goroutine that sends them.
func (t *Transport) release() {
	c := &t.co
	c.mu.Lock()
	if len(c.queue) == 0 {
		c.inflight--
		c.mu.Unlock()
		return
	}
	c.mu.Unlock()
	go t.flush()
}

// flush sends the queue in batches until it is empty, then frees its slot.
func (t *Transport) flush() {
	c := &t.co
	for {
		c.mu.Lock()
		if len(c.queue) == 0 {
			c.inflight--
			c.mu.Unlock()
			return
		}
		var batch []*pubOp
		if len(c.queue) <= maxBatch {
			batch, c.queue, c.spare = c.queue, c.spare[:0], nil
		} else {
			batch = slices.Clone(c.queue[:maxBatch])
			c.queue = slices.Delete(c.queue, 0, maxBatch)
		}
		c.mu.Unlock()

		t.publishBatch(batch)
		for _, o := range batch {
			if o.then != nil {
				o.then(o.err)
			} else {
				close(o.done)
			}
		}
		clear(batch)
		c.mu.Lock()
		if cap(batch) <= 4*maxBatch {
			c.spare = batch[:0]
		}
		c.mu.Unlock()
	}
}

// publishOne publishes o on its own, as one command (or the two of a
// re-declaration, pipelined).
func (t *Transport) publishOne(o *pubOp) error {
	if o.rebind == nil {
		return t.publishPlain(o.ctx, o.ex, o.routingKey, o.msg)
	}
	return t.publishRebind(o.ctx, o.ex, o.routingKey, o.msg, o.rebind)
}

// publishBatch publishes every op of batch in one pipeline and sets each
// op's err. An op whose context has ended is left out.
func (t *Transport) publishBatch(batch []*pubOp) {
	ctx, cancel := batchContext(batch)
	defer cancel()
	t.declMu.RLock()
	defer t.declMu.RUnlock()
	todo := batch[:0:0]
	for _, o := range batch {
		if err := o.ctx.Err(); err != nil {
			o.err = t.errorf("publish to %s: %w", o.ex.Name, context.Cause(o.ctx))
			continue
		}
		todo = append(todo, o)
	}
	for attempt := 0; len(todo) > 0; attempt++ {
		pipe := t.client.Pipeline()
		spans := make([]int, len(todo)+1)
		for i, o := range todo {
			t.queueOp(ctx, pipe, o)
			spans[i+1] = pipe.Len()
		}
		cmds, err := pipe.Exec(ctx)
		if len(cmds) != spans[len(todo)] { // not expected: go-redis sets each command's error
			for _, o := range todo {
				o.err = t.errorf("publish to %s: %w", o.ex.Name, err)
			}
			return
		}
		retry := todo[:0:0]
		for i, o := range todo {
			o.err = nil
			if err := firstErr(cmds[spans[i]:spans[i+1]]); err != nil {
				o.err = t.errorf("publish to %s: %w", o.ex.Name, err)
				if attempt == 0 && goredis.HasErrorPrefix(err, "NOSCRIPT") {
					retry = append(retry, o)
				}
			}
		}
		if len(retry) == 0 {
			return
		}
		// The script cache went with a restart: load and try once more.
		if pushScript.Load(ctx, t.client).Err() != nil {
			return
		}
		todo = retry
	}
}

// queueOp adds o's commands to pipe.
func (t *Transport) queueOp(ctx context.Context, pipe goredis.Pipeliner, o *pubOp) {
	if s := o.rebind; s != nil && !s.unbound {
		pipe.SAdd(ctx, t.bindingKey(s.b.Exchange.Name), s.member)
	}
	if o.ex.Kind == transport.Fanout {
		for _, ch := range t.topics(o.ex.Name, o.routingKey) { // two on Sentinel
			pipe.Publish(ctx, ch, o.msg)
		}
		return
	}
	t.queuePush(ctx, pipe, o.ex, o.routingKey, o.msg)
}

// batchContext bounds a batch by the latest deadline among its ops (none
// if one has none; go-redis's socket timeouts then apply): each op's
// caller stops waiting at its own deadline.
func batchContext(batch []*pubOp) (context.Context, context.CancelFunc) {
	var last time.Time
	for _, o := range batch {
		d, ok := o.ctx.Deadline()
		if !ok {
			return context.WithCancel(context.Background())
		}
		if d.After(last) {
			last = d
		}
	}
	return context.WithDeadline(context.Background(), last)
}

// firstErr is the first error among cmds, a nil reply (goredis.Nil) not
// counting as one, and a command refused inside a MULTI counting: its
// refusal is an element of EXEC's reply (queuePush).
func firstErr(cmds []goredis.Cmder) error {
	for _, c := range cmds {
		if err := c.Err(); err != nil && !errors.Is(err, goredis.Nil) {
			return err
		}
		if x, ok := c.(*goredis.SliceCmd); ok && x.Name() == "exec" {
			for _, v := range x.Val() {
				if err, ok := v.(error); ok {
					return err
				}
			}
		}
	}
	return nil
}
