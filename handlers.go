package pidbox

import (
	"context"
	"fmt"
	"os"
	"sort"
	"time"

	"github.com/gopidbox/pidbox/internal/wire"
	"github.com/gopidbox/pidbox/reply"
)

// Handler serves one named command on a node. It returns the reply value,
// which the node serializes (a struct, a map, a string...), or an error,
// which the caller receives as {"error": err.Error()}. Returning
// ErrNoReply sends nothing back.
//
// ctx is cancelled when the request expires, when the handler overruns the
// node's HandlerTimeout, or when the node shuts down and its ShutdownGrace
// has run out.
type Handler interface {
	Handle(ctx context.Context, req *Request) (any, error)
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, req *Request) (any, error)

// Handle calls f.
func (f HandlerFunc) Handle(ctx context.Context, req *Request) (any, error) { return f(ctx, req) }

// Request is a command as its handler sees it.
type Request struct {
	// Method is the command's name.
	Method string
	// Arguments are the keyword arguments, still serialized; see Decode.
	Arguments reply.Raw
	// Ticket identifies the call; empty for a cast, which wants no reply.
	Ticket string
	// Clock is the sender's Lamport time.
	Clock uint64
	// Expires is when the sender stops waiting; zero when the request
	// never expires.
	Expires time.Time
	// Signer is the verified signer of a signed request; empty when the
	// mailbox has no Sealer or the Sealer let an unsigned request through.
	Signer string
	// Node is the node serving the request.
	Node *Node

	codec wire.Codec
}

// Decode parses the keyword arguments into v, a pointer to a struct or a
// map; struct fields are matched by their json tags. Unknown arguments are
// ignored, as Celery's **kwargs would take them. A mismatch gives an error
// wrapping ErrBadArguments. Numbers decoded into any (a map[string]any, an
// any field) keep Python's types: int64, uint64 above math.MaxInt64,
// json.Number beyond 64 bits, float64 for 3.0 and 1.5.
func (r *Request) Decode(v any) error {
	if len(r.Arguments) == 0 {
		return nil
	}
	if err := r.codec.Unmarshal(r.Arguments, v); err != nil {
		return fmt.Errorf("%w for %s: %v", ErrBadArguments, r.Method, err)
	}
	return nil
}

type requestKey struct{}

// RequestFrom returns the request a handler's context belongs to, for
// typed handlers that need the node or the ticket.
func RequestFrom(ctx context.Context) (*Request, bool) {
	r, ok := ctx.Value(requestKey{}).(*Request)
	return r, ok
}

// Typed adapts a function taking decoded arguments and returning a Go value
// to Handler. The arguments are decoded into a new A (by json tags, from
// json or msgpack); arguments that do not fit give the caller an error
// reply wrapping ErrBadArguments, and fn is not called.
//
//	node.Register("set_level", pidbox.Typed(func(ctx context.Context, a SetLevel) (Ack, error) {
//		...
//	}))
func Typed[A, R any](fn func(ctx context.Context, args A) (R, error)) Handler {
	return HandlerFunc(func(ctx context.Context, req *Request) (any, error) {
		var args A
		if err := req.Decode(&args); err != nil {
			return nil, err
		}
		return fn(ctx, args)
	})
}

// OK is Celery's success reply shape, {"ok": text}.
type OK struct {
	OK string `json:"ok"`
}

// ClockReply is the reply of the clock command.
type ClockReply struct {
	Clock uint64 `json:"clock"`
}

// HelloArgs are the arguments of the hello command, which Celery workers
// send to each other when they start.
type HelloArgs struct {
	FromNode string `json:"from_node"`
	Revoked  any    `json:"revoked,omitempty"`
}

// HelloReply is the reply of the hello command.
type HelloReply struct {
	Revoked map[string]any `json:"revoked"`
	Clock   uint64         `json:"clock"`
}

// NodeStats is the reply of the stats command: what a node has done since
// it started.
type NodeStats struct {
	Hostname   string   `json:"hostname"`
	PID        int      `json:"pid"`
	Uptime     float64  `json:"uptime"`
	Clock      uint64   `json:"clock"`
	Registered []string `json:"registered"`
	// Handlers holds the counts of every handler that has run.
	Handlers map[string]HandlerStats `json:"handlers"`
	// Received counts messages taken from the node's queue.
	Received uint64 `json:"received"`
	// Dropped counts messages that could not be decoded or used.
	Dropped uint64 `json:"dropped"`
	// Expired counts requests that arrived past their expiry.
	Expired uint64 `json:"expired"`
	// Rejected counts requests refused because their handler was at its
	// concurrency limit.
	Rejected uint64 `json:"rejected"`
	// Refused counts requests that NodeOptions.Authorize refused.
	Refused uint64 `json:"refused"`
	// IgnoredHeaders counts extra message headers ignored as not strings,
	// out of bounds or too many (hostile trace context, say).
	IgnoredHeaders uint64 `json:"ignored_headers"`
}

// HandlerStats counts the calls of one method, across replacements of
// its handler: NATS micro's per-endpoint stats, kept with atomics.
type HandlerStats struct {
	// Calls counts the handler's runs; Errors those that returned an
	// error (ErrNoReply is none).
	Calls  uint64 `json:"calls"`
	Errors uint64 `json:"errors"`
	// Running and Waiting are the calls running now and those waiting
	// for a free slot.
	Running int `json:"running"`
	Waiting int `json:"waiting"`
	// TotalSeconds, AverageSeconds and MaxSeconds are processing times.
	TotalSeconds   float64 `json:"total_seconds"`
	AverageSeconds float64 `json:"average_seconds"`
	MaxSeconds     float64 `json:"max_seconds"`
	// LastError is the latest error's text (at most 512 bytes), and
	// LastErrorAt when it happened (RFC 3339, UTC); empty when none.
	LastError   string `json:"last_error,omitempty"`
	LastErrorAt string `json:"last_error_at,omitempty"`
}

type builtin struct {
	h Handler
	// inline handlers never block, so the node runs them on its reader
	// rather than in a goroutine of their own.
	inline bool
}

// builtins returns the commands every node starts with. Register replaces
// them and Unregister removes them.
func builtins() map[string]builtin {
	return map[string]builtin{
		"ping": {inline: true, h: HandlerFunc(func(context.Context, *Request) (any, error) {
			return OK{OK: "pong"}, nil
		})},
		"clock": {inline: true, h: HandlerFunc(func(_ context.Context, r *Request) (any, error) {
			return ClockReply{Clock: r.Node.mb.opts.Clock.Value()}, nil
		})},
		"hello": {inline: true, h: HandlerFunc(func(_ context.Context, r *Request) (any, error) {
			var a HelloArgs
			if err := r.Decode(&a); err != nil {
				return nil, err
			}
			if a.FromNode == r.Node.hostname {
				return nil, ErrNoReply // no reply to itself, as Celery
			}
			return HelloReply{Revoked: map[string]any{}, Clock: r.Node.mb.opts.Clock.Forward()}, nil
		})},
		"stats": {h: HandlerFunc(func(_ context.Context, r *Request) (any, error) {
			return r.Node.Stats(), nil
		})},
		// pidbox_stats stays when a Celery-shaped stats replaces stats
		// (package celery), so one broadcast still gathers the
		// per-command counts of a whole fleet.
		"pidbox_stats": {h: HandlerFunc(func(_ context.Context, r *Request) (any, error) {
			return r.Node.Stats(), nil
		})},
		"shutdown": {h: HandlerFunc(func(_ context.Context, r *Request) (any, error) {
			r.Node.log.Warn("pidbox: shutdown requested by a remote command", "node", r.Node.hostname)
			r.Node.Shutdown()
			return nil, ErrNoReply // Celery's shutdown does not reply
		})},
	}
}

// Stats reports what the node has done since it was made.
func (n *Node) Stats() NodeStats {
	n.mu.RLock()
	defer n.mu.RUnlock()
	s := NodeStats{
		Hostname:   n.hostname,
		PID:        os.Getpid(),
		Uptime:     time.Since(n.created).Seconds(),
		Clock:      n.mb.opts.Clock.Value(),
		Registered: make([]string, 0, len(n.handlers)),
		Handlers:   make(map[string]HandlerStats, len(n.handlers)),
		Received:   n.received.Load(),
		Dropped:    n.dropped.Load(),
		Expired:    n.expired.Load(),
		Rejected:   n.rejected.Load(),
		Refused:    n.refused.Load(),

		IgnoredHeaders: n.ignoredHeaders.Load(),
	}
	for name, e := range n.handlers {
		s.Registered = append(s.Registered, name)
		if st := e.stats(); st.Calls > 0 || st.Running > 0 || st.Waiting > 0 {
			s.Handlers[name] = st
		}
	}
	sort.Strings(s.Registered)
	return s
}
