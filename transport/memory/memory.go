// Package memory is an in-process pidbox transport with the routing
// semantics of Kombu's Redis transport: fanout exchanges deliver to the
// queues listening at that moment, direct exchanges to the queues bound
// under the routing key, topic exchanges to the queues bound under a
// matching pattern, and queues are consumed competitively.
//
// It needs nothing installed, which makes it the embedded default for demos
// and tests of code built on pidbox. Every queue is bounded, so a flood
// loses the newest messages instead of growing without limit.
package memory

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/gopidbox/pidbox/internal/ratelog"
	"github.com/gopidbox/pidbox/transport"
)

// DefaultQueueLimit is the number of messages a queue holds when Options
// does not say.
const DefaultQueueLimit = 10_000

// Options configure a Broker. The zero value works.
type Options struct {
	// QueueLimit bounds every queue; further messages are dropped.
	// Zero means DefaultQueueLimit.
	QueueLimit int
	// Logger receives a warning (rate-limited) when a full queue drops a
	// message.
	// Nil means slog.Default().
	Logger *slog.Logger
}

// Broker is an in-process transport.Transport. Create it with New.
type Broker struct {
	limit int
	log   *ratelog.Logger // a full queue drops every message: rate-limited

	mu       sync.Mutex
	closed   bool
	bindings map[string][]transport.Binding // by exchange name
	queues   map[string]*queue              // direct queues, by name
	fanout   map[string][]*subscription     // fanout listeners, by exchange name
	subs     map[*subscription]struct{}     // every open subscription
}

var _ transport.Transport = (*Broker)(nil)

func (o *Options) setDefaults() {
	if o.QueueLimit <= 0 {
		o.QueueLimit = DefaultQueueLimit
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
}

// New returns an empty broker.
func New(opts Options) *Broker {
	opts.setDefaults()
	return &Broker{
		limit:    opts.QueueLimit,
		log:      ratelog.New(opts.Logger),
		bindings: map[string][]transport.Binding{},
		queues:   map[string]*queue{},
		fanout:   map[string][]*subscription{},
		subs:     map[*subscription]struct{}{},
	}
}

// queue is a bounded FIFO with a wake-up signal for receivers.
type queue struct {
	name   string
	items  [][]byte
	head   int
	signal chan struct{}
	refs   int // subscriptions consuming it
}

func newQueue(name string) *queue {
	return &queue{name: name, signal: make(chan struct{}, 1)}
}

func (q *queue) wake() {
	select {
	case q.signal <- struct{}{}:
	default:
	}
}

// push appends msg; the caller holds the broker lock.
func (b *Broker) push(q *queue, msg []byte) {
	if len(q.items)-q.head >= b.limit {
		b.log.Warn("pidbox memory transport: queue full, message dropped", "queue", q.name, "limit", b.limit)
		return
	}
	q.items = append(q.items, slices.Clone(msg))
	q.wake()
}

// pop takes the oldest message; the caller holds the broker lock.
func (q *queue) pop() ([]byte, bool) {
	if q.head == len(q.items) {
		return nil, false
	}
	msg := q.items[q.head]
	q.items[q.head] = nil
	q.head++
	if q.head == len(q.items) {
		q.items, q.head = q.items[:0], 0
	} else if q.head > 1024 && q.head*2 > len(q.items) {
		q.items = append(q.items[:0], q.items[q.head:]...)
		q.head = 0
	}
	return msg, true
}

// Publish implements transport.Publisher.
func (b *Broker) Publish(ctx context.Context, ex transport.Exchange, routingKey string, msg []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return transport.ErrClosed
	}
	switch ex.Kind {
	case transport.Fanout:
		for _, s := range b.fanout[ex.Name] {
			b.push(s.q, msg)
		}
	case transport.Direct:
		for _, bd := range b.bindings[ex.Name] {
			if bd.RoutingKey == routingKey {
				if q := b.queues[bd.Queue]; q != nil {
					b.push(q, msg)
				}
			}
		}
	case transport.Topic:
		b.publishTopic(ex, routingKey, msg)
	default:
		return fmt.Errorf("memory transport: exchange %q has unknown kind %q", ex.Name, ex.Kind)
	}
	return nil
}

// Subscribe implements transport.Subscriber. Each subscription delivers
// to its handler from a goroutine of its own.
func (b *Broker) Subscribe(ctx context.Context, bd transport.Binding, h transport.Handler) (transport.Subscription, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if !knownKind(bd.Exchange.Kind) {
		return nil, fmt.Errorf("memory transport: exchange %q has unknown kind %q", bd.Exchange.Name, bd.Exchange.Kind)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil, transport.ErrClosed
	}
	s := &subscription{b: b, binding: bd, h: h, done: make(chan struct{}), loopDone: make(chan struct{})}
	b.subs[s] = struct{}{}
	if !slices.Contains(b.bindings[bd.Exchange.Name], bd) {
		b.bindings[bd.Exchange.Name] = append(b.bindings[bd.Exchange.Name], bd)
	}
	if bd.Exchange.Kind == transport.Fanout {
		// Every listener has its own buffer, as every Redis subscriber
		// gets its own copy of a PUBLISH.
		s.q = newQueue(bd.Queue)
		b.fanout[bd.Exchange.Name] = append(b.fanout[bd.Exchange.Name], s)
	} else {
		q := b.queues[bd.Queue]
		if q == nil {
			q = newQueue(bd.Queue)
			b.queues[bd.Queue] = q
		}
		s.q = q
	}
	s.q.refs++
	go s.loop()
	return s, nil
}

func knownKind(k transport.Kind) bool {
	return k == transport.Fanout || k == transport.Direct || k == transport.Topic
}

// publishTopic pushes msg once to every queue with a binding of ex that
// matches routingKey; the caller holds the broker lock.
func (b *Broker) publishTopic(ex transport.Exchange, routingKey string, msg []byte) {
	var done []string
	for _, bd := range b.bindings[ex.Name] {
		if slices.Contains(done, bd.Queue) || !transport.TopicMatch(bd.RoutingKey, routingKey) {
			continue
		}
		done = append(done, bd.Queue)
		if q := b.queues[bd.Queue]; q != nil {
			b.push(q, msg)
		}
	}
}

// DriverType names the kind of broker, as Kombu's transport.driver_type
// does: "memory".
func (b *Broker) DriverType() string { return "memory" }

// Bindings implements transport.Transport.
func (b *Broker) Bindings(ctx context.Context, ex transport.Exchange) ([]transport.Binding, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil, transport.ErrClosed
	}
	return slices.Clone(b.bindings[ex.Name]), nil
}

// Close closes every subscription and waits for their handlers to
// return. It is safe to call more than once.
func (b *Broker) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	subs := b.subs
	for s := range subs {
		s.closed = true
		close(s.done)
	}
	b.fanout, b.queues, b.bindings, b.subs = nil, nil, nil, nil
	b.mu.Unlock()
	for s := range subs {
		<-s.loopDone
	}
	return nil
}

type subscription struct {
	b        *Broker
	binding  transport.Binding
	h        transport.Handler
	q        *queue
	closed   bool          // guarded by b.mu
	done     chan struct{} // closed with closed
	loopDone chan struct{} // closed when loop has returned
}

var _ transport.HealthReporter = (*subscription)(nil)

// Health implements transport.HealthReporter: an open subscription on the
// in-process broker is always live, and the broker always answers.
func (s *subscription) Health() transport.Health {
	select {
	case <-s.done:
		return transport.Health{}
	default:
		return transport.Health{Live: true, LastSeen: time.Now()}
	}
}

// loop hands the queue's messages to the handler until closed.
func (s *subscription) loop() {
	defer close(s.loopDone)
	for {
		s.b.mu.Lock()
		if s.closed {
			s.b.mu.Unlock()
			return
		}
		msg, ok := s.q.pop()
		if ok && len(s.q.items) > s.q.head {
			s.q.wake() // more for the next consumer
		}
		signal := s.q.signal
		s.b.mu.Unlock()
		if ok {
			s.h(msg)
			continue
		}
		select {
		case <-signal:
		case <-s.done:
		}
	}
}

// Done implements transport.Subscription.
func (s *subscription) Done() <-chan struct{} { return s.done }

// Close implements transport.Subscription.
func (s *subscription) Close() error {
	s.unbind()
	<-s.loopDone
	return nil
}

func (s *subscription) unbind() {
	b := s.b
	b.mu.Lock()
	defer b.mu.Unlock()
	if s.closed {
		return
	}
	s.closed = true
	close(s.done)
	delete(b.subs, s)
	s.q.refs--
	name := s.binding.Exchange.Name
	if s.binding.Exchange.Kind == transport.Fanout {
		b.fanout[name] = slices.DeleteFunc(b.fanout[name], func(o *subscription) bool { return o == s })
		if slices.ContainsFunc(b.fanout[name], func(o *subscription) bool { return o.binding == s.binding }) {
			return // another listener still holds the binding
		}
	} else {
		if s.q.refs > 0 {
			return // another consumer still holds the queue
		}
		delete(b.queues, s.binding.Queue)
	}
	b.bindings[name] = slices.DeleteFunc(b.bindings[name], func(o transport.Binding) bool { return o == s.binding })
	if len(b.bindings[name]) == 0 {
		delete(b.bindings, name)
	}
}
