package redis

import (
	"context"
	"slices"
	"strings"

	"github.com/gopidbox/pidbox/transport"
)

// DriverType names the kind of broker, as Kombu's transport.driver_type
// does: "redis". Celery looks at it to send its events through a fanout
// exchange rather than a topic one on Redis (celery/events/event.py).
func (t *Transport) DriverType() string { return "redis" }

// topicMember is the binding-set member for b. A topic binding stores, as
// Kombu's does, the regular expression its key stands for in the middle
// part, which Python publishers match routing keys against.
func topicMember(b transport.Binding) string {
	if b.Exchange.Kind != transport.Topic {
		return member(b)
	}
	return b.RoutingKey + sep + transport.TopicPattern(b.RoutingKey) + sep + b.Queue
}

// publishTopic delivers a message the way Kombu's virtual TopicExchange
// does on Redis: it reads the exchange's binding set and LPUSHes the
// message once to every queue bound under a key that matches the routing
// key, with the list TTL every pidbox push carries.
func (t *Transport) publishTopic(ctx context.Context, ex transport.Exchange, routingKey string, msg []byte) error {
	bindings, err := t.Bindings(ctx, ex)
	if err != nil {
		return err
	}
	var queues []string
	for _, b := range bindings {
		if b.Queue != "" && !slices.Contains(queues, b.Queue) && transport.TopicMatch(b.RoutingKey, routingKey) {
			queues = append(queues, b.Queue)
		}
	}
	if len(queues) == 0 {
		return nil
	}
	pipe := t.client.Pipeline()
	for _, q := range queues {
		pipe.LPush(ctx, t.key(q), msg)
		pipe.PExpire(ctx, t.key(q), t.opts.QueueTTL)
	}
	_, err = pipe.Exec(ctx)
	return err
}

// subscribePattern is the PSUBSCRIBE pattern of a fanout binding. Kombu
// subscribes to the exchange's channel with the binding's routing key
// appended and "#" turned into "*" (Celery's event receivers bind "#" to
// the fanout exchange celeryev on Redis, and so listen to every
// "/<db>.celeryev/<type>" channel); the rest of the name is quoted, so it
// matches exactly the channel Kombu publishes to.
func (t *Transport) subscribePattern(b transport.Binding) string {
	if b.RoutingKey == "" || t.opts.NoFanoutPatterns {
		return escapeGlob(t.topic(b.Exchange.Name, ""))
	}
	var key strings.Builder
	for _, r := range b.RoutingKey {
		switch {
		case r == '*' || r == '#':
			key.WriteByte('*')
		case strings.ContainsRune(`?[]\`, r):
			key.WriteByte('\\')
			key.WriteRune(r)
		default:
			key.WriteRune(r)
		}
	}
	return escapeGlob(t.topic(b.Exchange.Name, "")) + "/" + key.String()
}
