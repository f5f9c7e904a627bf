package wire

import "encoding/json"

// Hand-written json decoders for the request and reply payloads, held to
// encoding/json's behaviour by the wire fuzz tests, like decodeEnvelope.

// decodeRequestJSON fills r from a json request payload.
func decodeRequestJSON(data []byte, r *Request) error {
	s := &scanner{data: data}
	if s.null() {
		return s.end()
	}
	if s.peek() != '{' {
		return s.errorf("not an object")
	}
	err := s.object(func(k []byte) error {
		var err error
		switch string(canon(k)) {
		case "method":
			r.Method, err = s.str()
		case "arguments":
			start := s.i
			if err = s.skip(0); err == nil {
				r.Arguments = append(r.Arguments[:0], s.data[start:s.i]...)
			}
		case "destination":
			r.Destination, err = s.strings(r.Destination)
		case "pattern":
			r.Pattern, err = s.str()
		case "matcher":
			r.Matcher, err = s.str()
		case "ticket":
			r.Ticket, err = s.str()
		case "reply_to":
			if s.null() {
				r.ReplyTo = nil
				return nil
			}
			if s.peek() != '{' {
				return s.errorf("reply_to is not an object")
			}
			if r.ReplyTo == nil {
				r.ReplyTo = &ReplyTo{}
			}
			err = s.route(&r.ReplyTo.Exchange, &r.ReplyTo.RoutingKey)
		default:
			err = s.skip(1)
		}
		return err
	})
	if err != nil {
		return err
	}
	return s.end()
}

// strings consumes null (nil) or an array of strings and nulls (""),
// reusing into, as encoding/json does for a []string.
func (s *scanner) strings(into []string) ([]string, error) {
	if s.null() {
		return nil, nil
	}
	if s.peek() != '[' {
		return nil, s.errorf("want a list of strings")
	}
	s.i++
	out := into[:0]
	if out == nil {
		out = []string{}
	}
	if s.peek() == ']' {
		s.i++
		return out, nil
	}
	for {
		v, err := s.str()
		if err != nil {
			return nil, err
		}
		out = append(out, v)
		switch s.peek() {
		case ',':
			s.i++
		case ']':
			s.i++
			return out, nil
		default:
			return nil, s.errorf("want , or ]")
		}
	}
}

// end checks that only whitespace follows the value.
func (s *scanner) end() error {
	if s.ws(); s.i != len(s.data) {
		return s.errorf("data after the value")
	}
	return nil
}

// decodeReplyJSON reads a json reply {node: value}; it fails unless the
// object holds exactly one distinct node.
func decodeReplyJSON(data []byte) (node string, value Raw, n int, err error) {
	s := &scanner{data: data}
	if s.null() {
		return "", nil, 0, s.end()
	}
	if s.peek() != '{' {
		return "", nil, 0, s.errorf("not an object")
	}
	err = s.object(func(k []byte) error {
		start := s.i
		s.py = true // the value may hold Python's NaN and ±Infinity
		err := s.skip(0)
		s.py = false
		if err != nil {
			return err
		}
		if n == 0 || string(k) != node {
			n++
		}
		node, value = string(k), append(Raw(nil), s.data[start:s.i]...)
		return nil
	})
	if err != nil {
		return "", nil, 0, err
	}
	return node, value, n, s.end()
}

// encodeReplyJSON writes {node: value} without building a map. A Raw
// value that holds Python's NaN or ±Infinity (as DecodeReply keeps it) is
// written as it is, as Python's json would write it.
func encodeReplyJSON(node string, value any) ([]byte, error) {
	v, err := json.Marshal(pyFloats(value))
	if err != nil {
		raw, ok := value.(Raw)
		if !ok || !validPyValue(raw) {
			return nil, err
		}
		v = raw
	}
	out := make([]byte, 0, len(node)+len(v)+8)
	out = append(out, '{')
	out = appendString(out, node)
	out = append(out, ':')
	out = append(out, v...)
	return append(out, '}'), nil
}

// validPyValue reports whether data is one JSON value that may hold
// Python's NaN and ±Infinity.
func validPyValue(data []byte) bool {
	s := &scanner{data: data, py: true}
	return s.skip(0) == nil && s.end() == nil
}

// NotAddressed reports whether a request payload certainly does not
// address hostname: its destination, read as decodeRequestJSON reads it,
// is a non-empty list without hostname (Kombu's rule: a destination wins
// over a pattern). It reads no other field and allocates nothing unless a
// name holds escapes, so a node skips the commands for other nodes
// cheaply. false means "decode it": the payload may address hostname,
// or is not JSON, or is malformed.
func NotAddressed(c Codec, data []byte, hostname string) bool {
	if _, ok := c.(JSON); !ok {
		return false
	}
	s := &scanner{data: data}
	if s.peek() != '{' {
		return false
	}
	var listed, named bool
	err := s.object(func(k []byte) error {
		if string(canon(k)) != "destination" {
			return s.skip(1)
		}
		listed, named = false, false // the last one counts, as in encoding/json
		if s.null() {
			return nil
		}
		if s.peek() != '[' {
			return s.errorf("want a list of strings")
		}
		return s.array(func() error {
			listed = true
			if s.null() {
				named = named || hostname == "" // null reads as ""
				return nil
			}
			if s.peek() != '"' {
				return s.errorf("want a string")
			}
			name, err := s.rawString()
			named = named || string(name) == hostname
			return err
		})
	})
	return err == nil && s.end() == nil && listed && !named
}
