package redis

import (
	"context"
	"errors"
	"fmt"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/gopidbox/pidbox/transport"
	goredis "github.com/redis/go-redis/v9"
)

// subscription is a bound queue: a pattern subscription for a fanout
// exchange, a blocking-pop loop on the queue's lists for a direct one.
type subscription struct {
	t        *Transport
	b        transport.Binding
	member   string
	instance string // this subscription's id in the queue's owner record

	h         transport.Handler
	done      chan struct{} // closed by Close
	loopDone  chan struct{} // closed when the reading loops end
	readers   atomic.Int32  // the reading loops still running (pops only)
	batches   atomic.Int64  // batches delivered, until a second reader starts
	hmu       sync.Mutex    // one handler call at a time, when two readers pop
	hasSecond bool          // a second reader was started; guarded by t.mu
	closeOnce sync.Once
	closeErr  error

	channels []string // fanout only: the pub/sub channels, two on Sentinel
	dedup    *dedup   // drops the second copy when there are two channels

	mu          sync.Mutex
	ps          *goredis.PubSub // the current pub/sub connection, fanout only
	warnedOwner time.Time       // the last duplicate-name warning
	declared    bool            // the owner record has been written once
	unbound     bool            // guarded by t.declMu

	live       atomic.Bool  // consuming now
	lastRebind atomic.Int64 // unix nanoseconds of the last PublishRebind SADD
	lastSeen   atomic.Int64 // unix nanoseconds of the broker's last answer
}

// startList starts the queue's reading loop.
func (s *subscription) startList() {
	s.readers.Store(1)
	go s.runList()
}

// secondReaders bounds the second readers of a transport's reply queues,
// whose connections its blocking pool holds beside MaxQueues. A process
// has one reply queue a mailbox, and seldom many mailboxes.
const secondReaders = 16

// second starts a second reading loop on a reply queue, once: while one
// reader hands a reply to its caller (and lets it run first), the other
// is already waiting in Redis for the next. It starts with the second
// batch of replies, so that a process that makes one call to one node (a
// command-line controller) dials no connection for it, and its Close
// waits for none. Other queues keep one reader, and their messages their
// order. The handler still gets one message at a time (deliver).
func (s *subscription) second() {
	if !isReply(s.b.Exchange, s.b.RoutingKey) || s.closed() || s.batches.Load() >= 2 || s.batches.Add(1) != 2 {
		return
	}
	t := s.t
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.subs[s]; !ok || t.seconds >= secondReaders {
		return
	}
	t.seconds++
	s.hasSecond = true
	s.readers.Add(1) // before Close's wake counts the readers
	go s.runList()
}

var _ transport.HealthReporter = (*subscription)(nil)

// Health implements transport.HealthReporter.
func (s *subscription) Health() transport.Health {
	h := transport.Health{Live: s.live.Load() && !s.closed()}
	if ns := s.lastSeen.Load(); ns > 0 {
		h.LastSeen = time.Unix(0, ns)
	}
	return h
}

// seen records an answer from the broker.
func (s *subscription) seen() {
	s.lastSeen.Store(time.Now().UnixNano())
	s.live.Store(true)
}

func (s *subscription) isUnbound() bool { return s.unbound }

// pops reports whether s reads its queue by blocking pops, holding a
// connection of the blocking client's (direct and topic exchanges).
func (s *subscription) pops() bool { return s.b.Exchange.Kind != transport.Fanout }

// Done implements transport.Subscription.
func (s *subscription) Done() <-chan struct{} { return s.done }

func (s *subscription) closed() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// bytesOf views a string go-redis read for us as bytes, without a copy:
// nothing else holds the string, and handlers do not modify messages.
func bytesOf(s string) []byte { return unsafe.Slice(unsafe.StringData(s), len(s)) }

// deliver hands a message to the handler; it reports false once closed.
// Two readers of a reply queue take turns: the handler gets one message
// at a time, as transport.Handler promises, in order within each batch.
func (s *subscription) deliver(m []byte) bool {
	if s.closed() {
		return false
	}
	if s.pops() {
		s.hmu.Lock()
		defer s.hmu.Unlock()
	}
	s.h(m)
	return true
}

// sleep waits d or until Close; it reports false once closed.
func (s *subscription) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-s.done:
		return false
	}
}

// leaseCmd queues the lease script's EVALSHA for s on a pipeline.
func (s *subscription) leaseCmd(ctx context.Context, pipe goredis.Pipeliner) *goredis.Cmd {
	keys := []string{s.t.bindingKey(s.b.Exchange.Name), s.t.leaseKey(s.b.Exchange.Name), s.t.ownerKey(s.b)}
	args := []any{s.member, ms(s.t.opts.LeaseTTL), s.instance}
	return leaseScript.EvalSha(ctx, pipe, keys, args...)
}

// declare adds the binding and its lease now.
func (s *subscription) declare(ctx context.Context) error {
	_, err := s.declareListing(ctx, nil)
	return err
}

// declareListing is declare, with list's bindings listed in the same
// pipeline when list is not nil: one round trip. The declaration goes in a
// pipeline even alone, so that the first call of a process declares and
// publishes on one connection, go-redis's pipeline pool's. A listing that
// fails is nil.
func (s *subscription) declareListing(ctx context.Context, list *transport.Exchange) ([]transport.Binding, error) {
	s.t.declMu.RLock()
	defer s.t.declMu.RUnlock()
	if s.unbound {
		return nil, nil
	}
	run := func() (lease, listing *goredis.Cmd) {
		pipe := s.t.client.Pipeline()
		lease = s.leaseCmd(ctx, pipe)
		if list != nil {
			listing = bindingsScript.EvalSha(ctx, pipe, s.t.bindingsKeys(*list))
		}
		_, _ = pipe.Exec(ctx) // each command keeps its own error
		return lease, listing
	}
	noScript := func(c *goredis.Cmd) bool { return c != nil && goredis.HasErrorPrefix(c.Err(), "NOSCRIPT") }
	lease, listing := run()
	if noScript(lease) || noScript(listing) {
		// A server with an empty script cache (new, or restarted): load
		// the scripts and try once more. (go-redis does not load scripts
		// in a pipeline.)
		if leaseScript.Load(ctx, s.t.client).Err() == nil && (list == nil || bindingsScript.Load(ctx, s.t.client).Err() == nil) {
			lease, listing = run()
		}
	}
	if err := lease.Err(); err != nil && !errors.Is(err, goredis.Nil) {
		return nil, s.t.errorf("bind %s to %s: %w", s.b.Queue, s.b.Exchange.Name, err)
	}
	s.checkOwner(lease)
	if listing == nil {
		return nil, nil
	}
	members, err := listing.StringSlice()
	if err != nil {
		return nil, nil
	}
	return parseBindings(*list, members), nil
}

// checkOwner warns when another live process holds the same queue: two
// nodes share one name, and callers will see both reply. A foreign owner
// found by the first declaration is ignored: it may be a predecessor that
// died without unbinding. Found again after we wrote ours, it is alive.
func (s *subscription) checkOwner(cmd *goredis.Cmd) {
	prev, err := cmd.Text()
	s.mu.Lock()
	first := !s.declared
	s.declared = true
	foreign := err == nil && prev != "" && prev != s.instance && !first
	recent := time.Since(s.warnedOwner) < time.Minute
	if foreign && !recent {
		s.warnedOwner = time.Now()
	}
	s.mu.Unlock()
	if !foreign || recent {
		return
	}
	s.t.opts.Logger.Warn("pidbox redis: another live node uses the same name; give every node a unique hostname",
		"queue", s.b.Queue, "addr", s.t.addr)
}

// runFanout reads the pub/sub connection, health-checks it with PINGs, and
// re-establishes it (with the binding) whenever it fails.
func (s *subscription) runFanout(ps *goredis.PubSub) {
	defer close(s.loopDone)
	log := s.t.opts.Logger
	for {
		err := s.pump(ps)
		s.live.Store(false)
		s.t.lost.Store(true)
		_ = ps.Close()
		if s.closed() {
			return
		}
		log.Warn("pidbox redis: subscription lost; re-subscribing", "queue", s.b.Queue, "addr", s.t.addr, "err", err)
		for attempt := 0; ; attempt++ {
			if !s.sleep(backoff(attempt)) {
				return
			}
			ctx, cancel := context.WithTimeout(context.Background(), s.t.opts.HealthCheckInterval)
			ps, err = s.t.psubscribe(ctx, s.channels...)
			if err == nil {
				err = s.declare(ctx)
			}
			cancel()
			if err == nil {
				break
			}
			if ps != nil {
				_ = ps.Close()
			}
			if attempt == 0 || attempt%20 == 0 {
				log.Warn("pidbox redis: cannot re-subscribe yet", "queue", s.b.Queue, "err", err)
			}
		}
		s.mu.Lock()
		s.ps = ps
		s.mu.Unlock()
		if s.closed() {
			_ = ps.Close()
			return
		}
		s.seen()
		log.Info("pidbox redis: subscription re-established", "queue", s.b.Queue, "addr", s.t.addr)
	}
}

// pump delivers messages until the connection fails or the subscription
// closes. A PING that goes unanswered for a whole interval counts as a
// failure: the socket may have died without telling us.
func (s *subscription) pump(ps *goredis.PubSub) error {
	pinged := false
	for {
		msg, err := ps.ReceiveTimeout(context.Background(), s.t.opts.HealthCheckInterval)
		if s.closed() {
			return nil
		}
		if err != nil {
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Timeout() {
				return err
			}
			if pinged {
				return fmt.Errorf("health check: no answer to PING within %s", s.t.opts.HealthCheckInterval)
			}
			if err := ps.Ping(context.Background()); err != nil {
				return err
			}
			pinged = true
			continue
		}
		pinged = false
		s.seen()
		switch m := msg.(type) {
		case *goredis.Message:
			if s.dedup != nil && s.dedup.seen(m.Payload, m.Pattern) {
				continue
			}
			if !s.deliver(bytesOf(m.Payload)) {
				return nil
			}
		case *goredis.Subscription:
			// go-redis re-subscribed on a new connection by itself; Redis
			// may have lost the binding with its data.
			ctx, cancel := context.WithTimeout(context.Background(), s.t.opts.HealthCheckInterval)
			_ = s.declare(ctx)
			cancel()
		}
	}
}

// runList pops the queue's lists in batches until closed, riding out
// connection failures. The last loop to end closes loopDone.
func (s *subscription) runList() {
	defer func() {
		if s.readers.Add(-1) == 0 {
			close(s.loopDone)
		}
	}()
	keys := s.t.listKeys(s.b)
	log := s.t.opts.Logger
	failures := 0
	for !s.closed() {
		vals, err := s.t.pop(context.Background(), keys)
		if err != nil {
			s.live.Store(false)
			s.t.lost.Store(true)
			if s.closed() {
				return
			}
			if failures == 0 {
				log.Warn("pidbox redis: cannot read queue; retrying", "queue", s.b.Queue, "addr", s.t.addr, "err", err)
			}
			if !s.sleep(backoff(failures)) {
				return
			}
			failures++
			continue
		}
		s.seen()
		if failures > 0 {
			failures = 0
			ctx, cancel := context.WithTimeout(context.Background(), s.t.opts.HealthCheckInterval)
			if err := s.declare(ctx); err == nil {
				log.Info("pidbox redis: queue readable again", "queue", s.b.Queue, "addr", s.t.addr)
			}
			cancel()
		}
		n := 0
		for _, v := range vals {
			if v == wakeToken {
				continue
			}
			if !s.deliver(bytesOf(v)) {
				return
			}
			n++
		}
		// The handler readied whoever waited for these messages; let them
		// run before this goroutine spends a system call on its next pop.
		// (On a reply queue the other reader is waiting in Redis
		// meanwhile, so the next reply is not kept waiting.)
		if n > 0 {
			s.second()
			runtime.Gosched()
		}

	}
}

// abandon ends a subscription whose declaration failed, without waiting:
// its reading loop, if any, ends at its pop's return, then it leaves the
// transport. Close does nothing after it.
func (s *subscription) abandon() {
	s.t.declMu.Lock()
	s.unbound = true // neither lease renewals nor the loop declare it
	s.t.declMu.Unlock()
	s.closeOnce.Do(func() {
		close(s.done)
		s.closeErr = transport.ErrClosed
	})
	if !s.pops() {
		close(s.loopDone) // no loop was started
		s.t.remove(s)
		return
	}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		s.wake(ctx)
		cancel()
		<-s.loopDone
		s.t.remove(s)
	}()
}

// wake ends the queue's blocking pops now rather than at their timeout:
// a token for each reader, each in a command of its own, since Redis
// serves a blocked pop after each command and a pop takes all it finds. A
// reader started after the subscription closed ends without a pop.
func (s *subscription) wake(ctx context.Context) {
	key := s.t.listKeys(s.b)[0]
	pipe := s.t.client.Pipeline()
	for range max(s.readers.Load(), 1) {
		pipe.LPush(ctx, key, wakeToken)
	}
	pipe.PExpire(ctx, key, s.t.opts.BlockTimeout*4)
	_, _ = pipe.Exec(ctx)
}

// Close implements transport.Subscription: it stops reading, then removes
// the binding, its lease and the queue's lists.
func (s *subscription) Close() error {
	s.closeOnce.Do(func() {
		close(s.done)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if s.b.Exchange.Kind == transport.Fanout {
			s.mu.Lock()
			if s.ps != nil {
				_ = s.ps.Close()
			}
			s.mu.Unlock()
		} else {
			s.wake(ctx)
		}
		<-s.loopDone // the handler has returned from its last call
		s.closeErr = s.unbind(ctx)
		s.t.remove(s)
	})
	return s.closeErr
}

func (s *subscription) unbind(ctx context.Context) error {
	s.t.declMu.Lock()
	defer s.t.declMu.Unlock()
	s.unbound = true
	ex := s.b.Exchange.Name
	keys := append([]string{s.t.bindingKey(ex), s.t.leaseKey(ex), s.t.ownerKey(s.b)}, s.t.listKeys(s.b)...)
	// A pipeline of one, on the connection the declaration and the
	// publishes used (see declareListing), rather than a new one.
	err := s.t.withScript(ctx, unbindScript, func() error {
		pipe := s.t.client.Pipeline()
		cmd := unbindScript.EvalSha(ctx, pipe, keys, s.member, s.instance, "1")
		_, _ = pipe.Exec(ctx)
		return cmd.Err()
	})
	if err != nil {
		return s.t.errorf("unbind %s: %w", s.b.Queue, err)
	}
	return nil
}
