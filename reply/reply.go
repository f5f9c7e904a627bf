// Package reply gathers the replies to pidbox calls.
//
// A mailbox reads one reply queue. Its Demux decodes each message, checks
// expiry, and routes the reply by ticket to the Inbox of the call waiting for
// it; replies nobody waits for yet are kept, bounded in count and age, for a
// later gather of their ticket. Collect turns an Inbox into a stream that ends
// at whichever comes first: the reply limit, every expected node having
// replied, the deadline, or cancellation.
package reply

import (
	"fmt"

	"github.com/gopidbox/pidbox/wire"
)

// Reply is one node's answer to a call.
type Reply struct {
	// Node is the replying node's name, such as "celery@host".
	Node string
	// Value is the reply value, still serialized; see Decode.
	Value wire.Raw
	// Codec is the codec Value is serialized with.
	Codec wire.Codec
	// Clock is the node's Lamport time when it replied.
	Clock uint64
	// Err is a *RemoteError when the node replied {"error": "..."}.
	Err error
	// Duplicate is set when the same node name already replied to this
	// call: two live nodes share one name.
	Duplicate bool
}

// Decode parses the reply value into v, a pointer. Structs are matched by
// their json tags, whichever codec the reply used.
func (r Reply) Decode(v any) error {
	if r.Codec == nil {
		return fmt.Errorf("pidbox: reply from %q has no codec", r.Node)
	}
	if err := r.Codec.Unmarshal(r.Value, v); err != nil {
		return fmt.Errorf("pidbox: decode reply from %q into %T: %w", r.Node, v, err)
	}
	return nil
}

// As decodes a reply value into a new T.
func As[T any](r Reply) (T, error) {
	var v T
	err := r.Decode(&v)
	return v, err
}

// RemoteError is the error a node replied with.
type RemoteError struct {
	// Node is the node that failed.
	Node string
	// Message is the node's error text, such as "KeyError('nosuch')".
	Message string
}

// Error returns "node: message".
func (e *RemoteError) Error() string { return e.Node + ": " + e.Message }
