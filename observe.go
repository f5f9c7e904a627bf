package pidbox

import (
	"context"
	"time"

	"github.com/gopidbox/pidbox/internal/wire"
)

// Observer watches calls and commands: the hook for tracing and metrics.
// Package otel implements it with OpenTelemetry; the core knows nothing of
// it. Options.Observer nil means nothing is observed and nothing is spent:
// no call, no allocation.
//
// Its methods run on the hot paths of callers and node readers,
// concurrently: they must be safe for concurrent use and must not block.
type Observer interface {
	// StartCall is called once per Send, Call or Cast, before the node
	// list is looked up and the command published. It returns the context
	// the call goes on with and the observer of this call, or nil to
	// observe no more of it.
	StartCall(ctx context.Context, info CallInfo) (context.Context, CallObserver)
	// StartCommand is called when a node starts a registered handler for
	// a command addressed to it, h holding the command's extra headers.
	// The context it returns is the handler's; the CommandObserver, if
	// not nil, hears when the handler is done.
	StartCommand(ctx context.Context, info CommandInfo, h Headers) (context.Context, CommandObserver)
	// Event counts what happened beside calls and commands: messages a
	// node skipped, backlog waits and refusals, replies a mailbox
	// discarded, headers ignored.
	Event(ctx context.Context, e Event)
}

// CallInfo describes a call as it starts.
type CallInfo struct {
	// Exchange is the broadcast exchange, "<namespace>.pidbox".
	Exchange string
	// Method is the command.
	Method string
	// Ticket identifies the call and its replies; empty for a cast.
	Ticket string
	// Limit is the Limit option, 0 when none.
	Limit int
	// Timeout is how long the call may take, from now to its deadline.
	Timeout time.Duration
}

// CallObserver watches one call.
type CallObserver interface {
	// Inject is called once, right after StartCall: what it sets on h
	// travels with the command (trace context).
	Inject(h Headers)
	// Reply is called for every reply the call gathers, latency counted
	// from the call's start; err is the reply's error (a
	// *reply.RemoteError), nil for a value.
	Reply(node string, latency time.Duration, err error)
	// End is called once, when the call is over.
	End(e CallEnd)
}

// CallEnd is how a call ended.
type CallEnd struct {
	// Outcome is why gathering stopped.
	Outcome CallOutcome
	// Replies counts the replies gathered.
	Replies int
	// Expected counts the nodes the call waited for; -1 when it could not
	// know them.
	Expected int
	// Err is the error the call returned or yielded, if any.
	Err error
}

// CallOutcome is why a call stopped gathering replies.
type CallOutcome uint8

// Call outcomes.
const (
	// CallAllReplied: every expected node replied.
	CallAllReplied CallOutcome = iota
	// CallLimit: the Limit was reached.
	CallLimit
	// CallDeadline: the deadline passed first.
	CallDeadline
	// CallQuiet: a broadcast whose nodes cannot be known went quiet.
	CallQuiet
	// CallCancelled: the context was cancelled, the caller stopped
	// ranging over the replies, or the call was closed.
	CallCancelled
	// CallFailed: the command could not be sent, or the mailbox closed.
	CallFailed
	// CallSent: a cast, which wants no reply, was sent.
	CallSent
)

// String returns the outcome as a metric attribute value: "all_replied",
// "limit", "deadline", "quiet", "cancelled", "failed" or "sent".
func (o CallOutcome) String() string {
	switch o {
	case CallAllReplied:
		return "all_replied"
	case CallLimit:
		return "limit"
	case CallDeadline:
		return "deadline"
	case CallQuiet:
		return "quiet"
	case CallCancelled:
		return "cancelled"
	case CallFailed:
		return "failed"
	default:
		return "sent"
	}
}

// CommandInfo describes a command a node starts handling.
type CommandInfo struct {
	// Node is the node's hostname.
	Node string
	// Exchange is the broadcast exchange the command came on.
	Exchange string
	// Method is the command, registered on the node.
	Method string
	// Ticket identifies the call; empty for a cast.
	Ticket string
}

// CommandObserver watches one handled command.
type CommandObserver interface {
	// End is called once the handler is done (or has overrun its
	// deadline), with its error.
	End(err error)
}

// EventKind says what an Event counts.
type EventKind uint8

// Event kinds.
const (
	// EventSkipped: a node did not handle a message; Reason says why.
	EventSkipped EventKind = iota + 1
	// EventBacklogWait: a command waits for a free slot of its handler.
	EventBacklogWait
	// EventBacklogRefused: a command was refused, its handler's backlog
	// full.
	EventBacklogRefused
	// EventReplyDiscarded: a mailbox discarded a reply; Reason says why.
	EventReplyDiscarded
	// EventHeadersIgnored: extra headers of a message were ignored as
	// not strings, out of bounds or too many; Count says how many.
	EventHeadersIgnored
)

// Reasons of skipped messages and discarded replies.
const (
	ReasonNotAddressed   = "not_addressed"   // the command names other nodes
	ReasonExpired        = "expired"         // past its expiry (on arrival or waiting for a slot)
	ReasonUnknownCommand = "unknown_command" // no handler: the caller gets an error reply
	ReasonUndecodable    = "undecodable"     // malformed, unaccepted, badly sealed or misaddressed
	ReasonUnclaimed      = "unclaimed"       // a late reply no call took before it was evicted
	ReasonOverflow       = "overflow"        // its call was not reading its replies
)

// Event is something counted beside calls and commands.
type Event struct {
	Kind EventKind
	// Node is the node's hostname, on node events.
	Node string
	// Method is the command, when it is known: any string a message
	// carried, so bound it before using it as a metric attribute.
	Method string
	// Reason is one of the Reason constants, for EventSkipped and
	// EventReplyDiscarded.
	Reason string
	// Count is how many, for EventHeadersIgnored; 1 otherwise.
	Count int
}

// Headers are one message's extra headers, beside Kombu's clock, expires
// and ticket: trace context, for instance. Kombu ignores them. Set keeps
// at most 8 of them, keys up to 64 and values up to 2,048 bytes of
// printable ASCII, and never the keys clock, expires, ticket or
// compression (which Kombu would act on). Get, Set and Keys make Headers
// an OpenTelemetry propagation.TextMapCarrier.
type Headers struct{ h *wire.Headers }

// Get returns the value of key, or "".
func (h Headers) Get(key string) string {
	if h.h == nil {
		return ""
	}
	return h.h.Get(key)
}

// Set sets key to value; it does nothing when the header cannot travel.
func (h Headers) Set(key, value string) {
	if h.h != nil {
		h.h.Set(key, value)
	}
}

// Keys lists the keys set.
func (h Headers) Keys() []string {
	if h.h == nil {
		return nil
	}
	return h.h.Keys()
}
