// Package clock holds the Lamport clock that orders pidbox messages.
//
// Every message a mailbox or node publishes carries the sender's clock value
// (Forward), and every receiver moves its own clock past the value it sees
// (Adjust). The result is the happened-before order Kombu and Celery use to
// reason about control messages from many processes.
package clock

import "sync/atomic"

// Lamport is a logical clock that is safe for concurrent use.
// The zero value is a clock at 0, ready to use.
type Lamport struct {
	v atomic.Uint64
}

// New returns a clock starting at value.
func New(value uint64) *Lamport {
	c := &Lamport{}
	c.v.Store(value)
	return c
}

// Value returns the current time without moving the clock.
func (c *Lamport) Value() uint64 { return c.v.Load() }

// Forward advances the clock for a local event, such as publishing a
// message, and returns the new time.
func (c *Lamport) Forward() uint64 { return c.v.Add(1) }

// Adjust moves the clock past a time observed on a received message:
// the clock becomes max(own, other) + 1. It returns the new time.
func (c *Lamport) Adjust(other uint64) uint64 {
	for {
		cur := c.v.Load()
		next := max(cur, other) + 1
		if c.v.CompareAndSwap(cur, next) {
			return next
		}
	}
}
