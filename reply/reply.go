// Package reply holds what a caller gets back from a pidbox call: each
// node's Reply, a generic As to decode it, and RemoteError for the nodes
// that answered with an error.
package reply

import (
	"fmt"

	"github.com/gopidbox/pidbox/internal/wire"
)

// Raw is a value still in its serialized form: JSON text or msgpack bytes,
// as named by the content type of the message it came in.
type Raw []byte

// ErrNonFinite is wrapped by the error of Decode and As when a json reply
// value holds NaN or ±Infinity and the target cannot hold them: only any
// (and interface slots inside maps, slices and structs) and float64 can.
var ErrNonFinite = wire.ErrNonFinite

// Reply is one node's answer to a call.
type Reply struct {
	// Node is the replying node's name, such as "celery@host".
	Node string
	// Value is the reply value, still serialized; see Decode.
	Value Raw
	// ContentType is the serializer Value is in: "application/json" or
	// "application/x-msgpack".
	ContentType string
	// Clock is the node's Lamport time when it replied.
	Clock uint64
	// Err is a *RemoteError when the node replied {"error": "..."}.
	Err error
	// Duplicate is set when the same node name already replied to this
	// call: two live nodes share one name.
	Duplicate bool
	// Signer is the verified signer of a signed reply, empty otherwise.
	Signer string
}

// Decode parses the reply value into v, a pointer. Structs are matched by
// their json tags, whichever serializer the reply used. Numbers decoded
// into any keep Python's types: int64, uint64 above math.MaxInt64,
// json.Number beyond 64 bits, float64 for 3.0 and 1.5.
//
// A json value may hold Python's NaN, Infinity and -Infinity, which
// Python's json writes for float('nan') and float('inf') (Celery's conf
// does): decoded into any, or into a float64, they are math.NaN(),
// math.Inf(1) and math.Inf(-1); into other types they are an error that
// wraps wire.ErrNonFinite (which errors.Is also matches with
// wire.ErrUnsupported).
func (r Reply) Decode(v any) error {
	c, err := wire.CodecOf(r.ContentType)
	if err != nil {
		return fmt.Errorf("pidbox: reply from %q: %w", r.Node, err)
	}
	if err := wire.UnmarshalReply(c, r.Value, v); err != nil {
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
