package demux

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/gopidbox/pidbox/clock"
	"github.com/gopidbox/pidbox/internal/ratelog"
	"github.com/gopidbox/pidbox/internal/wire"
	"github.com/gopidbox/pidbox/reply"
)

// Defaults for Options.
const (
	DefaultMaxUnclaimed = 1000
	DefaultUnclaimedAge = time.Minute
	DefaultMaxPending   = 100_000
)

// ErrClosed is returned by inboxes of a closed Demux.
var ErrClosed = errors.New("pidbox: mailbox closed")

// Options configure a Demux. The zero value works.
type Options struct {
	// Open checks an envelope's content type (and signature, where
	// replies are signed) and returns the codec and the body to decode.
	// Nil means wire.Open with json and msgpack accepted.
	Open func(env *wire.Envelope) (c wire.Codec, body []byte, signer string, err error)
	// VerifyNode, when set, checks that a reply's signer may speak for the
	// node the reply names.
	VerifyNode func(signer, node string) error
	// MaxSize refuses reply envelopes above this many bytes; 0 means no
	// limit.
	MaxSize int
	// Clock is adjusted by the clock header of every reply. Nil means a
	// private clock.
	Clock *clock.Lamport
	// Logger receives a rate-limited line for replies dropped. Nil means
	// slog.Default().
	Logger *slog.Logger
	// MaxUnclaimed bounds the replies kept for tickets nobody waits for.
	MaxUnclaimed int
	// UnclaimedAge is how long such replies are kept.
	UnclaimedAge time.Duration
	// MaxPending bounds the replies queued for one waiting call that its
	// reader has not taken yet.
	MaxPending int
	// Now returns the current time; nil means time.Now. For tests.
	Now func() time.Time
	// Discarded, when set, hears of every reply dropped, with a reason:
	// "expired", "unclaimed" (evicted from the unclaimed store, or after
	// Close), "undecodable" (malformed, refused) or "overflow" (its call
	// was not reading). It is called without the Demux's lock held.
	Discarded func(reason string, n int)
}

// errExpired marks a reply that arrived past its expiry.
var errExpired = errors.New("reply expired")

// Demux routes the replies read from a reply queue to the calls waiting
// for them. It is safe for concurrent use.
type Demux struct {
	opts Options
	log  *ratelog.Logger
	done chan struct{} // closed by Close

	mu        sync.Mutex
	closed    bool
	waiting   map[string]*Inbox
	unclaimed map[string][]reply.Reply
	order     []kept // unclaimed tickets, oldest first
	kept      int    // replies in unclaimed
	stats     Stats
}

type kept struct {
	ticket string
	at     time.Time
}

// Stats counts what a Demux did with the replies it saw.
type Stats struct {
	// Delivered replies went to a waiting call.
	Delivered uint64
	// Kept replies went to the unclaimed store.
	Kept uint64
	// Evicted replies left the unclaimed store unclaimed.
	Evicted uint64
	// Dropped replies were malformed, expired, or overflowed a call.
	Dropped uint64
}

// New returns a Demux with no waiting calls.
func New(opts Options) *Demux {
	if opts.Open == nil {
		accept := []string{"json", "msgpack"}
		opts.Open = func(env *wire.Envelope) (wire.Codec, []byte, string, error) {
			c, err := wire.CodecFor(env.ContentType, accept)
			return c, env.Body, "", err
		}
	}
	if opts.Clock == nil {
		opts.Clock = &clock.Lamport{}
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.MaxUnclaimed <= 0 {
		opts.MaxUnclaimed = DefaultMaxUnclaimed
	}
	if opts.UnclaimedAge <= 0 {
		opts.UnclaimedAge = DefaultUnclaimedAge
	}
	if opts.MaxPending <= 0 {
		opts.MaxPending = DefaultMaxPending
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Demux{opts: opts, log: ratelog.New(opts.Logger), done: make(chan struct{}), waiting: map[string]*Inbox{}, unclaimed: map[string][]reply.Reply{}}
}

// Stats returns the counters so far.
func (d *Demux) Stats() Stats {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.stats
}

// Dispatch decodes one message from the reply queue and routes it. A
// message that cannot be routed is dropped with a rate-limited log line,
// and the error says why.
func (d *Demux) Dispatch(msg []byte) error {
	r, ticket, err := d.decode(msg)
	if err != nil {
		d.mu.Lock()
		d.stats.Dropped++
		d.mu.Unlock()
		d.log.Warn("pidbox: reply dropped", "err", err)
		if d.opts.Discarded != nil {
			reason := "undecodable"
			if errors.Is(err, errExpired) {
				reason = "expired"
			}
			d.opts.Discarded(reason, 1)
		}
		return err
	}
	reason, n := d.route(ticket, r)
	if n > 0 && d.opts.Discarded != nil {
		d.opts.Discarded(reason, n)
	}
	return nil
}

func (d *Demux) decode(msg []byte) (reply.Reply, string, error) {
	env, err := wire.Decode(msg, d.opts.MaxSize)
	if err != nil {
		return reply.Reply{}, "", err
	}
	d.opts.Clock.Adjust(env.Headers.Clock)
	if env.Headers.Ticket == "" {
		return reply.Reply{}, "", fmt.Errorf("%w: reply has no ticket header", wire.ErrMalformed)
	}
	if env.Headers.Expired(d.opts.Now()) {
		return reply.Reply{}, "", fmt.Errorf("%w: ticket %s", errExpired, env.Headers.Ticket)
	}
	c, body, signer, err := d.opts.Open(env)
	if err != nil {
		return reply.Reply{}, "", err
	}
	node, value, err := wire.DecodeReply(c, body)
	if err != nil {
		return reply.Reply{}, "", err
	}
	if d.opts.VerifyNode != nil {
		if err := d.opts.VerifyNode(signer, node); err != nil {
			return reply.Reply{}, "", err
		}
	}
	r := reply.Reply{Node: node, Value: reply.Raw(value), ContentType: c.ContentType(), Clock: env.Headers.Clock, Signer: signer}
	if text, ok := wire.ReplyError(c, value); ok {
		r.Err = &reply.RemoteError{Node: node, Message: text}
	}
	return r, env.Headers.Ticket, nil
}

// route delivers or keeps r, and says how many replies it dropped and why.
func (d *Demux) route(ticket string, r reply.Reply) (reason string, dropped int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		d.stats.Dropped++
		return "unclaimed", 1
	}
	if in := d.waiting[ticket]; in != nil {
		if in.put(r, d.opts.MaxPending) {
			d.stats.Delivered++
			return "", 0
		}
		d.stats.Dropped++
		d.log.Warn("pidbox: reply dropped: the call is not reading its replies", "ticket", ticket, "node", r.Node, "pending", d.opts.MaxPending)
		return "overflow", 1
	}
	evicted := d.stats.Evicted
	d.expireLocked()
	for d.kept >= d.opts.MaxUnclaimed && len(d.order) > 0 {
		d.evictLocked()
	}
	if _, ok := d.unclaimed[ticket]; !ok {
		d.order = append(d.order, kept{ticket: ticket, at: d.opts.Now()})
	}
	d.unclaimed[ticket] = append(d.unclaimed[ticket], r)
	d.kept++
	d.stats.Kept++
	return "unclaimed", int(d.stats.Evicted - evicted)
}

func (d *Demux) expireLocked() {
	cutoff := d.opts.Now().Add(-d.opts.UnclaimedAge)
	for len(d.order) > 0 && d.order[0].at.Before(cutoff) {
		d.evictLocked()
	}
}

// evictLocked drops the oldest unclaimed ticket.
func (d *Demux) evictLocked() {
	t := d.order[0].ticket
	d.order[0] = kept{}
	d.order = d.order[1:]
	n := len(d.unclaimed[t])
	delete(d.unclaimed, t)
	d.kept -= n
	d.stats.Evicted += uint64(n)
}

// Unclaimed returns the number of replies kept for tickets nobody waits
// for.
func (d *Demux) Unclaimed() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.expireLocked()
	return d.kept
}

// Wait registers a call waiting for ticket and returns its inbox, holding
// any replies already kept for that ticket. Register before publishing the
// request, so that no reply is missed. Close the inbox when done.
func (d *Demux) Wait(ticket string) *Inbox {
	in := &Inbox{d: d, ticket: ticket, signal: make(chan struct{}, 1)}
	d.mu.Lock()
	defer d.mu.Unlock()
	if rs, ok := d.unclaimed[ticket]; ok {
		in.items = rs
		d.kept -= len(rs)
		delete(d.unclaimed, ticket)
		for i, k := range d.order {
			if k.ticket == ticket {
				d.order = append(d.order[:i], d.order[i+1:]...)
				break
			}
		}
		in.wake()
	}
	d.waiting[ticket] = in
	return in
}

// Close ends every waiting call with ErrClosed. Later replies are dropped.
func (d *Demux) Close() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.closed {
		d.closed = true
		close(d.done)
	}
}

// Inbox holds the replies routed to one waiting call.
type Inbox struct {
	d      *Demux
	ticket string
	signal chan struct{}
	items  []reply.Reply // guarded by d.mu
	head   int
}

func (in *Inbox) wake() {
	select {
	case in.signal <- struct{}{}:
	default:
	}
}

// put queues r; the caller holds d.mu. It reports false when the inbox is
// full.
func (in *Inbox) put(r reply.Reply, limit int) bool {
	if len(in.items)-in.head >= limit {
		return false
	}
	in.items = append(in.items, r)
	in.wake()
	return true
}

// Next returns the next reply, waiting until one arrives or ctx is done.
func (in *Inbox) Next(ctx context.Context) (reply.Reply, error) {
	for {
		in.d.mu.Lock()
		if in.head < len(in.items) {
			r := in.items[in.head]
			in.items[in.head] = reply.Reply{}
			in.head++
			if in.head == len(in.items) {
				in.items, in.head = in.items[:0], 0
			}
			in.d.mu.Unlock()
			return r, nil
		}
		in.d.mu.Unlock()
		select {
		case <-in.signal:
		case <-in.d.done:
			return reply.Reply{}, ErrClosed
		case <-ctx.Done():
			return reply.Reply{}, ctx.Err()
		}
	}
}

// Close stops routing replies to the inbox. Later replies for its ticket
// are kept as unclaimed.
func (in *Inbox) Close() {
	in.d.mu.Lock()
	defer in.d.mu.Unlock()
	if in.d.waiting[in.ticket] == in {
		delete(in.d.waiting, in.ticket)
	}
}
