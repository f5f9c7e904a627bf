// Package pidbox is a control-plane mailbox: it sends commands to remote
// worker processes and gathers their replies. It is what Kombu's pidbox is
// to Python, the layer under `celery inspect` and `celery control`, and it
// speaks the same wire format, so Go controllers can command Celery workers
// and Celery tools can command Go workers.
//
// A Mailbox owns a namespace's two exchanges: the broadcast exchange
// "<namespace>.pidbox" that commands go to, and the reply exchange
// "reply.<namespace>.pidbox" that replies come back on, to a reply queue
// private to the mailbox. A Node, made from a mailbox, listens on the
// broadcast exchange under its hostname and runs the named handlers
// registered with it. Every message carries a Lamport clock and an expiry.
//
// Calls gather replies until the limit, until every node addressed has
// replied, or until a real total deadline, whichever comes first; Stream
// hands each reply over as it arrives. Memory stays bounded throughout.
//
// The transport underneath is pluggable: transport/memory runs everything
// in one process, transport/redis talks to Redis the way Kombu does.
package pidbox

import (
	"context"
	"fmt"
	"iter"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/gopidbox/pidbox/clock"
	"github.com/gopidbox/pidbox/reply"
	"github.com/gopidbox/pidbox/transport"
	"github.com/gopidbox/pidbox/wire"
)

// Defaults for Options.
const (
	DefaultNamespace      = "celery"
	DefaultTimeout        = time.Second
	DefaultMaxMessageSize = 8 << 20
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
	// Serializer is the codec for outgoing messages: "json" (default) or
	// "msgpack".
	Serializer string
	// Accept lists the serializers incoming messages may use. Default:
	// json and msgpack.
	Accept []string
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
	// call is gathering yet (see reply.Options).
	MaxUnclaimed int
	UnclaimedAge time.Duration
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
	clock    *clock.Lamport
	log      *slog.Logger
	demux    *reply.Demux

	mu       sync.Mutex
	closed   bool
	replySub transport.Subscription
}

// New returns a mailbox on tr. It does not touch the broker until the first
// call.
func New(tr transport.Transport, opts Options) (*Mailbox, error) {
	if tr == nil {
		return nil, fmt.Errorf("%w: nil transport", ErrBadCall)
	}
	if opts.Namespace == "" {
		opts.Namespace = DefaultNamespace
	}
	if opts.Type == "" {
		opts.Type = transport.Fanout
	}
	if opts.Type != transport.Fanout && opts.Type != transport.Direct {
		return nil, fmt.Errorf("%w: mailbox type %q (want fanout or direct)", ErrBadCall, opts.Type)
	}
	if opts.Serializer == "" {
		opts.Serializer = "json"
	}
	codec, err := wire.CodecNamed(opts.Serializer)
	if err != nil {
		return nil, err
	}
	if opts.Accept == nil {
		opts.Accept = []string{"json", "msgpack"}
	}
	for _, a := range opts.Accept {
		if _, err := wire.CodecNamed(a); err != nil {
			if _, err2 := wire.CodecFor(a, opts.Accept); err2 != nil {
				return nil, fmt.Errorf("accept list: %w", err)
			}
		}
	}
	if opts.Clock == nil {
		opts.Clock = &clock.Lamport{}
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.MaxMessageSize <= 0 {
		opts.MaxMessageSize = DefaultMaxMessageSize
	}
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	m := &Mailbox{
		tr:       tr,
		opts:     opts,
		exchange: transport.Exchange{Name: opts.Namespace + ".pidbox", Kind: opts.Type},
		replyEx:  transport.Exchange{Name: "reply." + opts.Namespace + ".pidbox", Kind: transport.Direct},
		oid:      uuid.NewString(),
		codec:    codec,
		clock:    opts.Clock,
		log:      opts.Logger,
	}
	m.demux = reply.NewDemux(reply.Options{
		Accept:       opts.Accept,
		MaxSize:      opts.MaxMessageSize,
		Clock:        opts.Clock,
		Logger:       opts.Logger,
		MaxUnclaimed: opts.MaxUnclaimed,
		UnclaimedAge: opts.UnclaimedAge,
	})
	return m, nil
}

// Namespace returns the mailbox's namespace.
func (m *Mailbox) Namespace() string { return m.opts.Namespace }

// Exchange returns the broadcast exchange commands are published to.
func (m *Mailbox) Exchange() transport.Exchange { return m.exchange }

// ReplyQueue returns the name of this mailbox's reply queue,
// "<oid>.reply.<namespace>.pidbox".
func (m *Mailbox) ReplyQueue() string { return m.oid + "." + m.replyEx.Name }

// Clock returns the mailbox's Lamport clock.
func (m *Mailbox) Clock() *clock.Lamport { return m.clock }

// Stats reports what happened to the replies this mailbox received.
func (m *Mailbox) Stats() reply.Stats { return m.demux.Stats() }

// Call sends a command and returns the replies gathered. It returns when
// the addressed nodes have all replied, the limit is reached, or the
// deadline passes; reaching the deadline is not an error. args is
// serialized as the command's keyword arguments: a struct, a map, or nil.
func (m *Mailbox) Call(ctx context.Context, method string, args any, opts ...CallOption) ([]reply.Reply, error) {
	var out []reply.Reply
	for r, err := range m.Stream(ctx, method, args, opts...) {
		if err != nil {
			return out, err
		}
		out = append(out, r)
	}
	return out, nil
}

// Stream sends a command and yields each reply as it arrives, with the
// same stopping rules as Call. Stop early by breaking out of the loop.
// Errors (the command could not be sent, or ctx was cancelled) are
// yielded once, as the last element.
func (m *Mailbox) Stream(ctx context.Context, method string, args any, opts ...CallOption) iter.Seq2[reply.Reply, error] {
	return func(yield func(reply.Reply, error) bool) {
		ctx, cancel, cfg, err := m.begin(ctx, opts)
		if err != nil {
			yield(reply.Reply{}, err)
			return
		}
		defer cancel()
		ticket := wire.NewID()
		inbox := m.demux.Wait(ticket) // before publishing: no reply missed
		rules := reply.Rules{Limit: cfg.limit, Expect: m.expect(ctx, cfg)}
		if rules.Limit == 0 && len(cfg.destination) > 0 {
			rules.Limit = len(cfg.destination)
		}
		if err := m.publish(ctx, method, args, cfg, ticket); err != nil {
			inbox.Close()
			yield(reply.Reply{}, err)
			return
		}
		for r, err := range reply.Collect(ctx, inbox, rules) {
			if !yield(r, err) {
				return
			}
		}
	}
}

// Cast sends a command and wants no reply.
func (m *Mailbox) Cast(ctx context.Context, method string, args any, opts ...CallOption) error {
	cfg, err := m.config(opts)
	if err != nil {
		return err
	}
	if cfg.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, cfg.timeout)
		defer cancel()
	}
	return m.publish(ctx, method, args, cfg, "")
}

// Send sends a command that wants replies and returns its ticket without
// waiting; Gather collects the replies later. Replies that arrive in
// between are kept for the ticket, within the mailbox's unclaimed bounds.
func (m *Mailbox) Send(ctx context.Context, method string, args any, opts ...CallOption) (ticket string, err error) {
	ctx, cancel, cfg, err := m.begin(ctx, opts)
	if err != nil {
		return "", err
	}
	defer cancel()
	ticket = wire.NewID()
	return ticket, m.publish(ctx, method, args, cfg, ticket)
}

// Gather yields the replies to a ticket returned by Send. Only Limit, To
// and Timeout apply; with neither Limit nor To it gathers until the
// deadline.
func (m *Mailbox) Gather(ctx context.Context, ticket string, opts ...CallOption) iter.Seq2[reply.Reply, error] {
	return func(yield func(reply.Reply, error) bool) {
		ctx, cancel, cfg, err := m.begin(ctx, opts)
		if err != nil {
			yield(reply.Reply{}, err)
			return
		}
		defer cancel()
		rules := reply.Rules{Limit: cfg.limit}
		if len(cfg.destination) > 0 {
			rules.Expect = cfg.destination
		}
		for r, err := range reply.Collect(ctx, m.demux.Wait(ticket), rules) {
			if !yield(r, err) {
				return
			}
		}
	}
}

// Nodes lists the names of the nodes bound to the mailbox's exchange that
// the broker believes alive, Go and Python alike.
func (m *Mailbox) Nodes(ctx context.Context) ([]string, error) {
	bs, err := m.tr.Bindings(ctx, m.exchange)
	if err != nil {
		return nil, fmt.Errorf("pidbox: list nodes: %w", err)
	}
	suffix := "." + m.exchange.Name
	names := make([]string, 0, len(bs))
	for _, b := range bs {
		if name, ok := strings.CutSuffix(b.Queue, suffix); ok && name != "" {
			names = append(names, name)
		}
	}
	return names, nil
}

// Expected returns the nodes a call with these options would wait for:
// the destinations, or for a broadcast with no Limit the known nodes it
// addresses. Nil means the call cannot know and gathers until its limit or
// deadline.
func (m *Mailbox) Expected(ctx context.Context, opts ...CallOption) ([]string, error) {
	cfg, err := m.config(opts)
	if err != nil {
		return nil, err
	}
	return m.expect(ctx, cfg), nil
}

func (m *Mailbox) expect(ctx context.Context, cfg callConfig) []string {
	if len(cfg.destination) > 0 {
		return cfg.destination
	}
	if cfg.limit > 0 {
		return nil
	}
	names, err := m.Nodes(ctx)
	if err != nil {
		m.log.Warn("pidbox: cannot list nodes; gathering until the deadline", "err", err)
		return nil
	}
	if cfg.matcher == "" {
		return names
	}
	re, err := compilePattern(cfg.pattern, cfg.matcher)
	if err != nil {
		return nil
	}
	out := names[:0]
	for _, n := range names {
		if re.MatchString(n) {
			out = append(out, n)
		}
	}
	return out
}

func (m *Mailbox) config(opts []CallOption) (callConfig, error) {
	var cfg callConfig
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.limit < 0 {
		return cfg, fmt.Errorf("%w: negative limit %d", ErrBadCall, cfg.limit)
	}
	if cfg.timeout < 0 {
		return cfg, fmt.Errorf("%w: negative timeout %s", ErrBadCall, cfg.timeout)
	}
	if len(cfg.destination) > 0 && cfg.matcher != "" {
		return cfg, fmt.Errorf("%w: a destination and a pattern cannot be combined", ErrBadCall)
	}
	if cfg.matcher != "" {
		if _, err := compilePattern(cfg.pattern, cfg.matcher); err != nil {
			return cfg, fmt.Errorf("%w: %w", ErrBadCall, err)
		}
	}
	return cfg, nil
}

// begin readies a call that wants replies: it checks the options, bounds
// ctx by the call's deadline and binds the reply queue. On success the
// caller must call cancel.
func (m *Mailbox) begin(ctx context.Context, opts []CallOption) (context.Context, context.CancelFunc, callConfig, error) {
	cfg, err := m.config(opts)
	if err != nil {
		return nil, nil, cfg, err
	}
	ctx, cancel := m.deadline(ctx, cfg)
	if err := m.listen(ctx); err != nil {
		cancel()
		return nil, nil, cfg, err
	}
	return ctx, cancel, cfg, nil
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

// encodeArgs serializes a command's keyword arguments, which must be a
// map or a struct.
func (m *Mailbox) encodeArgs(args any) (wire.Raw, error) {
	if args == nil {
		return nil, nil
	}
	b, err := m.codec.Marshal(args)
	if err != nil {
		return nil, fmt.Errorf("%w: arguments: %w", ErrBadCall, err)
	}
	if !isMap(m.codec, b) {
		return nil, fmt.Errorf("%w: arguments must serialize to a map of keyword arguments, not %T", ErrBadCall, args)
	}
	return b, nil
}

func isMap(c wire.Codec, b []byte) bool {
	if len(b) == 0 {
		return false
	}
	if c.Name() == "msgpack" {
		return b[0]&0xf0 == 0x80 || b[0] == 0xde || b[0] == 0xdf || b[0] == 0xc0
	}
	return b[0] == '{' || string(b) == "null"
}

func (m *Mailbox) publish(ctx context.Context, method string, args any, cfg callConfig, ticket string) error {
	if method == "" {
		return fmt.Errorf("%w: empty method", ErrBadCall)
	}
	rawArgs, err := m.encodeArgs(args)
	if err != nil {
		return err
	}
	req := &wire.Request{
		Method:      method,
		Arguments:   rawArgs,
		Destination: cfg.destination,
		Pattern:     cfg.pattern,
		Matcher:     cfg.matcher,
	}
	if ticket != "" {
		req.Ticket = ticket
		req.ReplyTo = &wire.ReplyTo{Exchange: m.replyEx.Name, RoutingKey: m.oid}
	}
	body, err := wire.EncodeRequest(m.codec, req)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrBadCall, err)
	}
	dl, _ := ctx.Deadline()
	if ticket == "" && cfg.timeout == 0 {
		dl = time.Time{} // a cast without a timeout never expires, as in Kombu
	}
	msg := wire.Encode(&wire.Envelope{
		Body:            body,
		ContentType:     m.codec.ContentType(),
		ContentEncoding: m.codec.ContentEncoding(),
		Headers:         wire.Headers{Clock: m.clock.Forward(), Expires: wire.ExpiresAt(dl)},
		Properties:      wire.Properties{DeliveryMode: wire.Persistent, Exchange: m.exchange.Name},
	})
	if err := m.tr.Publish(ctx, m.exchange, "", msg); err != nil {
		return fmt.Errorf("pidbox: send %s: %w", method, err)
	}
	return nil
}

// listen binds the reply queue, once; the transport hands every reply to
// the demultiplexer.
func (m *Mailbox) listen(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	if m.replySub != nil {
		return nil
	}
	b := transport.Binding{Exchange: m.replyEx, RoutingKey: m.oid, Queue: m.ReplyQueue()}
	sub, err := m.tr.Subscribe(ctx, b, func(msg []byte) { _ = m.demux.Dispatch(msg) }) // the demux logs drops
	if err != nil {
		return fmt.Errorf("pidbox: bind reply queue %s: %w", m.ReplyQueue(), err)
	}
	m.replySub = sub
	return nil
}

// Close unbinds and deletes the mailbox's reply queue. Calls in progress
// end; nodes made from the mailbox keep serving until their own context
// ends. The transport stays open.
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
