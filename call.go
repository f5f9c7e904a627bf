package pidbox

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gopidbox/pidbox/internal/demux"
	"github.com/gopidbox/pidbox/internal/wire"
	"github.com/gopidbox/pidbox/reply"
	"github.com/gopidbox/pidbox/transport"
)

// CallOption selects the nodes a command goes to and says when to stop
// gathering replies. An option that cannot be used fails the call with an
// error wrapping ErrBadCall before anything is sent.
type CallOption func(*callConfig) error

type callConfig struct {
	destination []string
	pattern     string
	matcher     string
	re          *regexp.Regexp
	limit       int
	timeout     time.Duration
}

// To sends the command to the named nodes only. Unless Limit says
// otherwise, gathering stops once every one of them has replied.
func To(nodes ...string) CallOption {
	return func(c *callConfig) error {
		c.destination = append(c.destination, nodes...)
		return nil
	}
}

// Glob sends the command to the nodes whose names match a shell pattern,
// with Python's fnmatch semantics (see Match).
func Glob(pattern string) CallOption { return matching(pattern, wire.MatchGlob) }

// PCRE sends the command to the nodes whose names match a regular
// expression anchored at the start, like Python's re.match (see Match).
func PCRE(pattern string) CallOption { return matching(pattern, wire.MatchPCRE) }

func matching(pattern, matcher string) CallOption {
	re, err := compilePattern(pattern, matcher)
	return func(c *callConfig) error {
		if err != nil {
			return err
		}
		c.pattern, c.matcher, c.re = pattern, matcher, re
		return nil
	}
}

// Limit stops gathering after n replies. By default a call stops when the
// nodes it addressed have all replied, or at its deadline.
func Limit(n int) CallOption {
	return func(c *callConfig) error {
		if n < 0 {
			return fmt.Errorf("negative limit %d", n)
		}
		c.limit = n
		return nil
	}
}

// Timeout bounds the whole call: publishing, and gathering every reply. It
// also becomes the request's expiry, after which nodes ignore it. Without
// it a call uses its context's deadline, or the mailbox's default timeout.
func Timeout(d time.Duration) CallOption {
	return func(c *callConfig) error {
		if d < 0 {
			return fmt.Errorf("negative timeout %s", d)
		}
		c.timeout = d
		return nil
	}
}

// resolve applies opts, once per call.
func resolve(opts []CallOption) (callConfig, error) {
	var cfg callConfig
	for _, o := range opts {
		if err := o(&cfg); err != nil {
			return cfg, fmt.Errorf("%w: %w", ErrBadCall, err)
		}
	}
	if len(cfg.destination) > 0 && cfg.matcher != "" {
		return cfg, fmt.Errorf("%w: a destination and a pattern cannot be combined", ErrBadCall)
	}
	return cfg, nil
}

// Outcome is what became of one node in a call.
type Outcome uint8

// Outcomes.
const (
	// NoReply: the node was expected, but did not reply before the call
	// ended.
	NoReply Outcome = iota
	// Replied: the node replied with a value.
	Replied
	// Failed: the node replied with an error (reply.Reply.Err).
	Failed
	// Unknown: the node was addressed by name, did not reply, and is not
	// bound to the broadcast exchange: no node of that name is listening.
	Unknown
)

// String returns "no reply", "replied", "failed" or "unknown".
func (o Outcome) String() string {
	switch o {
	case Replied:
		return "replied"
	case Failed:
		return "failed"
	case Unknown:
		return "unknown"
	default:
		return "no reply"
	}
}

// Result is what a call gathered.
type Result struct {
	// Replies in the order they arrived.
	Replies []reply.Reply
	// Outcomes holds the outcome of every node that was expected or that
	// replied.
	Outcomes map[string]Outcome
}

// Missing lists, sorted, the expected nodes that did not reply (NoReply
// or Unknown).
func (r *Result) Missing() []string { return missing(r.Outcomes) }

func missing(outcomes map[string]Outcome) []string {
	var out []string
	for n, o := range outcomes {
		if o == NoReply || o == Unknown {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out
}

// Call is a command that has been sent and whose replies are arriving: the
// handle Mailbox.Send returns. Range over Replies once, then read
// Outcomes. A call that is not ranged over ends at its deadline by itself;
// Close ends it earlier.
type Call struct {
	method   string
	ticket   string
	ctx      context.Context
	cancel   context.CancelFunc
	inbox    *demux.Inbox
	rules    demux.Rules
	expected []string
	limit    int
	m        *Mailbox
	byName   bool // expected names come from To, not from the broker
	started  atomic.Bool

	obs   CallObserver // nil unless Options.Observer watches this call
	start time.Time    // set when obs is
	ended atomic.Bool  // obs has heard End

	mu       sync.Mutex
	outcomes map[string]Outcome
	known    map[string]bool // bound nodes, once looked up
	lookup   *time.Timer

	stopAbandon func() bool
}

// Send sends a command that wants replies and returns its Call handle
// without waiting for any. ctx bounds the whole call, sending and
// gathering; so do the Timeout option or the mailbox's default timeout.
// Replies that arrive before Replies is ranged over are kept for it.
func (m *Mailbox) Send(ctx context.Context, method string, args any, opts ...CallOption) (*Call, error) {
	cfg, err := resolve(opts)
	if err != nil {
		return nil, err
	}
	ticket := wire.NewID()
	body, err := m.encodeRequest(method, args, cfg, ticket)
	if err != nil {
		return nil, err
	}
	ctx, cancel := m.deadline(ctx, cfg)
	var (
		obs   CallObserver
		extra []wire.Header
		start time.Time
	)
	if m.opts.Observer != nil {
		start = time.Now()
		ctx, obs, extra = m.startCall(ctx, method, ticket, cfg)
	}
	// A broadcast with no limit, which expects every live node, looks
	// them up in the round trip that binds the reply queue, when that is
	// the mailbox's first call. A call to named nodes does not: it looks
	// up only when a destination is late (see expect), and the lookup
	// made its first round trip slower (measured, docs/BENCHMARKS.md).
	lookup := len(cfg.destination) == 0 && cfg.limit == 0
	sub, listed, err := m.listen(ctx, lookup)
	if err != nil {
		if obs != nil {
			obs.End(CallEnd{Outcome: CallFailed, Expected: -1, Err: err})
		}
		cancel()
		return nil, err
	}
	c := &Call{
		method: method, ticket: ticket, ctx: ctx, cancel: cancel, m: m, limit: cfg.limit,
		inbox: m.demux.Wait(ticket), // before publishing: no reply missed
		obs:   obs, start: start,
	}
	// Later calls of the same kind list the live nodes in their publish's
	// round trip, where the transport can.
	var lp transport.ListingPublisher
	if lookup && listed == nil {
		lp, _ = m.tr.(transport.ListingPublisher)
	}
	if lp == nil {
		c.expect(cfg, listed)
	}
	// A call that is never ranged over nor closed ends at its deadline:
	// its inbox is freed and its observer told. Close stops this, so a
	// call that ends normally starts no goroutine for it.
	c.stopAbandon = context.AfterFunc(ctx, c.abandoned)
	expires, _ := ctx.Deadline()
	listedNow, err := m.publishListing(ctx, method, body, expires, extra, sub, lp)
	if err != nil {
		c.end(CallFailed, 0, err)
		c.Close()
		return nil, err
	}
	if lp != nil {
		c.expect(cfg, listedNow) // a failed listing is nil: expect looks up
	}
	return c, nil
}

// end tells the call's observer, once, how the call ended.
func (c *Call) end(o CallOutcome, replies int, err error) {
	if c.obs == nil || !c.ended.CompareAndSwap(false, true) {
		return
	}
	expected := -1
	if c.expected != nil {
		expected = len(c.expected)
	}
	c.obs.End(CallEnd{Outcome: o, Replies: replies, Expected: expected, Err: err})
}

// abandoned ends the observation of a call whose replies were never
// ranged over, when its context ends.
func (c *Call) abandoned() {
	c.inbox.Close()
	if c.started.Load() {
		return // Replies says how it ended
	}
	o := CallCancelled
	if errors.Is(c.ctx.Err(), context.DeadlineExceeded) {
		o = CallDeadline
	}
	c.end(o, 0, nil)
}

// outcome says why a gather that yielded n replies stopped by itself.
func (c *Call) outcome(n int) CallOutcome {
	c.mu.Lock()
	all := c.expected != nil
	for _, name := range c.expected {
		if o := c.outcomes[name]; o != Replied && o != Failed {
			all = false
			break
		}
	}
	c.mu.Unlock()
	switch err := c.ctx.Err(); {
	case all:
		return CallAllReplied
	case c.rules.Limit > 0 && n >= c.rules.Limit:
		return CallLimit
	case errors.Is(err, context.DeadlineExceeded):
		return CallDeadline
	case err != nil:
		return CallCancelled
	case c.rules.Quiet > 0:
		return CallQuiet
	}
	return CallAllReplied
}

// expect works out which nodes the call waits for: the destinations, or
// for a broadcast with no limit the live nodes it addresses. listed, when
// not nil, are the broadcast exchange's bindings, just looked up (for a
// broadcast with no limit).
func (c *Call) expect(cfg callConfig, listed []transport.Binding) {
	c.rules.Limit = cfg.limit
	switch {
	case len(cfg.destination) > 0:
		c.expected = cfg.destination // the call's own copy, made by To
		if len(c.expected) > 1 {
			slices.Sort(c.expected)
			c.expected = slices.Compact(c.expected)
		}
		c.byName = true
		if c.rules.Limit == 0 {
			c.rules.Limit = len(cfg.destination)
		}
		// A destination that has not replied halfway to the deadline may
		// not exist: look the live nodes up then, so that the outcome can
		// say so without an extra round trip on calls that go well.
		if dl, ok := c.ctx.Deadline(); ok {
			c.lookup = time.AfterFunc(time.Until(dl)/2, c.lookupKnown)
		}
	case cfg.limit > 0:
	default:
		var names []string
		var err error
		if listed != nil {
			names = c.m.nodeNames(listed)
		} else {
			names, err = c.m.Nodes(c.ctx)
		}
		if errors.Is(err, transport.ErrUnsupported) || (err == nil && len(names) == 0) {
			// The broker cannot say who listens, or says nobody does,
			// which it also says when it lost its bindings (a flush, an
			// eviction): gather until a quiet gap after the last reply.
			c.rules.Quiet = c.m.opts.QuietGap
			return
		}
		if err != nil {
			c.m.opts.Logger.Warn("pidbox: cannot list nodes; gathering until the deadline", "err", err)
			return
		}
		c.known = make(map[string]bool, len(names))
		for _, n := range names {
			c.known[n] = true
		}
		c.expected = names[:0]
		for _, n := range names {
			if cfg.re == nil || cfg.re.MatchString(n) {
				c.expected = append(c.expected, n)
			}
		}
	}
	c.rules.Expect = c.expected
	if c.expected != nil {
		c.outcomes = make(map[string]Outcome, len(c.expected))
		for _, n := range c.expected {
			c.outcomes[n] = NoReply
		}
	}
}

func (c *Call) lookupKnown() {
	bs, err := c.m.tr.Bindings(c.ctx, c.m.exchange)
	if err != nil {
		return
	}
	known := c.m.knownNames(bs)
	c.mu.Lock()
	c.known = known
	c.mu.Unlock()
}

// knownNames is the set of the nodes whose queues bs bind.
func (m *Mailbox) knownNames(bs []transport.Binding) map[string]bool {
	names := m.nodeNames(bs)
	known := make(map[string]bool, len(names))
	for _, n := range names {
		known[n] = true
	}
	return known
}

// Ticket returns the call's ticket, which its replies carry.
func (c *Call) Ticket() string { return c.ticket }

// Expected returns the nodes the call waits for, sorted when they were
// named: the destinations, or for a broadcast with no limit the live nodes
// it addresses. Nil means the call cannot know and gathers until its
// limit or deadline.
func (c *Call) Expected() []string { return c.expected }

// Deadline returns when the call ends at the latest.
func (c *Call) Deadline() time.Time {
	dl, _ := c.ctx.Deadline()
	return dl
}

// Replies yields each reply as it arrives, until the addressed nodes have
// all replied, the limit is reached, or the deadline passes; breaking out
// of the loop ends the call early. It can be ranged over once.
//
// An error is yielded once, as the last element: the mailbox was closed,
// ctx was cancelled, or the deadline passed with expected nodes missing
// (wrapping ErrIncomplete).
func (c *Call) Replies() iter.Seq2[reply.Reply, error] {
	return func(yield func(reply.Reply, error) bool) {
		if !c.started.CompareAndSwap(false, true) {
			yield(reply.Reply{}, fmt.Errorf("%w: the replies of a call can be ranged over once", ErrBadCall))
			return
		}
		defer c.Close()
		n := 0
		for r, err := range demux.Collect(c.ctx, c.inbox, c.rules) {
			if err != nil {
				err = fmt.Errorf("pidbox: %s: %w", c.method, err)
				if c.obs != nil {
					o := CallFailed
					if errors.Is(err, context.Canceled) {
						o = CallCancelled
					}
					c.end(o, n, err)
				}
				yield(reply.Reply{}, err)
				return
			}
			n++
			c.record(r)
			if c.obs != nil {
				c.obs.Reply(r.Node, time.Since(c.start), r.Err)
			}
			if !yield(r, nil) {
				c.end(CallCancelled, n, nil)
				return
			}
		}
		var err error
		if errors.Is(c.ctx.Err(), context.DeadlineExceeded) && (c.limit == 0 || n < c.limit) {
			err = c.incomplete()
		}
		if c.obs != nil {
			c.end(c.outcome(n), n, err)
		}
		if err != nil {
			yield(reply.Reply{}, err)
		}
	}
}

func (c *Call) record(r reply.Reply) {
	o := Replied
	if r.Err != nil {
		o = Failed
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.outcomes == nil {
		c.outcomes = map[string]Outcome{}
	}
	if prev, ok := c.outcomes[r.Node]; !ok || prev == NoReply || prev == Unknown {
		c.outcomes[r.Node] = o
	}
}

// incomplete classifies the expected nodes that did not reply and returns
// an error wrapping ErrIncomplete, or nil when none is missing.
func (c *Call) incomplete() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	var noReply, unknown []string
	for _, n := range c.expected {
		if c.outcomes[n] != NoReply {
			continue
		}
		if c.byName && c.known != nil && !c.known[n] {
			c.outcomes[n] = Unknown
			unknown = append(unknown, n)
		} else {
			noReply = append(noReply, n)
		}
	}
	if len(noReply)+len(unknown) == 0 {
		return nil
	}
	msg := fmt.Sprintf("%d of %d expected nodes missing at the deadline", len(noReply)+len(unknown), len(c.expected))
	if len(noReply) > 0 {
		msg += "; no reply: " + names(noReply)
	}
	if len(unknown) > 0 {
		msg += "; not known to the broker: " + names(unknown)
	}
	return fmt.Errorf("pidbox: %s: %w: %s", c.method, ErrIncomplete, msg)
}

// names lists a few names for an error text.
func names(ns []string) string {
	const most = 5
	if len(ns) <= most {
		return strings.Join(ns, ", ")
	}
	return fmt.Sprintf("%s and %d more", strings.Join(ns[:most], ", "), len(ns)-most)
}

// Outcomes returns the outcome of every node that was expected or that
// replied so far. Read it once Replies has ended.
func (c *Call) Outcomes() map[string]Outcome {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]Outcome, len(c.outcomes))
	for n, o := range c.outcomes {
		out[n] = o
	}
	return out
}

// takeOutcomes hands the outcomes over without a copy, once Replies has
// ended and nothing writes them any more; for Mailbox.Call.
func (c *Call) takeOutcomes() map[string]Outcome {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.outcomes == nil {
		return map[string]Outcome{}
	}
	return c.outcomes
}

// Close ends the call: replies that arrive later are kept as late replies
// for a while, then dropped. It is safe to call more than once.
func (c *Call) Close() {
	c.end(CallCancelled, 0, nil) // when nothing said otherwise before
	if c.stopAbandon != nil {
		c.stopAbandon()
	}
	if c.lookup != nil {
		c.lookup.Stop()
	}
	c.inbox.Close()
	c.cancel()
}
