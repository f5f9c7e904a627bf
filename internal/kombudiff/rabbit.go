package kombudiff

import (
	"context"
	"fmt"
	"net"
	"sort"
	"strconv"
	"sync"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"
)

// RabbitTap watches two RabbitMQ virtual hosts (fleet i is the vhost of
// urls[i]) through RabbitMQ's firehose: with tracing on for a vhost
// (rabbitmqctl trace_on, or "tracing": true on the management API), the
// broker publishes a copy of every message published there to the
// vhost's amq.rabbitmq.trace exchange under "publish.<exchange>", with
// the message's properties and headers as they arrived, field types
// included, and its body. The tap binds a queue of its own to it and
// takes nothing from anybody else's queues.
type RabbitTap struct {
	fleets [2]*trace
	n      int

	closeOnce sync.Once
}

type trace struct {
	conn       *amqp091.Connection
	ch         *amqp091.Channel
	deliveries <-chan amqp091.Delivery
}

// markExchange carries Sync's markers: a built-in exchange, so the tap
// declares nothing that the suite's fleets could see.
const markExchange = "amq.direct"

// NewRabbitTap connects to both vhosts, whose tracing must be on, and
// starts watching.
func NewRabbitTap(ctx context.Context, urls [2]string) (*RabbitTap, error) {
	t := &RabbitTap{}
	for i, u := range urls {
		tr, err := newTrace(ctx, u)
		if err != nil {
			t.Close()
			return nil, fmt.Errorf("kombudiff: trace fleet %d: %w", i, err)
		}
		t.fleets[i] = tr
	}
	return t, nil
}

func newTrace(ctx context.Context, url string) (*trace, error) {
	cfg := amqp091.Config{Dial: func(network, addr string) (c net.Conn, err error) {
		return (&net.Dialer{Timeout: 10 * time.Second}).DialContext(ctx, network, addr)
	}}
	conn, err := amqp091.DialConfig(url, cfg)
	if err != nil {
		return nil, err
	}
	tr := &trace{conn: conn}
	fail := func(err error) (*trace, error) { _ = conn.Close(); return nil, err }
	if tr.ch, err = conn.Channel(); err != nil {
		return fail(err)
	}
	q, err := tr.ch.QueueDeclare("", false, true, true, false, nil)
	if err != nil {
		return fail(err)
	}
	if err := tr.ch.QueueBind(q.Name, "publish.#", "amq.rabbitmq.trace", false, nil); err != nil {
		return fail(err)
	}
	if tr.deliveries, err = tr.ch.Consume(q.Name, "", true, true, false, false, nil); err != nil {
		return fail(err)
	}
	return tr, nil
}

// Close stops watching.
func (t *RabbitTap) Close() error {
	t.closeOnce.Do(func() {
		for _, tr := range t.fleets {
			if tr != nil {
				_ = tr.conn.Close()
			}
		}
	})
	return nil
}

// Sync returns the messages published since the previous Sync. In each
// vhost it publishes a marker and reads the trace up to it: a message the
// broker took before the marker is traced before it. (A publish is
// asynchronous in AMQP 0.9.1: the suite syncs once the messages it waits
// for have been delivered, which the broker does after tracing them.)
func (t *RabbitTap) Sync(ctx context.Context) ([]Frame, error) {
	t.n++
	mark := "kombudiff-mark-" + strconv.Itoa(t.n)
	var frames []Frame
	for fleet, tr := range t.fleets {
		if err := tr.ch.PublishWithContext(ctx, markExchange, mark, false, false, amqp091.Publishing{Body: []byte(mark)}); err != nil {
			return nil, fmt.Errorf("kombudiff: marker: %w", err)
		}
		timer := time.NewTimer(10 * time.Second)
	read:
		for {
			select {
			case d, ok := <-tr.deliveries:
				if !ok {
					timer.Stop()
					return nil, fmt.Errorf("kombudiff: trace of fleet %d closed", fleet)
				}
				ex, _ := d.Headers["exchange_name"].(string)
				keys := routingKeys(d.Headers["routing_keys"])
				if ex == markExchange && len(keys) == 1 && keys[0] == mark {
					break read
				}
				frames = append(frames, traceFrame(fleet, ex, keys, &d))
			case <-timer.C:
				return nil, fmt.Errorf("kombudiff: marker %s not traced in fleet %d within 10s", mark, fleet)
			case <-ctx.Done():
				timer.Stop()
				return nil, ctx.Err()
			}
		}
		timer.Stop()
	}
	return frames, nil
}

func routingKeys(v any) []string {
	list, _ := v.([]any)
	out := make([]string, 0, len(list))
	for _, k := range list {
		s, _ := k.(string)
		out = append(out, s)
	}
	return out
}

// traceFrame turns a firehose copy into a Frame. The message's content
// type, content encoding and headers take the envelope's paths
// ("content-type", "headers.clock"); every other AMQP property present
// goes under "properties", with delivery_info {exchange, routing_key}.
// AMQP types its header values: each header's type, as the broker holds
// it, is compared too, under "headers.NAME:amqp-type" ("int32", "float64").
func traceFrame(fleet int, exchange string, keys []string, d *amqp091.Delivery) Frame {
	props, _ := d.Headers["properties"].(amqp091.Table)
	env := map[string]any{}
	properties := map[string]any{}
	var headers amqp091.Table
	for k, v := range props {
		switch k {
		case "content_type":
			env["content-type"] = v
		case "content_encoding":
			env["content-encoding"] = v
		case "headers":
			headers, _ = v.(amqp091.Table)
			env["headers"] = plain(v)
		default:
			properties[k] = plain(v)
		}
	}
	key := ""
	if len(keys) > 0 {
		key = keys[0]
	}
	properties["delivery_info"] = map[string]any{"exchange": exchange, "routing_key": key}
	env["properties"] = properties
	fields := MessageFields(env, d.Body)
	names := make([]string, 0, len(headers))
	for k := range headers {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		fields["headers."+k+":amqp-type"] = fmt.Sprintf("%T", headers[k])
	}
	if len(keys) > 1 {
		fields["(routing keys)"] = fmt.Sprint(keys) // CC/BCC: never sent by either side
	}
	route := "publish " + exchange + " " + uuidRE.ReplaceAllString(key, "{oid}")
	return Frame{Fleet: fleet, Route: route, Fields: fields}
}

// plain turns amqp091's table types into the plain maps and lists that
// Describe knows.
func plain(v any) any {
	switch x := v.(type) {
	case amqp091.Table:
		m := make(map[string]any, len(x))
		for k, e := range x {
			m[k] = plain(e)
		}
		return m
	case []any:
		l := make([]any, len(x))
		for i, e := range x {
			l[i] = plain(e)
		}
		return l
	}
	return v
}
