// Package transport defines what pidbox needs from a message broker: Kombu's
// virtual exchanges and queues, reduced to a small interface with no broker
// library's types in it.
//
// A transport moves opaque messages (encoded envelopes, see package wire)
// between queues bound to exchanges. There are three kinds of exchange:
//
//   - Fanout delivers a message to every queue bound to the exchange whose
//     consumer is listening at that moment. Like Redis pub/sub it is
//     at-most-once: a consumer that is away misses the message.
//   - Direct delivers a message to every queue bound under a routing key
//     equal to the message's. The queue keeps it until it is received (or,
//     on brokers with expiry, until the queue's TTL passes).
//   - Topic delivers a message, once, to every queue with a binding whose
//     key matches the message's routing key: words separated by ".", "*"
//     standing for a word and "#" for any number of words (see TopicMatch).
//     Queues keep messages as a direct exchange's do. Celery's event
//     exchange, celeryev, is a topic exchange.
//
// Implementations: transport/memory (in process), transport/redis
// (wire-compatible with Kombu's Redis transport, with Sentinel and Cluster)
// and transport/amqp (RabbitMQ, as Kombu's py-amqp transport). Every
// implementation runs the conformance suite in transport/transporttest.
// Optional interfaces (Rebinder, Queuer, ListingSubscriber,
// ListingPublisher, HealthReporter) let a transport do more where its
// broker allows.
//
// A publish, by any of these methods, must not modify msg and must not
// keep it once it returns (PublishQueued: once it has called done), as
// io.Writer's Write must not keep p: mailboxes and nodes encode messages
// into buffers they reuse. A transport that sends later copies.
package transport

import (
	"context"
	"errors"
	"time"
)

// ErrClosed is returned by operations on a closed transport or
// subscription.
var ErrClosed = errors.New("transport: closed")

// ErrUnreachable is wrapped by the error of an operation, or of opening a
// transport, that could not connect to a broker never reached before. A
// broker that accepts connections but does not answer (paused, blocked)
// is not this error, but its operations' deadlines.
var ErrUnreachable = errors.New("cannot reach the broker")

// ErrUnsupported is returned, wrapped, for an operation the broker cannot
// do, such as listing an exchange's bindings on AMQP 0.9.1 without
// RabbitMQ's management API.
var ErrUnsupported = errors.New("transport: not supported by this broker")

// Kind is the type of an exchange.
type Kind string

// Exchange kinds.
const (
	// Fanout delivers to every listening queue bound to the exchange.
	Fanout Kind = "fanout"
	// Direct delivers to every queue bound under the message's routing key.
	Direct Kind = "direct"
	// Topic delivers to every queue bound under a key that matches the
	// message's routing key (see TopicMatch).
	Topic Kind = "topic"
)

// Exchange names an exchange and its kind.
type Exchange struct {
	// Name is the exchange name, such as "celery.pidbox".
	Name string
	// Kind says how the exchange routes.
	Kind Kind
	// Durable asks brokers that declare exchanges (AMQP) for a durable
	// one. pidbox's exchanges are transient, as kombu/pidbox.py declares
	// them; Celery's event exchange, celeryev, is durable, as Kombu's
	// Exchange is by default, and redeclaring it otherwise is refused.
	// Brokers without declarations (Redis, memory) ignore it.
	Durable bool
}

// Binding joins a queue to an exchange under a routing key.
type Binding struct {
	// Exchange is the exchange the queue is bound to.
	Exchange Exchange
	// RoutingKey selects the messages a direct exchange routes to the queue
	// (by equality) or a topic exchange does (as a pattern, see
	// TopicMatch); fanout exchanges ignore it.
	RoutingKey string
	// Queue is the queue's name, such as "worker1@host.celery.pidbox".
	Queue string
}

// Publisher sends messages to exchanges.
type Publisher interface {
	// Publish routes msg to the queues bound to ex under routingKey.
	// A message that no queue takes is dropped without error, as in Kombu.
	// Publish must not modify msg, nor keep it once it returns.
	Publish(ctx context.Context, ex Exchange, routingKey string, msg []byte) error
}

// Handler receives a subscription's messages, one at a time and in order,
// on a goroutine of the transport's. (Where a transport reads a reply
// queue with more than one consumer, the order holds within what each
// one reads: replies from different nodes have no order of their own.)
// msg is valid only until the handler returns and must not be modified:
// copy what you keep. The handler must return quickly, handing slow work
// to goroutines of its own, and must not call the subscription's Close.
type Handler func(msg []byte)

// Subscriber binds queues and consumes them.
type Subscriber interface {
	// Subscribe binds b and starts delivering its queue's messages to h.
	// It returns once the subscription is confirmed by the broker: a
	// message published after Subscribe returns reaches h.
	Subscribe(ctx context.Context, b Binding, h Handler) (Subscription, error)
}

// Subscription is a bound, consumed queue.
type Subscription interface {
	// Done is closed when the subscription has ended: after Close, or
	// when its transport closed.
	Done() <-chan struct{}
	// Close stops consuming, waits until the handler has returned from
	// its last call, removes the binding and deletes the queue. It is safe
	// to call more than once.
	Close() error
}

// Health is a subscription's liveness as its transport sees it.
type Health struct {
	// Live is true while the subscription consumes: subscribed and
	// confirmed, or reading its queue without error.
	Live bool
	// LastSeen is when the broker last answered on the subscription's
	// connection: a message, or the reply to a health check.
	LastSeen time.Time
}

// HealthReporter is implemented by subscriptions that can report their
// Health.
type HealthReporter interface {
	Health() Health
}

// Rebinder is implemented by transports whose bindings can vanish while
// their owner runs (Redis keys evicted or flushed). PublishRebind publishes
// msg and, in the same round trip, declares sub's binding again: mailboxes
// re-assert their reply binding with every request, and nodes their own
// binding with every reply, so a lost binding costs no lost reply.
type Rebinder interface {
	PublishRebind(ctx context.Context, ex Exchange, routingKey string, msg []byte, sub Subscription) error
}

// Queuer is implemented by transports that can take a publish without
// waiting for it: PublishQueued sends msg as Publish does (declaring sub's
// binding again, as Rebinder does, when sub is not nil) and calls done
// with the outcome, either before it returns or later from another
// goroutine once the message went out with others. A node replies this way
// from the goroutine that reads its queue, so the next command is read
// while replies are on their way, and replies that are ready at the same
// moment share one round trip. done must be quick and must not block.
// PublishQueued must not keep msg once it has called done.
type Queuer interface {
	PublishQueued(ctx context.Context, ex Exchange, routingKey string, msg []byte, sub Subscription, done func(error))
}

// ListingSubscriber is implemented by transports that can bind a queue and
// list an exchange's bindings in one round trip. SubscribeListing is
// Subscribe(ctx, b, h) followed by Bindings(ctx, list), at the cost of
// one: a mailbox's first call binds its reply queue and looks up the nodes
// it expects at once. The listing is taken after b is bound. The error is
// Subscribe's; a listing that could not be taken is nil (a listing of no
// bindings is empty, not nil), and Bindings tells why.
type ListingSubscriber interface {
	SubscribeListing(ctx context.Context, b Binding, h Handler, list Exchange) (Subscription, []Binding, error)
}

// ListingPublisher is implemented by transports that can publish and list
// an exchange's bindings in one round trip. PublishListing is
// Bindings(ctx, list) followed by Publish (or, with sub, Rebinder's
// PublishRebind), at the cost of one: a broadcast that expects every live
// node learns which they are in its publish's round trip. The listing is
// taken just before the publish. The error is the publish's; a listing
// that could not be taken is nil, as in ListingSubscriber.
type ListingPublisher interface {
	PublishListing(ctx context.Context, ex Exchange, routingKey string, msg []byte, sub Subscription, list Exchange) ([]Binding, error)
}

// Transport is a broker connection that pidbox mailboxes and nodes share.
// Implementations are safe for concurrent use.
type Transport interface {
	Publisher
	Subscriber
	// Bindings lists the queues bound to ex that the broker believes to be
	// alive. Mailboxes use it to know which nodes to expect replies from.
	// A broker that cannot list bindings returns an error wrapping
	// ErrUnsupported.
	Bindings(ctx context.Context, ex Exchange) ([]Binding, error)
	// Close closes every subscription and releases the connection.
	Close() error
}
