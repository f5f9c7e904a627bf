package wire

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"reflect"
)

// Python's json module writes float('nan'), float('inf') and
// float('-inf') as the bare tokens NaN, Infinity and -Infinity, and reads
// them back, where JSON has no such numbers. A Celery worker's reply can
// hold them (inspect conf with defaults holds Infinity), so the reply path
// accepts them where a number may stand: DecodeReply keeps such a value as
// it is, and UnmarshalReply decodes it. Everything else (envelopes,
// requests, Codec.Unmarshal) stays strict JSON.

// ErrNonFinite is returned, wrapped, when a reply value holds NaN or
// ±Infinity and the target cannot hold them: only any (and interface
// slots inside maps, slices and structs) and float64 can.
var ErrNonFinite = fmt.Errorf("%w: NaN or Infinity in a reply value", ErrUnsupported)

// UnmarshalReply decodes a reply value as c.Unmarshal does, except that
// with the json codec it also reads Python's NaN, Infinity and -Infinity:
// into an interface slot or a float64 they become math.NaN(), math.Inf(1)
// and math.Inf(-1); into any other type they are an error wrapping
// ErrNonFinite.
func UnmarshalReply(c Codec, data []byte, v any) error {
	if _, ok := c.(JSON); !ok {
		return c.Unmarshal(data, v)
	}
	std, found := pyTokens(data)
	if !found {
		return decodeJSON(data, v)
	}
	if f, ok := v.(*float64); ok {
		switch string(bytes.TrimSpace(data)) {
		case "NaN":
			*f = math.NaN()
			return nil
		case "Infinity":
			*f = math.Inf(1)
			return nil
		case "-Infinity":
			*f = math.Inf(-1)
			return nil
		}
	}
	if !holdsInterface(reflect.TypeOf(v), nil) {
		return fmt.Errorf("%w: decode into %T: want any or float64", ErrNonFinite, v)
	}
	if bytes.Contains(data, []byte(nanNumber)) {
		// The stand-in for NaN is there already: refuse rather than guess.
		return fmt.Errorf("%w: the value holds the text %s", ErrNonFinite, nanNumber)
	}
	if err := decodeJSONWith(std, v, jsonNumberPy); err != nil {
		return fmt.Errorf("%w: %v", ErrNonFinite, err)
	}
	return nil
}

// Stand-ins for the Python tokens, as json numbers: Infinity reads as
// +Inf through NumberValue, as Python reads 1e99999; NaN's stand-in is
// recognized by its text. Both overflow a float64, so encoding/json
// refuses them in a typed float field rather than decoding a wrong value.
const (
	infNumber = "1e99999"
	nanNumber = "7e99999"
)

// pyTokens returns data with every NaN, Infinity and -Infinity that stands
// as a whole value outside strings replaced by its stand-in number, and
// whether it found any. Tokens elsewhere (inside a string, or glued to
// other text) are left alone, so invalid input stays invalid.
func pyTokens(data []byte) ([]byte, bool) {
	if !bytes.ContainsAny(data, "NI") {
		return data, false
	}
	var out []byte
	last := 0
	inString := false
	for i := 0; i < len(data); i++ {
		c := data[i]
		if inString {
			switch c {
			case '\\':
				i++
			case '"':
				inString = false
			}
			continue
		}
		var lit, repl string
		switch c {
		case '"':
			inString = true
			continue
		case 'N':
			lit, repl = "NaN", nanNumber
		case 'I':
			lit, repl = "Infinity", infNumber
		default:
			continue
		}
		start := i
		if c == 'I' && i > 0 && data[i-1] == '-' {
			start--
		}
		end := i + len(lit)
		if !bytes.HasPrefix(data[i:], []byte(lit)) || !valueStart(data, start) || !valueEnd(data, end) {
			continue
		}
		out = append(out, data[last:i]...)
		out = append(out, repl...)
		last = end
		i = end - 1
	}
	if out == nil {
		return data, false
	}
	return append(out, data[last:]...), true
}

// valueStart reports whether a value may begin at data[i], judging by the
// byte before it.
func valueStart(data []byte, i int) bool {
	if i == 0 {
		return true
	}
	switch data[i-1] {
	case ' ', '\t', '\n', '\r', '[', ',', ':':
		return true
	}
	return false
}

// valueEnd reports whether a value may end before data[i].
func valueEnd(data []byte, i int) bool {
	if i == len(data) {
		return true
	}
	switch data[i] {
	case ' ', '\t', '\n', '\r', ']', ',', '}':
		return true
	}
	return false
}

// pyLiteral consumes NaN, Infinity or -Infinity if one is next; the
// caller has skipped the space before it.
func (s *scanner) pyLiteral() bool {
	for _, lit := range []string{"NaN", "Infinity", "-Infinity"} {
		if len(s.data)-s.i >= len(lit) && string(s.data[s.i:s.i+len(lit)]) == lit {
			s.i += len(lit)
			return true
		}
	}
	return false
}

// jsonNumberPy is jsonNumber that also knows NaN's stand-in.
func jsonNumberPy(x any) (any, bool) {
	if n, ok := x.(json.Number); ok && n == nanNumber {
		return math.NaN(), true
	}
	return jsonNumber(x)
}
