// Package pidbox is a control-plane mailbox, wire-compatible with Kombu's
// pidbox (the layer under `celery inspect` and `celery control`): a Mailbox
// sends commands to remote workers and gathers their replies; a Node serves
// the named handlers registered with it. Call gathers until every addressed
// node replied, the limit, or a real total deadline, and gives each expected
// node's Outcome; Send returns a Call whose Replies streams them. Transports
// live in transport/; docs/ARCHITECTURE.md maps the rest.
package pidbox

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/gopidbox/pidbox/clock"
	"github.com/gopidbox/pidbox/internal/demux"
	"github.com/gopidbox/pidbox/internal/wire"
	"github.com/gopidbox/pidbox/transport"
)

// Defaults for Options.
const (
	DefaultNamespace      = "celery"
	DefaultTimeout        = time.Second
	DefaultMaxMessageSize = 8 << 20
	DefaultMaxUnclaimed   = demux.DefaultMaxUnclaimed
	DefaultUnclaimedAge   = demux.DefaultUnclaimedAge
	DefaultQuietGap       = 250 * time.Millisecond
)

// Options configure a Mailbox. The zero value is Celery's control mailbox:
// namespace "celery", fanout, json.
type Options struct {
	// Namespace names the exchanges: "<Namespace>.pidbox" and
	// "reply.<Namespace>.pidbox". Default "celery".
	Namespace string
	// Type is the broadcast exchange's kind: transport.Fanout (Celery's
	// choice and the default) or transport.Direct (Kombu's default), which
	// delivers through per-node queues that keep messages while a node is
	// away.
	Type transport.Kind
	// Serializer is the codec of every message the mailbox and its nodes
	// send, requests and replies alike, as Kombu's Mailbox.serializer:
	// "json" (default) or "msgpack". Beside a Celery fleet, set it to the
	// fleet's task_serializer, and Accept to its accept_content: with
	// task_serializer = "msgpack", Serializer: "msgpack" and Accept:
	// []string{"json", "msgpack"}, so Celery's callers, which read only
	// what accept_content allows, can read the nodes' replies.
	Serializer string
	// Accept lists the serializers incoming messages may use. Default:
	// json and msgpack.
	Accept []string
	// Sealer, when set, seals (signs) every message the mailbox and its
	// nodes send and opens (verifies) every message they receive; see
	// package security.
	Sealer Sealer
	// Clock is the Lamport clock shared by the mailbox and its nodes.
	// Nil means a new clock.
	Clock *clock.Lamport
	// Logger receives what the mailbox and its nodes log. Nil means
	// slog.Default().
	Logger *slog.Logger
	// MaxMessageSize refuses incoming messages above this many bytes.
	// Default 8 MiB.
	MaxMessageSize int
	// Timeout bounds calls whose context has no deadline and that have no
	// Timeout option. Default 1s, as `celery inspect` uses.
	Timeout time.Duration
	// MaxUnclaimed and UnclaimedAge bound the replies kept for tickets no
	// call is gathering (late replies): default 1,000 replies, 1 minute.
	MaxUnclaimed int
	UnclaimedAge time.Duration
	// QuietGap ends a broadcast with no limit this long after its last
	// reply when the live nodes cannot be known: the broker cannot list
	// them (AMQP without RabbitMQ's management API), or lists none (no
	// node runs, or the broker lost its bindings). Default 250ms.
	QuietGap time.Duration
	// Observer, when set, watches the calls of the mailbox and the
	// commands of its nodes: tracing and metrics (see package otel). Nil
	// costs nothing.
	Observer Observer
}

func (o *Options) setDefaults() error {
	if o.Namespace == "" {
		o.Namespace = DefaultNamespace
	}
	if o.Type == "" {
		o.Type = transport.Fanout
	}
	if o.Type != transport.Fanout && o.Type != transport.Direct {
		return fmt.Errorf("%w: mailbox type %q (want fanout or direct)", ErrBadCall, o.Type)
	}
	if o.Serializer == "" {
		o.Serializer = "json"
	}
	if o.Accept == nil {
		o.Accept = []string{"json", "msgpack"}
	}
	if o.Clock == nil {
		o.Clock = &clock.Lamport{}
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.MaxMessageSize <= 0 {
		o.MaxMessageSize = DefaultMaxMessageSize
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.QuietGap <= 0 {
		o.QuietGap = DefaultQuietGap
	}
	return nil
}

// Mailbox sends commands and gathers replies, and makes the nodes that
// serve them. It is safe for concurrent use. Create it with New and Close
// it when done, to unbind and delete its reply queue.
type Mailbox struct {
	tr       transport.Transport
	opts     Options
	exchange transport.Exchange
	replyEx  transport.Exchange
	oid      string
	codec    wire.Codec
	demux    *demux.Demux

	bufs sync.Pool // of *msgBuf
	envs sync.Pool // of *wire.Envelope, for nodes' commands to other nodes

	mu       sync.Mutex
	closed   bool
	replySub transport.Subscription
}

// msgBuf is a buffer a message is encoded into, reused once the transport
// has published it: transports keep no message once published (see
// package transport).
type msgBuf struct{ b []byte }

// maxReused bounds the buffers kept for reuse: a large message now and then
// should not keep its memory.
const maxReused = 16 << 10

// encode encodes e into a reused buffer; release returns it once the
// message is published.
func (m *Mailbox) encode(e *wire.Envelope) (msg []byte, buf *msgBuf) {
	buf, _ = m.bufs.Get().(*msgBuf)
	if buf == nil {
		buf = &msgBuf{}
	}
	if n := wire.EncodedLen(e); cap(buf.b) < n {
		buf.b = make([]byte, 0, n)
	}
	return wire.AppendEncode(buf.b[:0], e), buf
}

// envelope returns an envelope to decode a command into, one that served
// an earlier command when there is one (see reuseEnvelope).
func (m *Mailbox) envelope() *wire.Envelope {
	if e, _ := m.envs.Get().(*wire.Envelope); e != nil {
		return e
	}
	return &wire.Envelope{}
}

// reuseEnvelope takes back an envelope nothing refers to any more: a
// command for another node, or one that could not be decoded. A mailbox
// with a Sealer does not reuse them: a sealer may keep what it opened.
func (m *Mailbox) reuseEnvelope(e *wire.Envelope) {
	if m.opts.Sealer != nil || cap(e.Body) > maxReused {
		return
	}
	m.envs.Put(e)
}

// release takes back the buffer of a message that has been published.
func (m *Mailbox) release(buf *msgBuf, msg []byte) {
	if buf == nil || cap(msg) > maxReused {
		return
	}
	buf.b = msg[:0]
	m.bufs.Put(buf)
}

// New returns a mailbox on tr. It does not touch the broker until the first
// call.
func New(tr transport.Transport, opts Options) (*Mailbox, error) {
	if tr == nil {
		return nil, fmt.Errorf("%w: nil transport", ErrBadCall)
	}
	if err := opts.setDefaults(); err != nil {
		return nil, err
	}
	codec, err := wire.CodecNamed(opts.Serializer)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadCall, err)
	}
	for _, a := range opts.Accept {
		if _, err := wire.CodecNamed(a); err != nil {
			if _, err2 := wire.CodecFor(a, opts.Accept); err2 != nil {
				return nil, fmt.Errorf("%w: accept list: %w", ErrBadCall, err)
			}
		}
	}
	m := &Mailbox{
		tr:       tr,
		opts:     opts,
		exchange: transport.Exchange{Name: opts.Namespace + ".pidbox", Kind: opts.Type},
		replyEx:  transport.Exchange{Name: "reply." + opts.Namespace + ".pidbox", Kind: transport.Direct},
		oid:      uuid.NewString(),
		codec:    codec,
	}
	dopts := demux.Options{
		Open:         m.open,
		MaxSize:      opts.MaxMessageSize,
		Clock:        opts.Clock,
		Logger:       opts.Logger,
		MaxUnclaimed: opts.MaxUnclaimed,
		UnclaimedAge: opts.UnclaimedAge,
	}
	if o := opts.Observer; o != nil {
		// The demultiplexer's reasons are the Reason constants' values.
		dopts.Discarded = func(reason string, n int) {
			o.Event(context.Background(), Event{Kind: EventReplyDiscarded, Reason: reason, Count: n})
		}
	}
	if v, ok := opts.Sealer.(NodeVerifier); ok {
		dopts.VerifyNode = v.VerifyNode
	}
	m.demux = demux.New(dopts)
	return m, nil
}

// Namespace returns the mailbox's namespace.
func (m *Mailbox) Namespace() string { return m.opts.Namespace }

// Clock returns the Lamport clock the mailbox and its nodes share.
func (m *Mailbox) Clock() *clock.Lamport { return m.opts.Clock }

// ReplyStats counts what happened to the replies a mailbox received.
type ReplyStats struct {
	// Delivered replies went to a call gathering them.
	Delivered uint64
	// Kept replies arrived for a ticket no call was gathering yet.
	Kept uint64
	// Evicted replies were kept but never gathered.
	Evicted uint64
	// Dropped replies were malformed, expired, refused, or overflowed a
	// call that was not reading them.
	Dropped uint64
}

// ReplyStats reports what happened to the replies this mailbox received.
func (m *Mailbox) ReplyStats() ReplyStats {
	s := m.demux.Stats()
	return ReplyStats{Delivered: s.Delivered, Kept: s.Kept, Evicted: s.Evicted, Dropped: s.Dropped}
}

// Call sends a command and gathers its replies. It returns when the
// addressed nodes have all replied, the limit is reached, or the deadline
// passes. args is serialized as the command's keyword arguments: a struct,
// a map, or nil.
//
// The Result holds the replies and every expected node's Outcome. When the
// deadline passed with expected nodes missing, the error wraps
// ErrIncomplete and the Result is still returned; a broadcast whose nodes
// cannot be known ends at its deadline with no error.
func (m *Mailbox) Call(ctx context.Context, method string, args any, opts ...CallOption) (*Result, error) {
	c, err := m.Send(ctx, method, args, opts...)
	if err != nil {
		return nil, err
	}
	res := &Result{}
	for r, err := range c.Replies() {
		if err != nil {
			res.Outcomes = c.takeOutcomes()
			return res, err
		}
		res.Replies = append(res.Replies, r)
	}
	res.Outcomes = c.takeOutcomes()
	return res, nil
}

// Cast sends a command and wants no reply.
func (m *Mailbox) Cast(ctx context.Context, method string, args any, opts ...CallOption) error {
	cfg, err := resolve(opts)
	if err != nil {
		return err
	}
	body, err := m.encodeRequest(method, args, cfg, "")
	if err != nil {
		return err
	}
	var expires time.Time
	if cfg.timeout > 0 { // a cast without a timeout never expires, as in Kombu
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, cfg.timeout)
		defer cancel()
		expires, _ = ctx.Deadline()
	}
	if m.opts.Observer == nil {
		return m.publish(ctx, method, body, expires, nil, nil)
	}
	ctx, obs, extra := m.startCall(ctx, method, "", cfg)
	err = m.publish(ctx, method, body, expires, extra, nil)
	if obs != nil {
		end := CallEnd{Outcome: CallSent, Expected: -1, Err: err}
		if err != nil {
			end.Outcome = CallFailed
		}
		obs.End(end)
	}
	return err
}

// startCall tells the Observer a call starts, and returns the extra
// headers it set.
func (m *Mailbox) startCall(ctx context.Context, method, ticket string, cfg callConfig) (context.Context, CallObserver, []wire.Header) {
	info := CallInfo{Exchange: m.exchange.Name, Method: method, Ticket: ticket, Limit: cfg.limit}
	if dl, ok := ctx.Deadline(); ok {
		info.Timeout = time.Until(dl)
	}
	ctx, obs := m.opts.Observer.StartCall(ctx, info)
	if obs == nil {
		return ctx, nil, nil
	}
	h := &wire.Headers{}
	obs.Inject(Headers{h})
	return ctx, obs, h.Extra
}

// Nodes lists the names of the nodes bound to the mailbox's exchange that
// the broker believes alive, Go and Python alike. On a broker that cannot
// list them the error wraps transport.ErrUnsupported.
func (m *Mailbox) Nodes(ctx context.Context) ([]string, error) {
	bs, err := m.tr.Bindings(ctx, m.exchange)
	if err != nil {
		return nil, fmt.Errorf("pidbox: list nodes: %w", err)
	}
	return m.nodeNames(bs), nil
}

// nodeNames are the names of the nodes whose queues bs bind.
func (m *Mailbox) nodeNames(bs []transport.Binding) []string {
	suffix := "." + m.exchange.Name
	names := make([]string, 0, len(bs))
	for _, b := range bs {
		if name, ok := strings.CutSuffix(b.Queue, suffix); ok && name != "" {
			names = append(names, name)
		}
	}
	return names
}

// deadline bounds ctx by the call's timeout, else the context's own
// deadline, else the mailbox default.
func (m *Mailbox) deadline(ctx context.Context, cfg callConfig) (context.Context, context.CancelFunc) {
	if cfg.timeout > 0 {
		return context.WithTimeout(ctx, cfg.timeout)
	}
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, m.opts.Timeout)
}

// encodeRequest serializes a command, sealed when the mailbox seals. Its
// keyword arguments must serialize to a map.
func (m *Mailbox) encodeRequest(method string, args any, cfg callConfig, ticket string) (Body, error) {
	if method == "" {
		return Body{}, fmt.Errorf("%w: empty method", ErrBadCall)
	}
	req := &wire.Request{
		Method:      method,
		Destination: cfg.destination,
		Pattern:     cfg.pattern,
		Matcher:     cfg.matcher,
	}
	if args != nil {
		b, err := m.codec.Marshal(args)
		if err != nil {
			return Body{}, fmt.Errorf("%w: arguments of %s: %w", ErrBadCall, method, err)
		}
		if !wire.IsMap(m.codec, b) {
			return Body{}, fmt.Errorf("%w: arguments of %s must serialize to a map of keyword arguments, not %T", ErrBadCall, method, args)
		}
		req.Arguments = b
	}
	if ticket != "" {
		req.Ticket = ticket
		req.ReplyTo = &wire.ReplyTo{Exchange: m.replyEx.Name, RoutingKey: m.oid}
	}
	data, err := wire.EncodeRequest(m.codec, req)
	if err != nil {
		return Body{}, fmt.Errorf("%w: %w", ErrBadCall, err)
	}
	return m.seal(Body{ContentType: m.codec.ContentType(), ContentEncoding: m.codec.ContentEncoding(), Data: data})
}

// seal passes b through the mailbox's Sealer, if it has one.
func (m *Mailbox) seal(b Body) (Body, error) {
	if m.opts.Sealer == nil {
		return b, nil
	}
	sealed, err := m.opts.Sealer.Seal(b)
	if err != nil {
		return Body{}, fmt.Errorf("pidbox: seal: %w", err)
	}
	return sealed, nil
}

// open checks a received envelope's content type, and its seal where the
// mailbox seals, and returns the codec and body to decode.
func (m *Mailbox) open(env *wire.Envelope) (wire.Codec, []byte, string, error) {
	ct, body, signer := env.ContentType, env.Body, ""
	if m.opts.Sealer != nil {
		inner, s, err := m.opts.Sealer.Open(Body{ContentType: env.ContentType, ContentEncoding: env.ContentEncoding, Data: env.Body})
		if err != nil {
			return nil, nil, "", err
		}
		ct, body, signer = inner.ContentType, inner.Data, s
	}
	c, err := wire.CodecFor(ct, m.opts.Accept)
	return c, body, signer, err
}

// publish sends an encoded request on the broadcast exchange. With a
// reply subscription, a transport that can lose bindings declares its
// binding again in the same round trip.
func (m *Mailbox) publish(ctx context.Context, method string, body Body, expires time.Time, extra []wire.Header, replies transport.Subscription) error {
	_, err := m.publishListing(ctx, method, body, expires, extra, replies, nil)
	return err
}

// publishListing is publish; with lp, the broadcast exchange's bindings
// are listed in the same round trip (transport.ListingPublisher), nil when
// the listing failed.
func (m *Mailbox) publishListing(ctx context.Context, method string, body Body, expires time.Time, extra []wire.Header, replies transport.Subscription, lp transport.ListingPublisher) ([]transport.Binding, error) {
	msg, buf := m.encode(&wire.Envelope{
		Body:            body.Data,
		ContentType:     body.ContentType,
		ContentEncoding: body.ContentEncoding,
		Headers:         wire.Headers{Clock: m.opts.Clock.Forward(), Expires: wire.ExpiresAt(expires), Extra: extra},
		Properties:      wire.Properties{DeliveryMode: wire.Persistent, Exchange: m.exchange.Name},
	})
	defer m.release(buf, msg)
	var listed []transport.Binding
	var err error
	if lp != nil {
		listed, err = lp.PublishListing(ctx, m.exchange, "", msg, replies, m.exchange)
	} else {
		err = publish(ctx, m.tr, m.exchange, "", msg, replies)
	}
	if err != nil {
		return nil, fmt.Errorf("pidbox: send %s: %w", method, brokerSilent(ctx, err))
	}
	return listed, nil
}

// publish publishes msg, declaring sub's binding again in the same round
// trip where the transport can (transport.Rebinder).
func publish(ctx context.Context, tr transport.Transport, ex transport.Exchange, routingKey string, msg []byte, sub transport.Subscription) error {
	if rb, ok := tr.(transport.Rebinder); ok && sub != nil {
		return rb.PublishRebind(ctx, ex, routingKey, msg, sub)
	}
	return tr.Publish(ctx, ex, routingKey, msg)
}

// brokerSilent says so when the deadline ran out while the broker kept a
// request unanswered: a paused or blocked broker accepts connections but
// does not answer.
func brokerSilent(ctx context.Context, err error) error {
	if errors.Is(err, transport.ErrUnreachable) {
		return err // not silent: never reached
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return fmt.Errorf("%w: the broker did not answer before the deadline: %w", ErrBrokerSilent, err)
	}
	return err
}

// listen binds the reply queue, once, and returns its subscription; the
// transport hands every reply to the demultiplexer. With lookup, when
// this call binds the queue on a transport.ListingSubscriber, it also
// returns the broadcast exchange's bindings, looked up in the same round
// trip; otherwise, and when that lookup failed, nil.
func (m *Mailbox) listen(ctx context.Context, lookup bool) (transport.Subscription, []transport.Binding, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, nil, ErrClosed
	}
	if m.replySub != nil {
		return m.replySub, nil, nil
	}
	queue := m.oid + "." + m.replyEx.Name
	b := transport.Binding{Exchange: m.replyEx, RoutingKey: m.oid, Queue: queue}
	h := func(msg []byte) { _ = m.demux.Dispatch(msg) } // the demux logs drops
	var (
		sub    transport.Subscription
		listed []transport.Binding
		err    error
	)
	if ls, ok := m.tr.(transport.ListingSubscriber); ok && lookup {
		sub, listed, err = ls.SubscribeListing(ctx, b, h, m.exchange)
	} else {
		sub, err = m.tr.Subscribe(ctx, b, h)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("pidbox: bind reply queue %s: %w", queue, brokerSilent(ctx, err))
	}
	m.replySub = sub
	return sub, listed, nil
}

// Close unbinds and deletes the mailbox's reply queue. Calls in progress
// end with ErrClosed; nodes made from the mailbox keep serving until their
// own context ends. The transport stays open.
func (m *Mailbox) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	sub := m.replySub
	m.mu.Unlock()
	m.demux.Close()
	if sub == nil {
		return nil
	}
	return sub.Close()
}
