package security

import (
	"crypto/sha256"
	"fmt"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/gopidbox/pidbox"
)

// Defaults for ReplayGuard.
const (
	DefaultMaxAhead      = time.Minute
	DefaultReplayEntries = 100_000
	// clockSkew is the allowance for a sender's clock running ahead.
	clockSkew = 5 * time.Second
)

// ReplayGuard refuses signed commands that could be replays: a command
// without an expiry, one whose expiry is further ahead than MaxAhead, and
// a repeat of a command it has already let through. It is meant for a
// node's Authorize (see Policy), where it sees the verified request.
//
// What it can and cannot stop. Celery's signature covers the message body
// only: method, arguments, destination, ticket, reply route. The
// envelope's expiry is not signed. So the guard remembers every signed
// command it lets through for MaxAhead after it arrives, whatever expiry
// it claims, and refuses repeats within that window: a call by its
// ticket, a cast (which has no ticket) by its method and arguments, so
// that an identical cast repeated within the window is dropped too. A
// command captured and replayed after the window, with a fresh expiry
// written into the envelope, cannot be told from a new one, unless its
// ticket carries a signed time: a ticket that is a version-7 UUID (a
// timestamp in its first 48 bits) must be no older than MaxAhead, which
// closes the window for senders that make such tickets. Celery's tickets
// are version 4 (random), and get the window only.
//
// Memory is bounded: at most MaxEntries commands are remembered (about
// 120 bytes each, 12 MB at the default bound, measured); when full, new
// signed commands are refused until the oldest are forgotten, so a flood
// cannot open a gap for replays. Only signed commands count, and only
// trusted signers can make those.
type ReplayGuard struct {
	maxAhead   time.Duration
	maxEntries int
	now        func() time.Time

	mu   sync.Mutex
	seen map[[32]byte]struct{}
	fifo []seenEntry // in arrival order, which is forgetting order
	head int
}

type seenEntry struct {
	key   [32]byte
	until time.Time
}

// ReplayOptions configure a ReplayGuard. The zero value uses the defaults.
type ReplayOptions struct {
	// MaxAhead is the furthest ahead a command's expiry may be, and how
	// long a command is remembered. Default 1 minute.
	MaxAhead time.Duration
	// MaxEntries bounds the commands remembered. Default 100,000.
	MaxEntries int
}

// NewReplayGuard returns a guard.
func NewReplayGuard(o ReplayOptions) *ReplayGuard {
	if o.MaxAhead <= 0 {
		o.MaxAhead = DefaultMaxAhead
	}
	if o.MaxEntries <= 0 {
		o.MaxEntries = DefaultReplayEntries
	}
	return &ReplayGuard{maxAhead: o.MaxAhead, maxEntries: o.MaxEntries, now: time.Now, seen: map[[32]byte]struct{}{}}
}

// Check refuses, with an error wrapping ErrReplay, a signed request that
// has no expiry, expires too far ahead, carries a stale version-7 ticket,
// or repeats one seen within MaxAhead. Unsigned requests pass: refusing
// them is RequireSigned's job.
func (g *ReplayGuard) Check(req *pidbox.Request) error {
	if req.Signer == "" {
		return nil
	}
	now := g.now()
	if req.Expires.IsZero() {
		return fmt.Errorf("%w: signed %s has no expiry", ErrReplay, req.Method)
	}
	if ahead := req.Expires.Sub(now); ahead > g.maxAhead+clockSkew {
		return fmt.Errorf("%w: signed %s expires in %s, beyond the %s allowed", ErrReplay, req.Method, ahead.Round(time.Second), g.maxAhead)
	}
	if req.Ticket != "" {
		if u, err := uuid.Parse(req.Ticket); err == nil && u.Version() == 7 {
			sec, nsec := u.Time().UnixTime()
			at := time.Unix(sec, nsec)
			if now.Sub(at) > g.maxAhead+clockSkew || at.Sub(now) > clockSkew {
				return fmt.Errorf("%w: signed %s has a ticket made at %s", ErrReplay, req.Method, at.UTC().Format(time.RFC3339))
			}
		}
	}
	key := replayKey(req)
	g.mu.Lock()
	defer g.mu.Unlock()
	g.forget(now)
	if _, dup := g.seen[key]; dup {
		return fmt.Errorf("%w: signed %s (ticket %q) was already served", ErrReplay, req.Method, req.Ticket)
	}
	if len(g.seen) >= g.maxEntries {
		return fmt.Errorf("%w: %d signed commands in the last %s, the most remembered; refusing more", ErrReplay, g.maxEntries, g.maxAhead)
	}
	g.seen[key] = struct{}{}
	g.fifo = append(g.fifo, seenEntry{key: key, until: now.Add(g.maxAhead + clockSkew)})
	return nil
}

// forget drops entries past their time and compacts the queue.
func (g *ReplayGuard) forget(now time.Time) {
	for g.head < len(g.fifo) && !now.Before(g.fifo[g.head].until) {
		delete(g.seen, g.fifo[g.head].key)
		g.head++
	}
	if g.head > 1024 && g.head*2 > len(g.fifo) {
		n := copy(g.fifo, g.fifo[g.head:])
		clear(g.fifo[n:])
		g.fifo = g.fifo[:n]
		g.head = 0
	}
}

// Len is the number of commands remembered.
func (g *ReplayGuard) Len() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.seen)
}

// replayKey names a signed command by what its signature covers: the
// ticket of a call, the method and arguments of a cast.
func replayKey(req *pidbox.Request) [32]byte {
	h := sha256.New()
	h.Write([]byte(req.Signer))
	h.Write([]byte{0})
	if req.Ticket != "" {
		h.Write([]byte("ticket\x00"))
		h.Write([]byte(req.Ticket))
	} else {
		h.Write([]byte("cast\x00"))
		h.Write([]byte(req.Method))
		h.Write([]byte{0})
		h.Write(req.Arguments)
	}
	var k [32]byte
	h.Sum(k[:0])
	return k
}
