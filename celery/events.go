package celery

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/gopidbox/pidbox"
	"github.com/gopidbox/pidbox/clock"
	"github.com/gopidbox/pidbox/internal/wire"
	"github.com/gopidbox/pidbox/transport"
)

// eventExchangeName is Celery's event_exchange.
const eventExchangeName = "celeryev"

// Celery's event defaults.
const (
	// DefaultHeartbeatInterval is Celery's heartbeat frequency.
	DefaultHeartbeatInterval = 2 * time.Second
	// SoftwareIdent is the sw_ident a Go worker's events carry (Celery's
	// are "py-celery").
	SoftwareIdent = "go-pidbox"
)

// EventExchange returns the exchange Celery sends its events to on tr: the
// durable topic exchange celeryev, or, on Redis, a fanout exchange of that
// name, as Celery switches it there (celery/events/event.py,
// get_exchange). A transport tells it is Redis by a DriverType method
// returning "redis", after Kombu's transport.driver_type.
func EventExchange(tr transport.Transport) transport.Exchange {
	kind := transport.Topic
	if d, ok := tr.(interface{ DriverType() string }); ok && d.DriverType() == "redis" {
		kind = transport.Fanout
	}
	return transport.Exchange{Name: eventExchangeName, Kind: kind, Durable: true}
}

// EmitterOptions configure an Emitter.
type EmitterOptions struct {
	// Hostname is the worker's node name; required.
	Hostname string
	// Serializer is the serializer of event bodies: "json" (default) or
	// "msgpack". Use the mailbox's, as a Celery fleet shares one.
	Serializer string
	// Exchange is where events go. Default EventExchange(tr).
	Exchange transport.Exchange
	// Interval is the heartbeat period, sent as freq. Default 2s.
	Interval time.Duration
	// Clock is the Lamport clock events carry; pass the mailbox's
	// (Mailbox.Clock), as Celery shares one. Nil means a new one.
	Clock *clock.Lamport
	// Active and Processed count the tasks running and done, for
	// heartbeats. Nil means 0.
	Active, Processed func() int
	// TaskEvents starts with task events on, as `celery worker -E`.
	TaskEvents bool
	// Version is sw_ver. Default "dev".
	Version string
	// Sealer, when set, seals (signs) every event body, as Celery signs
	// its events when its event_serializer is "auth". Pass the mailbox's
	// Sealer for a fleet that signs its events.
	Sealer pidbox.Sealer
	// Logger receives send failures. Nil means slog.Default().
	Logger *slog.Logger
}

// Emitter publishes Celery's worker events: worker-online when Run
// starts, worker-heartbeat every Interval, worker-offline when Run's
// context ends, with the fields celery/worker/heartbeat.py sends (freq,
// sw_ident, sw_ver, sw_sys, active, processed, loadavg, plus hostname,
// timestamp, utcoffset, pid, clock and type). Send publishes other events,
// such as a Go task runner's task-started; task events go out only while
// enabled (enable_events, disable_events), as in Celery, where these
// commands switch the "task" group and worker events always flow.
//
// It implements Events, for Register.
type Emitter struct {
	tr    transport.Transport
	opts  EmitterOptions
	codec wire.Codec
	pid   int

	mu         sync.Mutex
	taskEvents bool
	failed     time.Time // the last logged send failure
}

// NewEmitter returns an emitter publishing on tr.
func NewEmitter(tr transport.Transport, opts EmitterOptions) (*Emitter, error) {
	if tr == nil {
		return nil, errors.New("celery: emitter: nil transport")
	}
	if opts.Hostname == "" {
		return nil, errors.New("celery: emitter: no hostname")
	}
	if opts.Serializer == "" {
		opts.Serializer = "json"
	}
	codec, err := wire.CodecNamed(opts.Serializer)
	if err != nil {
		return nil, fmt.Errorf("celery: emitter: %w", err)
	}
	if opts.Exchange.Name == "" {
		opts.Exchange = EventExchange(tr)
	}
	if opts.Interval <= 0 {
		opts.Interval = DefaultHeartbeatInterval
	}
	if opts.Clock == nil {
		opts.Clock = &clock.Lamport{}
	}
	if opts.Version == "" {
		opts.Version = "dev"
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return &Emitter{tr: tr, opts: opts, codec: codec, pid: os.Getpid(), taskEvents: opts.TaskEvents}, nil
}

// Run sends worker-online, then a worker-heartbeat every Interval until
// ctx ends, then worker-offline (within a second), and returns nil. A
// failed send is logged and does not stop it.
func (e *Emitter) Run(ctx context.Context) error {
	e.logged(e.Send(ctx, "worker-online", e.heartbeatFields(e.opts.Interval, true)))
	t := time.NewTicker(e.opts.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			octx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
			defer cancel()
			e.logged(e.Send(octx, "worker-offline", e.heartbeatFields(e.opts.Interval, true)))
			return nil
		case <-t.C:
			e.logged(e.Send(ctx, "worker-heartbeat", e.heartbeatFields(e.opts.Interval, true)))
		}
	}
}

func (e *Emitter) logged(err error) {
	if err == nil || errors.Is(err, context.Canceled) {
		return
	}
	e.mu.Lock()
	now := time.Now()
	quiet := now.Sub(e.failed) < time.Minute
	if !quiet {
		e.failed = now
	}
	e.mu.Unlock()
	if !quiet {
		e.opts.Logger.Warn("celery: event not sent", "hostname", e.opts.Hostname, "err", err)
	}
}

// heartbeatFields are the fields of Celery's Heart._send; the heartbeat
// command sends only freq and the software info.
func (e *Emitter) heartbeatFields(freq time.Duration, full bool) map[string]any {
	f := map[string]any{
		"freq":     Float(freq.Seconds()),
		"sw_ident": SoftwareIdent,
		"sw_ver":   e.opts.Version,
		"sw_sys":   pySystem(),
	}
	if full {
		active, processed := 0, 0
		if e.opts.Active != nil {
			active = e.opts.Active()
		}
		if e.opts.Processed != nil {
			processed = e.opts.Processed()
		}
		f["active"] = active
		f["processed"] = processed
		la := loadavg()
		floats := make([]Float, len(la)) // 3.0, not 3, as Python sends them
		for i, v := range la {
			floats[i] = Float(v)
		}
		f["loadavg"] = floats
	}
	return f
}

// Heartbeat sends a worker-heartbeat now, as the heartbeat command asks:
// with freq 5 and the software info, as Celery's does.
func (e *Emitter) Heartbeat(ctx context.Context) error {
	return e.Send(ctx, "worker-heartbeat", e.heartbeatFields(5*time.Second, false))
}

// EnableTaskEvents turns task events on; it reports whether they were off.
func (e *Emitter) EnableTaskEvents() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	was := e.taskEvents
	e.taskEvents = true
	return !was
}

// DisableTaskEvents turns task events off; it reports whether they were
// on.
func (e *Emitter) DisableTaskEvents() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	was := e.taskEvents
	e.taskEvents = false
	return was
}

// TaskEvents reports whether task events are on.
func (e *Emitter) TaskEvents() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.taskEvents
}

// utcOffset is celery.utils.time.utcoffset(): hours west of UTC, floored.
func utcOffset(now time.Time) int {
	_, east := now.Zone()
	return int(math.Floor(float64(-east) / 3600))
}

// Send publishes an event of type typ ("worker-heartbeat", "task-started",
// ...) with fields, adding hostname, utcoffset, pid, clock and timestamp
// (unless given), under the routing key typ with "-" replaced by ".".
// Events of the task group are dropped while task events are off.
func (e *Emitter) Send(ctx context.Context, typ string, fields map[string]any) error {
	group, _, _ := strings.Cut(typ, "-")
	if group == "task" && !e.TaskEvents() {
		return nil
	}
	now := time.Now()
	ev := make(map[string]any, len(fields)+6)
	for k, v := range fields {
		ev[k] = v
	}
	ev["hostname"] = e.opts.Hostname
	ev["utcoffset"] = utcOffset(now)
	ev["pid"] = e.pid
	ev["clock"] = e.opts.Clock.Forward()
	if _, ok := ev["timestamp"]; !ok {
		ev["timestamp"] = float64(now.UnixNano()) / 1e9
	}
	ev["type"] = typ
	data, err := e.codec.Marshal(ev)
	if err != nil {
		return fmt.Errorf("celery: event %s: %w", typ, err)
	}
	body := pidbox.Body{ContentType: e.codec.ContentType(), ContentEncoding: e.codec.ContentEncoding(), Data: data}
	if e.opts.Sealer != nil {
		if body, err = e.opts.Sealer.Seal(body); err != nil {
			return fmt.Errorf("celery: event %s: seal: %w", typ, err)
		}
	}
	routingKey := strings.ReplaceAll(typ, "-", ".")
	msg, err := json.Marshal(eventEnvelope{
		Body:            base64.StdEncoding.EncodeToString(body.Data),
		ContentEncoding: body.ContentEncoding,
		ContentType:     body.ContentType,
		Headers:         map[string]string{"hostname": e.opts.Hostname},
		Properties: eventProperties{
			DeliveryMode: 1,
			DeliveryInfo: map[string]string{"exchange": e.opts.Exchange.Name, "routing_key": routingKey},
			BodyEncoding: "base64",
			DeliveryTag:  uuid.NewString(),
		},
	})
	if err != nil {
		return fmt.Errorf("celery: event %s: %w", typ, err)
	}
	if err := e.tr.Publish(ctx, e.opts.Exchange, routingKey, msg); err != nil {
		return fmt.Errorf("celery: event %s: %w", typ, err)
	}
	return nil
}

// eventEnvelope is the message Kombu's Producer.publish puts on a virtual
// transport for an event.
type eventEnvelope struct {
	Body            string            `json:"body"`
	ContentEncoding string            `json:"content-encoding"`
	ContentType     string            `json:"content-type"`
	Headers         map[string]string `json:"headers"`
	Properties      eventProperties   `json:"properties"`
}

type eventProperties struct {
	DeliveryMode int               `json:"delivery_mode"`
	DeliveryInfo map[string]string `json:"delivery_info"`
	Priority     int               `json:"priority"`
	BodyEncoding string            `json:"body_encoding"`
	DeliveryTag  string            `json:"delivery_tag"`
}

// Event is one event as Celery sends it: a map with at least "type",
// "hostname", "timestamp" and "clock".
type Event map[string]any

// Type returns the event's type, such as "worker-heartbeat".
func (e Event) Type() string { s, _ := e["type"].(string); return s }

// Hostname returns the node the event came from.
func (e Event) Hostname() string { s, _ := e["hostname"].(string); return s }

// Float returns a numeric field, 0 when absent.
func (e Event) Float(key string) float64 {
	switch v := e[key].(type) {
	case float64:
		return v
	case float32:
		return float64(v)
	case int64:
		return float64(v)
	case uint64:
		return float64(v)
	case int:
		return float64(v)
	case int8:
		return float64(v)
	case int16:
		return float64(v)
	case int32:
		return float64(v)
	case uint8:
		return float64(v)
	case uint16:
		return float64(v)
	case uint32:
		return float64(v)
	}
	return 0
}

// ReceiveOptions configure Receive.
type ReceiveOptions struct {
	// Exchange is where events come from. Default EventExchange(tr).
	Exchange transport.Exchange
	// RoutingKey selects events by type, with "." for "-": "worker.#"
	// takes worker events only. Default "#", every event.
	RoutingKey string
	// Accept lists the serializers accepted. Default json and msgpack.
	Accept []string
	// MaxMessageSize refuses larger messages. Default 8 MiB.
	MaxMessageSize int
	// Sealer, when set, opens (verifies) every event body; events it
	// refuses are dropped.
	Sealer pidbox.Sealer
	// Logger receives messages that cannot be decoded. Nil means
	// slog.Default().
	Logger *slog.Logger
}

// Receive consumes events as Celery's EventReceiver does, from a queue
// "celeryev.<uuid>" of its own, and hands each to h (a list of events, as
// Celery batches them, is handed over one by one) until ctx ends. h runs
// on the transport's goroutine and must return quickly. It returns nil
// when ctx ends, or the error that stopped it.
func Receive(ctx context.Context, tr transport.Transport, opts ReceiveOptions, h func(Event)) error {
	if opts.Exchange.Name == "" {
		opts.Exchange = EventExchange(tr)
	}
	if opts.RoutingKey == "" {
		opts.RoutingKey = "#"
	}
	if opts.Accept == nil {
		opts.Accept = []string{"json", "msgpack"}
	}
	if opts.MaxMessageSize <= 0 {
		opts.MaxMessageSize = 8 << 20
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	b := transport.Binding{Exchange: opts.Exchange, RoutingKey: opts.RoutingKey, Queue: eventExchangeName + "." + uuid.NewString()}
	var bad time.Time
	sub, err := tr.Subscribe(ctx, b, func(msg []byte) {
		evs, err := decodeEvents(msg, opts)
		if err != nil {
			if time.Since(bad) > time.Minute {
				bad = time.Now()
				opts.Logger.Warn("celery: event dropped", "err", err)
			}
			return
		}
		for _, ev := range evs {
			h(ev)
		}
	})
	if err != nil {
		return fmt.Errorf("celery: receive events: %w", err)
	}
	select {
	case <-ctx.Done():
		_ = sub.Close()
		return nil
	case <-sub.Done():
		_ = sub.Close()
		return fmt.Errorf("celery: receive events: %w", transport.ErrClosed)
	}
}

func decodeEvents(msg []byte, opts ReceiveOptions) ([]Event, error) {
	env, err := wire.Decode(msg, opts.MaxMessageSize)
	if err != nil {
		return nil, err
	}
	if opts.Sealer != nil {
		inner, _, err := opts.Sealer.Open(pidbox.Body{ContentType: env.ContentType, ContentEncoding: env.ContentEncoding, Data: env.Body})
		if err != nil {
			return nil, fmt.Errorf("event refused: %w", err)
		}
		env.ContentType, env.ContentEncoding, env.Body = inner.ContentType, inner.ContentEncoding, inner.Data
	}
	codec, err := wire.CodecFor(env.ContentType, opts.Accept)
	if err != nil {
		return nil, err
	}
	var one map[string]any
	if err := codec.Unmarshal(env.Body, &one); err == nil {
		if _, ok := one["type"].(string); !ok {
			return nil, errors.New("event without a type")
		}
		return []Event{one}, nil
	}
	var many []map[string]any
	if err := codec.Unmarshal(env.Body, &many); err != nil {
		return nil, fmt.Errorf("event body is neither an event nor a list of events: %w", err)
	}
	out := make([]Event, 0, len(many))
	for _, m := range many {
		if _, ok := m["type"].(string); ok {
			out = append(out, m)
		}
	}
	return out, nil
}
