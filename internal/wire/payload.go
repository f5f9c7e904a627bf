package wire

import (
	"bytes"
	"fmt"
	"unicode/utf8"
)

// Matcher names, as Kombu spells them in a request's "matcher" field.
const (
	// MatchGlob selects nodes with Python's fnmatch semantics.
	MatchGlob = "glob"
	// MatchPCRE selects nodes with a regular expression anchored at the
	// start of the name, like Python's re.match.
	MatchPCRE = "pcre"
)

// Request is the payload of a command:
// {method, arguments, destination, pattern, matcher, ticket, reply_to}.
type Request struct {
	// Method names the handler to run.
	Method string `json:"method"`
	// Arguments is a serialized map of keyword arguments.
	Arguments Raw `json:"arguments"`
	// Destination lists the node names to run on; empty means every node
	// (unless Pattern and Matcher are set).
	Destination []string `json:"destination"`
	// Pattern selects nodes by name together with Matcher.
	Pattern string `json:"pattern"`
	// Matcher is MatchGlob, MatchPCRE or empty.
	Matcher string `json:"matcher"`
	// Ticket identifies the call; empty when no reply is wanted.
	Ticket string `json:"ticket,omitempty"`
	// ReplyTo says where replies go; nil when no reply is wanted.
	ReplyTo *ReplyTo `json:"reply_to,omitempty"`
}

// ReplyTo addresses the caller's reply queue.
type ReplyTo struct {
	// Exchange is the reply exchange, "reply.<namespace>.pidbox".
	Exchange string `json:"exchange"`
	// RoutingKey is the caller's mailbox id (Kombu's oid).
	RoutingKey string `json:"routing_key"`
}

// requestOut is Request as Kombu writes it: absent pattern and matcher
// are null, not empty strings.
type requestOut struct {
	Method      string   `json:"method"`
	Arguments   Raw      `json:"arguments"`
	Destination []string `json:"destination"`
	Pattern     *string  `json:"pattern"`
	Matcher     *string  `json:"matcher"`
	Ticket      string   `json:"ticket,omitempty"`
	ReplyTo     *ReplyTo `json:"reply_to,omitempty"`
}

func nullable(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// EncodeRequest serializes r with c. Empty arguments are written as an
// empty map, as Kombu does.
func EncodeRequest(c Codec, r *Request) ([]byte, error) {
	args := r.Arguments
	if len(args) == 0 {
		var err error
		if args, err = c.Marshal(struct{}{}); err != nil {
			return nil, err
		}
	}
	return c.Marshal(&requestOut{
		Method:      r.Method,
		Arguments:   args,
		Destination: r.Destination,
		Pattern:     nullable(r.Pattern),
		Matcher:     nullable(r.Matcher),
		Ticket:      r.Ticket,
		ReplyTo:     r.ReplyTo,
	})
}

// DecodeRequest parses a request payload. A payload of the wrong shape,
// such as a destination that is not a list, gives an error wrapping
// ErrMalformed.
func DecodeRequest(c Codec, data []byte) (*Request, error) {
	var r Request
	var err error
	if _, ok := c.(JSON); ok {
		err = decodeRequestJSON(data, &r)
	} else {
		err = c.Unmarshal(data, &r)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: request is not a %s object of the expected shape: %v", ErrMalformed, c.Name(), truncErr(err))
	}
	if r.Method == "" {
		return nil, fmt.Errorf("%w: request has no method", ErrMalformed)
	}
	if r.ReplyTo != nil && r.Ticket == "" {
		return nil, fmt.Errorf("%w: request %q wants a reply but has no ticket", ErrMalformed, r.Method)
	}
	return &r, nil
}

// ErrorValue is the reply value of a failed command: {"error": "text"}.
type ErrorValue struct {
	// Error describes what went wrong.
	Error string `json:"error"`
}

// EncodeReply serializes the reply payload {node: value}.
func EncodeReply(c Codec, node string, value any) ([]byte, error) {
	if _, ok := c.(JSON); ok {
		return encodeReplyJSON(node, value)
	}
	return c.Marshal(map[string]any{node: value})
}

// DecodeReply parses a reply payload {node: value}, which must hold
// exactly one node.
func DecodeReply(c Codec, data []byte) (node string, value Raw, err error) {
	n := 0
	if _, ok := c.(JSON); ok {
		node, value, n, err = decodeReplyJSON(data)
	} else {
		var m map[string]Raw
		err = c.Unmarshal(data, &m)
		n = len(m)
		for node, value = range m {
		}
	}
	if err != nil {
		return "", nil, fmt.Errorf("%w: reply is not a %s object: %v", ErrMalformed, c.Name(), truncErr(err))
	}
	if n != 1 {
		return "", nil, fmt.Errorf("%w: reply holds %d nodes, want 1", ErrMalformed, n)
	}
	if !utf8.ValidString(node) {
		// A msgpack bin key: Python reads it as bytes, not a node name.
		return "", nil, fmt.Errorf("%w: reply's node name is not valid UTF-8", ErrMalformed)
	}
	return node, value, nil
}

// errorKey appears in every encoded ErrorValue, in both codecs.
var errorKey = []byte("error")

// ReplyError reports whether a reply value is an error reply
// ({"error": "text"} and nothing else) and returns its text.
func ReplyError(c Codec, value Raw) (text string, ok bool) {
	if !bytes.Contains(value, errorKey) {
		return "", false
	}
	var m map[string]Raw
	if c.Unmarshal(value, &m) != nil || len(m) != 1 || m["error"] == nil {
		return "", false
	}
	if c.Unmarshal(m["error"], &text) != nil {
		return "", false
	}
	return text, true
}
