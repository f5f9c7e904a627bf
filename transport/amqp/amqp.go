// Package amqp is the pidbox transport for AMQP 0.9.1 brokers (RabbitMQ),
// wire-compatible with Kombu's py-amqp transport (Kombu 5, Celery 5): Go
// nodes and controllers talk to each other and to Python processes on the
// same vhost. It is built on github.com/rabbitmq/amqp091-go.
//
//	tr, err := amqp.Open(ctx, "amqp://guest:guest@127.0.0.1:5672//?management=15672", amqp.Options{})
//	mb, err := pidbox.New(tr, pidbox.Options{})
//
// Exchanges and queues are declared as Kombu declares them (queues also
// exclusive, so a node name already served elsewhere is refused), and the
// transport reconnects and resumes consuming by itself. Publish returns once
// the broker has confirmed the message. Enable RabbitMQ's management plugin
// and name it (management= on the URL): without it a broadcast cannot know
// which nodes to wait for and ends on a quiet gap after the last reply.
//
// docs/AMQP.md has the detail: declarations, how the envelope maps to
// frames, presence, reconnection and flow control.
package amqp

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"net"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gopidbox/pidbox/internal/ratelog"
	"github.com/gopidbox/pidbox/internal/tlsurl"
	"github.com/gopidbox/pidbox/internal/wire"
	"github.com/gopidbox/pidbox/transport"
	amqp091 "github.com/rabbitmq/amqp091-go"
)

// Defaults for Options.
const (
	// DefaultQueueExpires is Celery's control_queue_expires.
	DefaultQueueExpires = 10 * time.Second
	// DefaultQueueTTL is Celery's control_queue_ttl.
	DefaultQueueTTL = 300 * time.Second
	// DefaultHeartbeat is the AMQP heartbeat interval asked of the broker.
	DefaultHeartbeat = 10 * time.Second
	// DefaultReconnectMax caps the wait between two dials after the
	// connection dropped.
	DefaultReconnectMax = time.Second
	// DefaultMaxMessageSize refuses larger message bodies.
	DefaultMaxMessageSize = 8 << 20
)

// Options configure a Transport. The zero value works and declares queues
// as Celery does.
type Options struct {
	// ManagementURL is the base URL of RabbitMQ's management HTTP API,
	// such as "http://guest:guest@127.0.0.1:15672". It enables Bindings,
	// which lets a broadcast return as soon as every live node has replied
	// (an HTTP round trip per broadcast). The broker URL's
	// management=PORT|URL parameter overrides it.
	ManagementURL string
	// QueueExpires is the x-expires argument of declared queues. Default
	// 10s, Celery's control_queue_expires. Queues are non-durable,
	// auto-deleted and exclusive; exchanges are declared exactly as
	// kombu/pidbox.py declares them, since RabbitMQ refuses a declaration
	// that differs from a Python peer's.
	QueueExpires time.Duration
	// QueueTTL is the x-message-ttl argument of declared queues. Default
	// 300s, Celery's control_queue_ttl.
	QueueTTL time.Duration
	// Heartbeat is the AMQP heartbeat interval. Default 10s.
	Heartbeat time.Duration
	// ReconnectMax caps the backoff between dials when the connection
	// drops. Default 1s.
	ReconnectMax time.Duration
	// MaxMessageSize drops delivered messages whose body is larger,
	// as their content header arrives: the body is skipped unread and the
	// drop logged (rate-limited). Default 8 MiB.
	MaxMessageSize int
	// TLS configures amqps:// connections; the URL's ssl_* parameters
	// apply to a copy of it. Nil verifies the server against the system
	// roots (or the URL's ssl_ca_certs).
	TLS *tls.Config
	// Logger receives connection trouble, recovery and dropped messages.
	// Nil means slog.Default().
	Logger *slog.Logger
}

func (o *Options) setDefaults() {
	if o.QueueExpires <= 0 {
		o.QueueExpires = DefaultQueueExpires
	}
	if o.QueueTTL <= 0 {
		o.QueueTTL = DefaultQueueTTL
	}
	if o.Heartbeat <= 0 {
		o.Heartbeat = DefaultHeartbeat
	}
	if o.ReconnectMax <= 0 {
		o.ReconnectMax = DefaultReconnectMax
	}
	if o.MaxMessageSize <= 0 {
		o.MaxMessageSize = DefaultMaxMessageSize
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
}

// Transport is a transport.Transport on an AMQP 0.9.1 broker. It is safe
// for concurrent use.
//
// It watches its connection (heartbeats included) and every channel. When
// the connection drops it re-dials with backoff (up to Options.ReconnectMax
// between tries), declares the exchanges, queues and bindings again, and
// resumes consuming; subscriptions stay open meanwhile, so Node.Serve keeps
// running. As on Redis pub/sub, a fanout message sent while a node is
// reconnecting is lost; calls made during an outage wait for the broker until
// their context ends and fail with an error naming the broker.
type Transport struct {
	ep   endpoint
	cfg  amqp091.Config
	opts Options
	log  *slog.Logger
	mgmt *management
	drop *ratelog.Logger
	// oversize counts messages the size guard emptied that the delivery
	// loops have not seen yet.
	oversize atomic.Int64

	// op orders changes of broker state: setting up and removing
	// queues, and recovering after a reconnection.
	op ctxLock

	mu      sync.Mutex
	conn    *amqp091.Connection
	up      chan struct{} // closed while connected
	lastErr error         // why the connection is down
	closed  bool
	queues  map[string]*queue

	// blocked is non-nil while the broker blocks this connection's
	// publishers (connection.blocked: a resource alarm); it is closed when
	// it unblocks. Guarded by mu.
	blocked     chan struct{}
	blockReason string
	// lastSeen is when the broker last sent anything on the connection
	// (unix nanoseconds): a frame, a heartbeat.
	lastSeen atomic.Int64

	pubLock  ctxLock          // guards pub, pubConn, declared
	pub      *amqp091.Channel // in confirm mode
	pubConn  *amqp091.Connection
	declared map[string]bool // exchanges declared on pub

	stop   chan struct{}
	ctx    context.Context // canceled by Close: ends dials in flight
	cancel context.CancelFunc
	broken chan *queue // queues whose channel closed under a live connection
	wg     sync.WaitGroup
}

var _ transport.Transport = (*Transport)(nil)

// Open connects to the broker a URL names and returns once the connection
// is open, within ctx. Accepted URLs:
//
//	amqp://[user:password@]host[:port][/vhost]
//	amqps://...                       TLS
//	pyamqp://..., librabbitmq://...   Kombu's spellings of amqp://
//
// An amqps:// URL takes the TLS parameters the Redis transport takes on
// rediss://, with the same names and meaning (they apply on top of
// Options.TLS):
//
//	ssl_cert_reqs=required|optional|none   verify the server's certificate; default required
//	ssl_ca_certs=/path/ca.pem              the CAs to verify it against; default the system's
//	ssl_certfile=/path/client.pem          a client certificate, with
//	ssl_keyfile=/path/client.key           its private key
//	ssl_check_hostname=true|false          whether the certificate must name the host; default true
//
// As in Kombu, "amqp://host//" and "amqp://host/" both name the vhost "/".
// management=PORT (on the broker's host, with the URL's credentials) or
// management=URL (escaped) names the management API, see Options. Errors
// name the URL without its password.
func Open(ctx context.Context, rawURL string, opts Options) (*Transport, error) {
	ep, err := parseURL(rawURL)
	if err != nil {
		return nil, err
	}
	opts.setDefaults()
	cfg, err := ep.config(opts)
	if err != nil {
		return nil, err
	}
	if tlsurl.Unverified(cfg.TLSClientConfig) {
		opts.Logger.Warn("amqp transport: ssl_cert_reqs=none: the server's certificate is not verified, so anyone on the path can pose as it", "broker", ep.redacted)
	}
	if ep.management == "" && opts.ManagementURL != "" {
		ep.management = opts.ManagementURL
	}
	t := &Transport{
		ep:      ep,
		cfg:     cfg,
		opts:    opts,
		log:     opts.Logger,
		drop:    ratelog.New(opts.Logger, "broker", ep.redacted),
		up:      make(chan struct{}),
		queues:  map[string]*queue{},
		stop:    make(chan struct{}),
		broken:  make(chan *queue, 64),
		op:      newCtxLock(),
		pubLock: newCtxLock(),
	}
	if ep.management != "" {
		if t.mgmt, err = newManagement(ep.management, ep.vhost); err != nil {
			return nil, fmt.Errorf("amqp transport: %s: %w", ep.redacted, err)
		}
	}
	t.ctx, t.cancel = context.WithCancel(context.Background())
	conn, err := t.dial(ctx)
	if err != nil {
		t.cancel()
		return nil, t.errorf("%w", err)
	}
	t.conn = conn
	close(t.up)
	t.watchBlocked(conn)
	t.wg.Add(1)
	go t.supervise(conn)
	return t, nil
}

// Addr returns the broker URL without its password, for messages.
func (t *Transport) Addr() string { return t.ep.redacted }

func (t *Transport) errorf(format string, args ...any) error {
	return fmt.Errorf("amqp %s: "+format, append([]any{t.ep.redacted}, args...)...)
}

// dial opens a connection within ctx. Its errors do not name the broker:
// callers add it.
func (t *Transport) dial(ctx context.Context) (*amqp091.Connection, error) {
	cfg := t.cfg
	var last *activity // the connection DialConfig dials, once it is up
	cfg.Dial = func(network, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		// Bounds the handshake; amqp091 clears it once the connection is open.
		deadline, ok := ctx.Deadline()
		if !ok {
			deadline = time.Now().Add(30 * time.Second)
		}
		_ = c.SetDeadline(deadline)
		if t.ep.tls {
			// TLS here rather than in amqp091, so that the size guard
			// reads plain frames.
			tcfg := t.cfg.TLSClientConfig.Clone()
			if tcfg.ServerName == "" {
				tcfg.ServerName, _, _ = net.SplitHostPort(addr)
			}
			tc := tls.Client(c, tcfg)
			if err := tc.HandshakeContext(ctx); err != nil {
				c.Close()
				return nil, fmt.Errorf("TLS handshake with %s: %w", addr, err)
			}
			c = tc
		}
		last = &activity{Conn: c, seen: &t.lastSeen}
		return newSizeGuard(last, t.opts.MaxMessageSize, t.tooLarge), nil
	}
	conn, err := amqp091.DialConfig(t.ep.url, cfg)
	if err != nil {
		// A TLS 1.3 server judges the client's certificate once the
		// client's handshake is over: its refusal is an alert read while
		// amqp091 writes, which then reports only the write that failed.
		var alert *net.OpError
		if rerr := last.readErr(); errors.As(rerr, &alert) && alert.Op == "remote error" {
			return nil, fmt.Errorf("the broker refused the TLS connection: %w", rerr)
		}
		var ae *amqp091.Error
		if errors.As(err, &ae) && (ae.Code == amqp091.AccessRefused || ae.Code == amqp091.NotAllowed) {
			return nil, fmt.Errorf("the broker refused the connection to vhost %q: %w", t.ep.vhost, err)
		}
		return nil, fmt.Errorf("%w: %w", transport.ErrUnreachable, err)
	}
	return conn, nil
}

// supervise watches the connection and recovers from its loss until the
// transport closes.
func (t *Transport) supervise(conn *amqp091.Connection) {
	defer t.wg.Done()
	for {
		closed := conn.NotifyClose(make(chan *amqp091.Error, 1))
		var why error
	watch:
		for {
			select {
			case <-t.stop:
				return
			case q := <-t.broken:
				t.repair(conn, q)
			case e, ok := <-closed:
				if ok && e != nil {
					why = e
				} else {
					why = errors.New("connection closed")
				}
				break watch
			}
		}
		t.mu.Lock()
		if t.closed {
			t.mu.Unlock()
			return
		}
		t.up = make(chan struct{})
		t.lastErr = why
		t.conn = nil
		t.mu.Unlock()
		t.log.Warn("pidbox amqp: connection lost; reconnecting", "broker", t.ep.redacted, "err", why)
		conn = t.reconnect()
		if conn == nil {
			return
		}
	}
}

// reconnect dials with backoff until it succeeds, then declares every
// queue again and resumes consuming. It returns nil when the transport
// closes first.
func (t *Transport) reconnect() *amqp091.Connection {
	wait := 50 * time.Millisecond
	for attempt := 1; ; attempt++ {
		ctx, cancel := context.WithTimeout(t.ctx, 5*time.Second)
		conn, err := t.dial(ctx)
		cancel()
		if err == nil {
			t.op.lock()
			t.mu.Lock()
			if t.closed {
				t.mu.Unlock()
				t.op.unlock()
				_ = conn.Close()
				return nil
			}
			t.conn = conn
			queues := make([]*queue, 0, len(t.queues))
			for _, q := range t.queues {
				queues = append(queues, q)
			}
			t.mu.Unlock()
			t.watchBlocked(conn)
			for _, q := range queues {
				if err = q.setup(conn); err != nil {
					break
				}
			}
			t.op.unlock()
			if err == nil {
				t.mu.Lock()
				t.lastErr = nil
				close(t.up)
				t.mu.Unlock()
				t.log.Info("pidbox amqp: reconnected", "broker", t.ep.redacted, "attempts", attempt, "queues", len(queues))
				return conn
			}
			_ = conn.Close()
		}
		t.mu.Lock()
		t.lastErr = err
		t.conn = nil
		t.mu.Unlock()
		if attempt == 1 || attempt%20 == 0 {
			t.log.Warn("pidbox amqp: reconnect failed", "broker", t.ep.redacted, "attempt", attempt, "err", err)
		}
		select {
		case <-t.stop:
			return nil
		case <-time.After(wait/2 + rand.N(wait/2+1)):
		}
		wait = min(2*wait, t.opts.ReconnectMax)
	}
}

// repair sets up again a queue whose channel closed while the connection
// lived on (the queue was deleted, or a channel error). If that fails, it
// closes the connection, which recovers everything with backoff.
func (t *Transport) repair(conn *amqp091.Connection, q *queue) {
	t.op.lock()
	defer t.op.unlock()
	t.mu.Lock()
	live := t.queues[q.b.Queue] == q && !t.closed
	t.mu.Unlock()
	if !live || conn.IsClosed() || (q.ch != nil && !q.ch.IsClosed()) {
		return
	}
	if err := q.setup(conn); err != nil {
		t.log.Warn("pidbox amqp: cannot consume again; reconnecting", "queue", q.b.Queue, "err", err)
		_ = conn.Close()
	}
}

// activity records when the broker last sent anything, and the first
// error reading from it.
type activity struct {
	net.Conn
	seen *atomic.Int64
	err  atomic.Pointer[error]
}

// Read implements net.Conn, noting the time of every read that brought
// bytes and the first read error.
func (a *activity) Read(p []byte) (int, error) {
	n, err := a.Conn.Read(p)
	if n > 0 {
		a.seen.Store(time.Now().UnixNano())
	}
	if err != nil {
		a.err.CompareAndSwap(nil, &err)
	}
	return n, err
}

// readErr is the first error reading from the connection; nil for a nil
// activity.
func (a *activity) readErr() error {
	if a == nil {
		return nil
	}
	if p := a.err.Load(); p != nil {
		return *p
	}
	return nil
}

// watchBlocked follows the broker's connection.blocked and
// connection.unblocked on conn until it closes. RabbitMQ blocks a
// connection that publishes while a resource alarm is on (memory, disk):
// it stops reading it, so nothing sent on it is answered.
func (t *Transport) watchBlocked(conn *amqp091.Connection) {
	bs := conn.NotifyBlocked(make(chan amqp091.Blocking, 1))
	t.wg.Add(1)
	go func() {
		defer t.wg.Done()
		for b := range bs {
			t.setBlocked(conn, b)
		}
		t.setBlocked(conn, amqp091.Blocking{}) // a new connection starts unblocked
	}()
}

func (t *Transport) setBlocked(conn *amqp091.Connection, b amqp091.Blocking) {
	t.mu.Lock()
	defer t.mu.Unlock()
	switch {
	case b.Active && t.blocked == nil && t.conn == conn:
		t.blocked, t.blockReason = make(chan struct{}), b.Reason
		t.log.Warn("pidbox amqp: the broker blocks publishing", "broker", t.ep.redacted, "reason", b.Reason)
	case !b.Active && t.blocked != nil:
		close(t.blocked)
		t.blocked, t.blockReason = nil, ""
		t.log.Info("pidbox amqp: the broker unblocked publishing", "broker", t.ep.redacted)
	}
}

// unblocked waits, until ctx ends, while the broker blocks publishing.
func (t *Transport) unblocked(ctx context.Context, ex transport.Exchange) error {
	for {
		t.mu.Lock()
		b, why := t.blocked, t.blockReason
		t.mu.Unlock()
		if b == nil {
			return nil
		}
		select {
		case <-b:
		case <-t.stop:
			return transport.ErrClosed
		case <-ctx.Done():
			return t.errorf("publish to exchange %q: the broker blocks publishers (%s): %w", ex.Name, why, ctx.Err())
		}
	}
}

// connection returns the open connection, waiting for a reconnection
// until ctx ends.
func (t *Transport) connection(ctx context.Context) (*amqp091.Connection, error) {
	for {
		t.mu.Lock()
		if t.closed {
			t.mu.Unlock()
			return nil, transport.ErrClosed
		}
		conn, up, why := t.conn, t.up, t.lastErr
		t.mu.Unlock()
		if conn != nil && !conn.IsClosed() {
			return conn, nil
		}
		select {
		case <-up:
		case <-t.stop:
		case <-ctx.Done():
			if why == nil {
				why = errors.New("connection closed")
			}
			return nil, t.errorf("broker unavailable (%v): %w", why, ctx.Err())
		}
	}
}

// Publish decodes the envelope msg and publishes its body, properties and
// headers to ex, declaring ex first as Kombu does. When the broker is
// down it waits for the connection until ctx ends.
//
// It returns once the broker has confirmed the message (publisher
// confirms), so a publish is bounded by ctx even when the broker accepts the
// connection but does not answer, or blocks publishers under a resource
// alarm (connection.blocked): while blocked, publishes wait for
// connection.unblocked until ctx ends, without writing.
func (t *Transport) Publish(ctx context.Context, ex transport.Exchange, routingKey string, msg []byte) error {
	env, err := wire.Decode(msg, 0)
	if err != nil {
		return fmt.Errorf("amqp transport: publish to exchange %q: %w", ex.Name, err)
	}
	p := publishing(env)
	for {
		conn, err := t.connection(ctx)
		if err != nil {
			return err
		}
		if err := t.unblocked(ctx, ex); err != nil {
			return err
		}
		err = t.publish(ctx, conn, ex, routingKey, &p)
		if err == nil || ctx.Err() != nil || !errors.Is(err, amqp091.ErrClosed) {
			return err
		}
		// The channel or connection closed under us: try the next one.
		select {
		case <-ctx.Done():
			return t.errorf("publish to exchange %q: %w", ex.Name, err)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func (t *Transport) publish(ctx context.Context, conn *amqp091.Connection, ex transport.Exchange, key string, p *amqp091.Publishing) error {
	if err := t.pubLock.lockCtx(ctx); err != nil {
		return t.errorf("publish to exchange %q: %w", ex.Name, err)
	}
	if t.pub == nil || t.pubConn != conn || t.pub.IsClosed() || !t.declared[ex.Name] {
		// Round trips to the broker, which may not answer: wait for them
		// no longer than ctx; the lock is released when they end.
		done := make(chan error, 1)
		go func() { done <- t.preparePublish(conn, ex) }()
		select {
		case err := <-done:
			if err != nil {
				t.pubLock.unlock()
				return err
			}
		case <-ctx.Done():
			go func() { <-done; t.pubLock.unlock() }()
			return t.errorf("publish to exchange %q: %w", ex.Name, ctx.Err())
		}
	}
	dc, err := t.pub.PublishWithDeferredConfirm(ex.Name, key, false, false, *p)
	if err != nil {
		t.pub = nil
		t.pubLock.unlock()
		return t.errorf("publish to exchange %q: %w", ex.Name, err)
	}
	t.pubLock.unlock()
	// The broker confirms a message once it has routed it. A broker that
	// blocks publishers, or that froze, does not: the wait ends with ctx.
	acked, err := dc.WaitContext(ctx)
	if err != nil {
		return t.errorf("publish to exchange %q: not confirmed by the broker: %w", ex.Name, err)
	}
	if !acked {
		return t.errorf("publish to exchange %q: the broker did not take the message (refused, or the connection closed)", ex.Name)
	}
	return nil
}

// preparePublish opens the publishing channel on conn if needed and
// declares ex on it. The caller holds t.pubLock.
func (t *Transport) preparePublish(conn *amqp091.Connection, ex transport.Exchange) error {
	if t.pub == nil || t.pubConn != conn || t.pub.IsClosed() {
		ch, err := conn.Channel()
		if err != nil {
			return t.errorf("open a channel: %w", err)
		}
		if err := ch.Confirm(false); err != nil {
			_ = ch.Close()
			return t.errorf("publisher confirms: %w", err)
		}
		t.pub, t.pubConn, t.declared = ch, conn, map[string]bool{}
	}
	if !t.declared[ex.Name] {
		if err := declareExchange(t.pub, ex); err != nil {
			t.pub = nil
			return t.errorf("%w", err)
		}
		t.declared[ex.Name] = true
	}
	return nil
}

// ctxLock is a mutex whose lockCtx gives up when a context ends.
type ctxLock chan struct{}

func newCtxLock() ctxLock { return make(ctxLock, 1) }

func (l ctxLock) lock() { l <- struct{}{} }

func (l ctxLock) lockCtx(ctx context.Context) error {
	select {
	case l <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (l ctxLock) unlock() { <-l }

// declareExchange declares ex exactly as kombu/pidbox.py does (transient),
// or durable when ex asks, as Kombu declares Celery's event exchange.
func declareExchange(ch *amqp091.Channel, ex transport.Exchange) error {
	if err := ch.ExchangeDeclare(ex.Name, string(ex.Kind), ex.Durable, false, false, false, nil); err != nil {
		durable := "not durable"
		if ex.Durable {
			durable = "durable"
		}
		return fmt.Errorf("declare exchange %q (%s, %s): %w", ex.Name, ex.Kind, durable, err)
	}
	return nil
}

// publishing turns an envelope into the AMQP message Kombu on py-amqp
// sends.
func publishing(env *wire.Envelope) amqp091.Publishing {
	h := amqp091.Table{}
	h["clock"] = pyInt(env.Headers.Clock)
	if x := env.Headers.Expires; x > 0 && !math.IsInf(x, 0) {
		h["expires"] = x
	} else {
		h["expires"] = int32(0) // Kombu's "no expiry" is the int 0
	}
	if env.Headers.Ticket != "" {
		h["ticket"] = env.Headers.Ticket
	}
	for _, x := range env.Headers.Extra { // trace context: bounded by wire, never Kombu's keys
		h[x.Key] = x.Value
	}
	return amqp091.Publishing{
		ContentType:     env.ContentType,
		ContentEncoding: env.ContentEncoding,
		DeliveryMode:    uint8(min(max(env.Properties.DeliveryMode, 0), 255)),
		Priority:        uint8(min(max(env.Properties.Priority, 0), 9)),
		Headers:         h,
		Body:            env.Body,
	}
}

// pyInt is an integer header typed as py-amqp writes a Python int: a
// 32-bit field when it fits, else 64 bits.
func pyInt(v uint64) any {
	if v <= math.MaxInt32 {
		return int32(v)
	}
	return int64(min(v, math.MaxInt64))
}

// envelope builds Kombu's envelope from a delivery and appends its
// encoding to dst.
func envelope(dst []byte, d *amqp091.Delivery) ([]byte, error) {
	env := wire.Envelope{
		Body:            d.Body,
		ContentType:     d.ContentType,
		ContentEncoding: d.ContentEncoding,
		Properties: wire.Properties{
			DeliveryMode: int(d.DeliveryMode),
			Exchange:     d.Exchange,
			RoutingKey:   d.RoutingKey,
			Priority:     int(d.Priority),
			DeliveryTag:  strconv.FormatUint(d.DeliveryTag, 10),
		},
	}
	var err error
	if env.Headers.Clock, err = clockHeader(d.Headers["clock"]); err != nil {
		return dst, err
	}
	if env.Headers.Expires, err = expiresHeader(d.Headers["expires"]); err != nil {
		return dst, err
	}
	switch v := d.Headers["ticket"].(type) {
	case nil:
	case string:
		env.Headers.Ticket = v
	case []byte:
		env.Headers.Ticket = string(v)
	default:
		return dst, fmt.Errorf("%w: header ticket is a %T", wire.ErrMalformed, v)
	}
	extraHeaders(&env.Headers, d.Headers)
	return wire.AppendEncode(dst, &env), nil
}

// extraHeaders keeps a delivery's other string headers (trace context) as
// the envelope's extra headers, in key order, within wire's bounds; the
// rest are left out, as Kombu leaves them.
func extraHeaders(h *wire.Headers, table amqp091.Table) {
	if len(table) <= 3 { // clock, expires, ticket: no extra to look for
		n := 0
		for k := range table {
			if k == "clock" || k == "expires" || k == "ticket" {
				n++
			}
		}
		if n == len(table) {
			return
		}
	}
	keys := make([]string, 0, len(table))
	for k := range table {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		switch v := table[k].(type) {
		case string:
			h.Set(k, v)
		case []byte:
			h.Set(k, string(v))
		}
	}
}

func clockHeader(v any) (uint64, error) {
	switch v := v.(type) {
	case nil:
		return 0, nil
	case int8, int16, int32, int64, int:
		n := toInt64(v)
		if n >= 0 {
			return uint64(n), nil
		}
	case uint8:
		return uint64(v), nil
	case uint16:
		return uint64(v), nil
	case uint32:
		return uint64(v), nil
	case float32, float64:
		f := toFloat(v)
		if f >= 0 && f == math.Trunc(f) && f < math.MaxUint64 {
			return uint64(f), nil
		}
	}
	return 0, fmt.Errorf("%w: header clock=%.40v is not a non-negative integer", wire.ErrMalformed, v)
}

func expiresHeader(v any) (float64, error) {
	switch v := v.(type) {
	case nil:
		return 0, nil
	case int8, int16, int32, int64, int:
		return float64(toInt64(v)), nil
	case uint8, uint16, uint32:
		return float64(toInt64(v)), nil
	case float32, float64:
		if f := toFloat(v); !math.IsNaN(f) {
			return f, nil
		}
	}
	return 0, fmt.Errorf("%w: header expires=%.40v is not a number", wire.ErrMalformed, v)
}

func toInt64(v any) int64 {
	switch v := v.(type) {
	case int8:
		return int64(v)
	case int16:
		return int64(v)
	case int32:
		return int64(v)
	case int64:
		return v
	case int:
		return int64(v)
	case uint8:
		return int64(v)
	case uint16:
		return int64(v)
	case uint32:
		return int64(v)
	}
	return 0
}

func toFloat(v any) float64 {
	switch v := v.(type) {
	case float32:
		return float64(v)
	case float64:
		return v
	}
	return 0
}

// Subscribe declares b's exchange (as Kombu does) and queue (exclusive,
// auto-deleted, with x-expires and x-message-ttl), binds them and starts
// consuming without acknowledgements. It returns once the broker has
// confirmed the consumer. Subscriptions to one queue name within a
// transport share its consumer: on a fanout exchange each gets every
// message, on a direct exchange they take turns.
//
// The subscription implements transport.HealthReporter (for Node.Health and
// package health): live while its queue is consumed; last seen is when the
// broker last sent anything on the connection, a delivery or a heartbeat.
func (t *Transport) Subscribe(ctx context.Context, b transport.Binding, h transport.Handler) (transport.Subscription, error) {
	conn, err := t.connection(ctx)
	if err != nil {
		return nil, err
	}
	s := &subscription{h: h, done: make(chan struct{})}
	if err := t.op.lockCtx(ctx); err != nil {
		return nil, t.errorf("subscribe queue %q: %w", b.Queue, err)
	}
	locked := true
	defer func() {
		if locked {
			t.op.unlock()
		}
	}()
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil, transport.ErrClosed
	}
	q := t.queues[b.Queue]
	if q != nil {
		if q.b != b {
			t.mu.Unlock()
			return nil, fmt.Errorf("amqp transport: queue %q is already bound to exchange %q under %q in this process", b.Queue, q.b.Exchange.Name, q.b.RoutingKey)
		}
		s.q = q
		q.add(s)
		t.mu.Unlock()
		return s, nil
	}
	q = &queue{t: t, b: b}
	s.q = q
	q.add(s)
	t.mu.Unlock()
	// Round trips to the broker, which may not answer: wait for them no
	// longer than ctx. An abandoned setup is undone when it ends.
	done := make(chan error, 1)
	go func() { done <- q.setup(conn) }()
	select {
	case err := <-done:
		if err != nil {
			return nil, err
		}
	case <-ctx.Done():
		s.end()
		locked = false
		go func() {
			if <-done == nil {
				_ = q.teardown()
			}
			t.op.unlock()
		}()
		return nil, t.errorf("subscribe queue %q: %w", b.Queue, ctx.Err())
	}
	t.mu.Lock()
	t.queues[b.Queue] = q
	t.mu.Unlock()
	return s, nil
}

// Bindings lists the queues bound to ex through RabbitMQ's management API;
// node queues are deleted with their consumer's connection, so these are
// the live nodes. Without the API configured (Options.ManagementURL) it
// returns an error wrapping transport.ErrUnsupported, and a broadcast with no
// limit must end on a quiet gap after the last reply or on its deadline.
func (t *Transport) Bindings(ctx context.Context, ex transport.Exchange) ([]transport.Binding, error) {
	t.mu.Lock()
	closed := t.closed
	t.mu.Unlock()
	if closed {
		return nil, transport.ErrClosed
	}
	if t.mgmt == nil {
		return nil, fmt.Errorf("amqp transport: list the bindings of exchange %q: no management API configured (management= on the URL): %w", ex.Name, transport.ErrUnsupported)
	}
	bs, err := t.mgmt.bindings(ctx, ex)
	if err != nil {
		return nil, t.errorf("list the bindings of exchange %q: %w", ex.Name, err)
	}
	return bs, nil
}

// Close closes every subscription, waiting for their handlers, and the
// connection. It is safe to call more than once.
func (t *Transport) Close() error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil
	}
	t.closed = true
	close(t.stop)
	t.cancel()
	t.mu.Unlock()
	t.op.lock()
	t.mu.Lock()
	queues := t.queues
	t.queues = map[string]*queue{}
	conn := t.conn
	t.mu.Unlock()
	for _, q := range queues {
		for _, s := range q.list() {
			s.end()
		}
	}
	var err error
	if conn != nil && !conn.IsClosed() {
		err = conn.Close()
	}
	for _, q := range queues {
		q.wait()
	}
	t.op.unlock()
	t.wg.Wait()
	if t.mgmt != nil {
		t.mgmt.close()
	}
	if err != nil && !errors.Is(err, amqp091.ErrClosed) {
		return t.errorf("close: %w", err)
	}
	return nil
}

// queue is one bound, consumed queue and the subscriptions sharing it.
type queue struct {
	t *Transport
	b transport.Binding

	mu   sync.Mutex
	subs []*subscription // replaced, never modified in place
	next int

	ch       *amqp091.Channel // guarded by t.op
	live     atomic.Bool      // consuming: set up, and its channel open
	loopDone chan struct{}
	buf      []byte // the delivery loop's envelope buffer
}

func (q *queue) add(s *subscription) {
	q.mu.Lock()
	q.subs = append(slices.Clip(q.subs), s)
	q.mu.Unlock()
}

func (q *queue) list() []*subscription {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.subs
}

// remove drops s and reports whether it was the last.
func (q *queue) remove(s *subscription) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.subs = slices.DeleteFunc(slices.Clone(q.subs), func(x *subscription) bool { return x == s })
	return len(q.subs) == 0
}

func (q *queue) args() amqp091.Table {
	return amqp091.Table{
		"x-expires":     int64(q.t.opts.QueueExpires / time.Millisecond),
		"x-message-ttl": int64(q.t.opts.QueueTTL / time.Millisecond),
	}
}

// setup declares, binds and consumes the queue on a new channel of conn,
// and starts its delivery loop. The caller holds t.op.
func (q *queue) setup(conn *amqp091.Connection) error {
	q.wait() // the previous channel's loop
	ch, err := conn.Channel()
	if err != nil {
		return q.t.errorf("open a channel: %w", err)
	}
	fail := func(err error) error {
		_ = ch.Close()
		return q.t.errorf("%w", err)
	}
	if err := declareExchange(ch, q.b.Exchange); err != nil {
		return fail(err)
	}
	if _, err := ch.QueueDeclare(q.b.Queue, false, true, true, false, q.args()); err != nil {
		return fail(fmt.Errorf("declare queue %q (exclusive, auto-delete): %w", q.b.Queue, err))
	}
	if err := ch.QueueBind(q.b.Queue, q.b.RoutingKey, q.b.Exchange.Name, false, nil); err != nil {
		return fail(fmt.Errorf("bind queue %q to exchange %q: %w", q.b.Queue, q.b.Exchange.Name, err))
	}
	deliveries, err := ch.Consume(q.b.Queue, "", true, false, false, false, nil)
	if err != nil {
		return fail(fmt.Errorf("consume queue %q: %w", q.b.Queue, err))
	}
	q.ch = ch
	q.live.Store(true)
	done := make(chan struct{})
	q.loopDone = done
	go q.loop(ch, deliveries, done)
	return nil
}

// teardown deletes the queue (which removes its binding and ends its
// consumer), closes its channel and waits for its delivery loop. The
// caller holds t.op.
func (q *queue) teardown() error {
	q.live.Store(false)
	var err error
	if q.ch != nil && !q.ch.IsClosed() {
		if _, derr := q.ch.QueueDelete(q.b.Queue, false, false, false); derr != nil && !errors.Is(derr, amqp091.ErrClosed) {
			err = q.t.errorf("delete queue %q: %w", q.b.Queue, derr)
		}
		_ = q.ch.Close()
	}
	q.wait()
	return err
}

// wait waits for the current delivery loop to end.
func (q *queue) wait() {
	if q.loopDone != nil {
		<-q.loopDone
	}
}

func (q *queue) loop(ch *amqp091.Channel, deliveries <-chan amqp091.Delivery, done chan struct{}) {
	defer close(done)
	for d := range deliveries {
		q.deliver(&d)
	}
	q.live.Store(false)
	// The channel closed. If the connection lives on, ask for repair.
	select {
	case <-q.t.stop:
	case q.t.broken <- q:
	default:
		q.t.log.Warn("pidbox amqp: repair queue full", "queue", q.b.Queue)
	}
}

func (q *queue) deliver(d *amqp091.Delivery) {
	t := q.t
	if len(d.Body) == 0 {
		// Kombu never sends an empty body: this is a message the size
		// guard emptied (and logged), or a malformed one.
		if t.oversize.Add(-1) < 0 {
			t.oversize.Add(1)
			t.dropped("malformed message", q.b.Queue, fmt.Errorf("%w: empty body", wire.ErrMalformed))
		}
		return
	}
	var err error
	q.buf, err = envelope(q.buf[:0], d)
	if err != nil {
		t.dropped("malformed message", q.b.Queue, err)
		return
	}
	if cap(q.buf) > 64<<10 {
		defer func() { q.buf = nil }() // do not keep a large buffer
	}
	subs := q.list()
	if len(subs) == 0 {
		return
	}
	if q.b.Exchange.Kind == transport.Direct {
		q.mu.Lock()
		q.next++
		s := subs[q.next%len(subs)]
		q.mu.Unlock()
		s.call(q.buf)
		return
	}
	for _, s := range subs {
		s.call(q.buf)
	}
}

// tooLarge logs a message the size guard refused, as it arrives.
func (t *Transport) tooLarge(size uint64) {
	t.oversize.Add(1)
	t.dropped("message above MaxMessageSize", "", fmt.Errorf("%w: body of %d bytes is above the %d-byte limit; skipped unread", wire.ErrTooLarge, size, t.opts.MaxMessageSize))
}

// dropped logs a dropped message, rate-limited.
func (t *Transport) dropped(what, queue string, err error) {
	t.drop.Warn("pidbox amqp: dropped "+what, "queue", queue, "err", err)
}

// subscription is one Subscribe's handler on a shared queue.
type subscription struct {
	q      *queue
	h      transport.Handler
	hmu    sync.Mutex // held while h runs
	ended  bool       // guarded by hmu
	done   chan struct{}
	once   sync.Once
	closed sync.Once
}

func (s *subscription) call(msg []byte) {
	s.hmu.Lock()
	defer s.hmu.Unlock()
	if !s.ended {
		s.h(msg)
	}
}

// end stops calls to the handler, waiting for a running one, and closes
// Done.
func (s *subscription) end() {
	s.once.Do(func() {
		s.hmu.Lock()
		s.ended = true
		s.hmu.Unlock()
		close(s.done)
	})
}

// Done is closed when the subscription has ended.
func (s *subscription) Done() <-chan struct{} { return s.done }

var _ transport.HealthReporter = (*subscription)(nil)

// Health implements transport.HealthReporter: Live while the queue is
// consumed (false from the moment its channel or connection closes until
// it consumes again after a reconnection); LastSeen is when the broker
// last sent anything on the connection, a delivery or a heartbeat.
func (s *subscription) Health() transport.Health {
	var h transport.Health
	select {
	case <-s.done:
	default:
		h.Live = s.q.live.Load()
	}
	if ns := s.q.t.lastSeen.Load(); ns > 0 {
		h.LastSeen = time.Unix(0, ns)
	}
	return h
}

// Close stops the handler and, for the queue's last subscription, cancels
// the consumer and deletes the queue (which removes its binding).
func (s *subscription) Close() error {
	var err error
	s.closed.Do(func() {
		s.end()
		t, q := s.q.t, s.q
		t.op.lock()
		defer t.op.unlock()
		if !q.remove(s) {
			return
		}
		t.mu.Lock()
		if t.queues[q.b.Queue] == q {
			delete(t.queues, q.b.Queue)
		}
		t.mu.Unlock()
		err = q.teardown()
	})
	return err
}
