package wire

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"unicode/utf16"
	"unicode/utf8"
)

// A hand-written decoder for the one JSON shape Kombu envelopes have. It
// accepts exactly what encoding/json would for the same target struct —
// including case-insensitive keys, unknown keys, null for absent values,
// and U+FFFD for invalid UTF-8 — and the wire fuzz test holds it to that,
// against an encoding/json reference. It allocates only the decoded body
// and the strings it keeps.

type scanner struct {
	data []byte
	i    int
	// py also takes Python's NaN, Infinity and -Infinity as numbers (reply
	// values only; see pyjson.go).
	py bool
}

func (s *scanner) errorf(format string, args ...any) error {
	return fmt.Errorf("%w: envelope is not a JSON object of the expected shape: %s at byte %d", ErrMalformed, fmt.Sprintf(format, args...), s.i)
}

func (s *scanner) ws() {
	for s.i < len(s.data) {
		switch s.data[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// peek returns the next non-space byte, or 0 at the end.
func (s *scanner) peek() byte {
	s.ws()
	if s.i < len(s.data) {
		return s.data[s.i]
	}
	return 0
}

func (s *scanner) expect(c byte) error {
	if s.peek() != c {
		return s.errorf("want %q", c)
	}
	s.i++
	return nil
}

// null consumes a null if one is next.
func (s *scanner) null() bool {
	if s.peek() == 'n' && len(s.data)-s.i >= 4 && string(s.data[s.i:s.i+4]) == "null" {
		s.i += 4
		return true
	}
	return false
}

// object calls field for every key of an object; field must consume the
// value. A null object calls nothing.
func (s *scanner) object(field func(key []byte) error) error {
	if s.null() {
		return nil
	}
	if err := s.expect('{'); err != nil {
		return err
	}
	if s.peek() == '}' {
		s.i++
		return nil
	}
	for {
		if s.peek() != '"' {
			return s.errorf("want a key")
		}
		key, err := s.rawString()
		if err != nil {
			return err
		}
		if err := s.expect(':'); err != nil {
			return err
		}
		s.ws()
		if err := field(key); err != nil {
			return err
		}
		switch s.peek() {
		case ',':
			s.i++
		case '}':
			s.i++
			return nil
		default:
			return s.errorf("want , or }")
		}
	}
}

// rawString consumes a string and returns its contents unescaped: a slice
// of the input when it holds no escapes and is valid UTF-8.
func (s *scanner) rawString() ([]byte, error) {
	if err := s.expect('"'); err != nil {
		return nil, err
	}
	start := s.i
	// Most strings (base64 bodies, names) are plain ASCII: find the quote
	// with IndexByte and check the bytes before it a word at a time.
	if j := bytes.IndexByte(s.data[start:], '"'); j >= 0 && allPlain(s.data[start:start+j]) {
		s.i = start + j + 1
		return s.data[start : start+j], nil
	}
	simple := true
	for s.i < len(s.data) {
		// Most strings (base64 bodies, names) are plain ASCII: skip those
		// bytes in a tight loop.
		for s.i < len(s.data) && plain[s.data[s.i]] {
			s.i++
		}
		if s.i >= len(s.data) {
			break
		}
		c := s.data[s.i]
		switch {
		case c == '"':
			raw := s.data[start:s.i]
			s.i++
			if simple {
				return raw, nil
			}
			return unquote(raw)
		case c == '\\':
			simple = false
			s.i += 2
		case c < 0x20:
			return nil, s.errorf("control character in string")
		case c >= utf8.RuneSelf:
			simple = false
			s.i++
		default:
			s.i++
		}
	}
	return nil, s.errorf("unterminated string")
}

// allPlain reports whether every byte of b is plain (see plain), eight
// bytes at a time: a word is plain when none of its bytes has the high bit
// set, is below 0x20 or is a backslash (a quote is not looked for: b ends
// before the first one).
func allPlain(b []byte) bool {
	const lo, hi = 0x0101010101010101, 0x8080808080808080
	for len(b) >= 8 {
		x := binary.LittleEndian.Uint64(b)
		bs := x ^ (lo * '\\')
		if (x|((x-lo*0x20)&^x)|((bs-lo)&^bs))&hi != 0 {
			return false
		}
		b = b[8:]
	}
	for _, c := range b {
		if !plain[c] {
			return false
		}
	}
	return true
}

// plain marks the bytes a JSON string holds as they are: not a quote, a
// backslash, a control character or part of a multi-byte sequence.
var plain = func() (t [256]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// str consumes a string or null.
func (s *scanner) str() (string, error) {
	if s.null() {
		return "", nil
	}
	if s.peek() != '"' {
		return "", s.errorf("want a string")
	}
	b, err := s.rawString()
	return intern(b), err
}

// intern returns the strings every envelope repeats without allocating.
func intern(b []byte) string {
	switch string(b) {
	case "":
		return ""
	case "application/json":
		return "application/json"
	case "application/x-msgpack":
		return "application/x-msgpack"
	case "utf-8":
		return "utf-8"
	case "binary":
		return "binary"
	case "base64":
		return "base64"
	case "celery.pidbox":
		return "celery.pidbox"
	case "reply.celery.pidbox":
		return "reply.celery.pidbox"
	}
	return string(b)
}

// value consumes any JSON value and returns its text, or "" for null.
func (s *scanner) value() (string, error) {
	start := s.i
	if err := s.skip(0); err != nil {
		return "", err
	}
	v := string(s.data[start:s.i])
	if v == "null" {
		return "", nil
	}
	return v, nil
}

const maxDepth = 10000 // as encoding/json

// array calls elem for every element of the array that starts here (the
// caller saw its '['); elem must consume the element.
func (s *scanner) array(elem func() error) error {
	s.i++
	if s.peek() == ']' {
		s.i++
		return nil
	}
	for {
		if err := elem(); err != nil {
			return err
		}
		switch s.peek() {
		case ',':
			s.i++
		case ']':
			s.i++
			return nil
		default:
			return s.errorf("want , or ]")
		}
	}
}

// skip consumes and validates any JSON value.
func (s *scanner) skip(depth int) error {
	if depth > maxDepth {
		return s.errorf("nested too deeply")
	}
	switch c := s.peek(); {
	case c == '{':
		return s.object(func([]byte) error { return s.skip(depth + 1) })
	case c == '[':
		return s.array(func() error { return s.skip(depth + 1) })
	case c == '"':
		_, err := s.rawString()
		return err
	case c == 't' || c == 'f' || c == 'n':
		for _, lit := range []string{"true", "false", "null"} {
			if len(s.data)-s.i >= len(lit) && string(s.data[s.i:s.i+len(lit)]) == lit {
				s.i += len(lit)
				return nil
			}
		}
		return s.errorf("bad literal")
	case s.py && (c == 'N' || c == 'I' || c == '-') && s.pyLiteral():
		return nil
	case c == '-' || (c >= '0' && c <= '9'):
		return s.number()
	default:
		return s.errorf("want a value")
	}
}

// number consumes a number with JSON's grammar.
func (s *scanner) number() error {
	d := s.data
	if s.i < len(d) && d[s.i] == '-' {
		s.i++
	}
	switch {
	case s.i < len(d) && d[s.i] == '0':
		s.i++
	case s.i < len(d) && d[s.i] >= '1' && d[s.i] <= '9':
		for s.i < len(d) && d[s.i] >= '0' && d[s.i] <= '9' {
			s.i++
		}
	default:
		return s.errorf("bad number")
	}
	if s.i < len(d) && d[s.i] == '.' {
		s.i++
		if s.i >= len(d) || d[s.i] < '0' || d[s.i] > '9' {
			return s.errorf("bad number")
		}
		for s.i < len(d) && d[s.i] >= '0' && d[s.i] <= '9' {
			s.i++
		}
	}
	if s.i < len(d) && (d[s.i] == 'e' || d[s.i] == 'E') {
		s.i++
		if s.i < len(d) && (d[s.i] == '+' || d[s.i] == '-') {
			s.i++
		}
		if s.i >= len(d) || d[s.i] < '0' || d[s.i] > '9' {
			return s.errorf("bad number")
		}
		for s.i < len(d) && d[s.i] >= '0' && d[s.i] <= '9' {
			s.i++
		}
	}
	return nil
}

// unquote resolves escapes and replaces invalid UTF-8 with U+FFFD, as
// encoding/json does.
func unquote(raw []byte) ([]byte, error) {
	out := make([]byte, 0, len(raw))
	for i := 0; i < len(raw); {
		c := raw[i]
		switch {
		case c == '\\':
			if i+1 >= len(raw) {
				return nil, fmt.Errorf("%w: bad escape in string", ErrMalformed)
			}
			switch e := raw[i+1]; e {
			case '"', '\\', '/':
				out = append(out, e)
			case 'b':
				out = append(out, '\b')
			case 'f':
				out = append(out, '\f')
			case 'n':
				out = append(out, '\n')
			case 'r':
				out = append(out, '\r')
			case 't':
				out = append(out, '\t')
			case 'u':
				r, ok := hex4(raw[i+2:])
				if !ok {
					return nil, fmt.Errorf("%w: bad \\u escape in string", ErrMalformed)
				}
				i += 6
				if utf16.IsSurrogate(r) {
					if r2, ok := hex4(raw[min(i+2, len(raw)):]); ok && i+1 < len(raw) && raw[i] == '\\' && raw[i+1] == 'u' {
						if dec := utf16.DecodeRune(r, r2); dec != utf8.RuneError {
							out = utf8.AppendRune(out, dec)
							i += 6
							continue
						}
					}
					r = utf8.RuneError
				}
				out = utf8.AppendRune(out, r)
				continue
			default:
				return nil, fmt.Errorf("%w: bad escape in string", ErrMalformed)
			}
			i += 2
		case c < utf8.RuneSelf:
			out = append(out, c)
			i++
		default:
			r, size := utf8.DecodeRune(raw[i:])
			if r == utf8.RuneError && size == 1 {
				out = append(out, "\uFFFD"...)
			} else {
				out = append(out, raw[i:i+size]...)
			}
			i += size
		}
	}
	return out, nil
}

func hex4(b []byte) (rune, bool) {
	if len(b) < 4 {
		return 0, false
	}
	var r rune
	for _, c := range b[:4] {
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c = c - 'a' + 10
		case c >= 'A' && c <= 'F':
			c = c - 'A' + 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	return r, true
}

// canon returns a key as the lower-case ASCII field name it matches the
// way encoding/json matches struct fields (Unicode simple case folding):
// ASCII letters fold to lower case, and so do the only two non-ASCII runes
// that fold to ASCII letters, KELVIN SIGN (k) and LATIN SMALL LETTER LONG S
// (s). A key already in lower-case ASCII, as every key Kombu writes, comes
// back as it is. Callers switch on string(canon(k)), which does not
// allocate.
func canon(k []byte) []byte {
	lower := true
	for _, c := range k {
		if c >= utf8.RuneSelf || ('A' <= c && c <= 'Z') {
			lower = false
			break
		}
	}
	if lower {
		return k
	}
	b := make([]byte, 0, len(k))
	for _, r := range string(k) {
		switch {
		case 'A' <= r && r <= 'Z':
			r += 'a' - 'A'
		case r == '\u212a':
			r = 'k'
		case r == '\u017f':
			r = 's'
		}
		b = utf8.AppendRune(b, r)
	}
	return b
}

// route consumes an {"exchange", "routing_key"} object (or null), as in
// delivery_info and reply_to.
func (s *scanner) route(exchange, routingKey *string) error {
	return s.object(func(k []byte) error {
		var err error
		switch string(canon(k)) {
		case "exchange":
			*exchange, err = s.str()
		case "routing_key":
			*routingKey, err = s.str()
		default:
			err = s.skip(2)
		}
		return err
	})
}

// extra consumes the value of an unknown header: a string within bounds
// is kept as an extra header, anything else is skipped and counted. A
// value's text is copied only when it is kept.
func (s *scanner) extra(e *Envelope, k []byte) error {
	if s.peek() != '"' {
		e.IgnoredHeaders++
		return s.skip(1)
	}
	v, err := s.rawString()
	if err != nil {
		return err
	}
	if len(k) > MaxHeaderKey || len(v) > MaxHeaderValue {
		e.IgnoredHeaders++
		return nil
	}
	addExtra(e, internKey(k), string(v), true)
	return nil
}

// sized returns n bytes of mem's memory when it has room, else new ones.
func sized(mem []byte, n int) []byte {
	if cap(mem) >= n && cap(mem) > 0 {
		return mem[:n]
	}
	return make([]byte, n)
}

// decodeEnvelope parses an envelope into e without reflection; the body
// goes into e.Body's memory when it has room.
func decodeEnvelope(data []byte, e *Envelope) error {
	s := &scanner{data: data}
	mem := e.Body[:0] // memory for the body, reused when it has room
	e.Body = nil
	var body []byte
	hasBody := false
	var clock, expires, mode, prio, bodyEnc string
	var err error
	if s.peek() == 'n' && s.null() {
		return fmt.Errorf("%w: envelope has no body", ErrMalformed)
	}
	if s.peek() != '{' {
		return s.errorf("not a JSON object")
	}
	err = s.object(func(k []byte) error {
		var err error
		switch string(canon(k)) {
		case "body":
			if s.null() {
				body, hasBody = nil, false
				return nil
			}
			if s.peek() != '"' {
				return s.errorf("body is not a string")
			}
			body, err = s.rawString()
			hasBody = true
		case "content-type":
			e.ContentType, err = s.str()
		case "content-encoding":
			e.ContentEncoding, err = s.str()
		case "headers":
			// A repeated headers object replaces the extra headers of an
			// earlier one, as encoding/json replaces a map.
			e.Headers.Extra, e.IgnoredHeaders = nil, 0
			err = s.object(func(k []byte) error {
				var err error
				switch string(canon(k)) {
				case "clock":
					clock, err = s.value()
				case "expires":
					expires, err = s.value()
				case "ticket":
					e.Headers.Ticket, err = s.str()
				case "compression":
					err = s.skip(1) // Kombu's; never kept or passed on
				default:
					err = s.extra(e, k)
				}
				return err
			})
		case "properties":
			err = s.object(func(k []byte) error {
				var err error
				switch string(canon(k)) {
				case "body_encoding":
					bodyEnc, err = s.str()
				case "delivery_mode":
					mode, err = s.value()
				case "delivery_tag":
					e.Properties.DeliveryTag, err = s.str()
				case "priority":
					prio, err = s.value()
				case "delivery_info":
					err = s.route(&e.Properties.Exchange, &e.Properties.RoutingKey)
				default:
					err = s.skip(1)
				}
				return err
			})
		default:
			err = s.skip(0)
		}
		return err
	})
	if err != nil {
		return err
	}
	if s.ws(); s.i != len(s.data) {
		return s.errorf("data after the envelope")
	}
	if e.Headers.Clock, err = clockValue(clock); err != nil {
		return err
	}
	if e.Headers.Expires, err = expiresValue(expires); err != nil {
		return err
	}
	if e.Properties.DeliveryMode, err = smallInt("delivery_mode", mode); err != nil {
		return err
	}
	if e.Properties.Priority, err = smallInt("priority", prio); err != nil {
		return err
	}
	if !hasBody {
		return fmt.Errorf("%w: envelope has no body", ErrMalformed)
	}
	switch bodyEnc {
	case "base64":
		e.Body = sized(mem, base64.StdEncoding.DecodedLen(len(body)))
		n, err := base64.StdEncoding.Decode(e.Body, body)
		if err != nil {
			e.Body = mem
			return fmt.Errorf("%w: body is not valid base64: %v", ErrMalformed, err)
		}
		e.Body = e.Body[:n]
	case "":
		e.Body = sized(mem, len(body))
		copy(e.Body, body)
	default:
		return fmt.Errorf("%w: body_encoding %q", ErrUnsupported, bodyEnc)
	}
	return nil
}
