package wire

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"reflect"
	"strconv"
	"strings"
)

// Numbers that a codec decodes into an interface (any, map[string]any,
// []any, or a struct field of type any) keep Python's distinction between
// int and float, in both codecs:
//
//   - an integer becomes an int64, or a uint64 above math.MaxInt64, so
//     2^53+1 and 2^64-1 arrive exact;
//   - a json integer beyond 64 bits, which Python's json writes and reads
//     freely, stays a json.Number holding its exact digits;
//   - a number with a fraction or an exponent becomes a float64, 3.0 too.
//
// encoding/json alone would make every number a float64, so 3 would turn
// into 3.0 on its way back to Python and 2^53+1 would lose its last digit.

// decodeJSON is JSON.Unmarshal: numbers bound for interfaces are decoded
// as above; other targets take encoding/json's path unchanged.
func decodeJSON(data []byte, v any) error { return decodeJSONWith(data, v, jsonNumber) }

// decodeJSONWith is decodeJSON converting numbers in interfaces with conv.
func decodeJSONWith(data []byte, v any, conv func(any) (any, bool)) error {
	if !holdsInterface(reflect.TypeOf(v), nil) {
		return json.Unmarshal(data, v)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if rest := bytes.TrimLeft(data[dec.InputOffset():], " \t\r\n"); len(rest) > 0 {
		return fmt.Errorf("json: invalid character %q after top-level value", rest[0])
	}
	fixNumbers(reflect.ValueOf(v), conv)
	return nil
}

// jsonNumber converts a json.Number from an interface slot.
func jsonNumber(x any) (any, bool) {
	n, ok := x.(json.Number)
	if !ok {
		return nil, false
	}
	return NumberValue(n), true
}

// NumberValue converts a json number's text as Python's json module reads
// it: int64, or uint64 above math.MaxInt64, for an integer; the
// json.Number itself for an integer beyond 64 bits; float64 for a number
// with a fraction or an exponent (±Inf beyond float64's range, as Python's
// float gives).
func NumberValue(n json.Number) any {
	s := string(n)
	if !strings.ContainsAny(s, ".eE") {
		if i, err := strconv.ParseInt(s, 10, 64); err == nil {
			return i
		}
		if u, err := strconv.ParseUint(s, 10, 64); err == nil {
			return u
		}
		return n
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil && !math.IsInf(f, 0) {
		return n
	}
	return f
}

// msgpackNumber converts the sized integers the msgpack decoder puts in
// interfaces (int8 for 7, uint8 for 200...) to int64, or uint64 above
// math.MaxInt64, and float32 to float64.
func msgpackNumber(x any) (any, bool) {
	switch n := x.(type) {
	case int8:
		return int64(n), true
	case int16:
		return int64(n), true
	case int32:
		return int64(n), true
	case uint8:
		return int64(n), true
	case uint16:
		return int64(n), true
	case uint32:
		return int64(n), true
	case uint64:
		if n <= math.MaxInt64 {
			return int64(n), true
		}
	case float32:
		return float64(n), true
	}
	return nil, false
}

var (
	sliceType = reflect.TypeFor[[]any]()
	mapType   = reflect.TypeFor[map[string]any]()
)

// holdsInterface reports whether a value of type t can hold an interface
// value anywhere inside it.
func holdsInterface(t reflect.Type, seen map[reflect.Type]bool) bool {
	if t == nil {
		return false
	}
	switch t.Kind() {
	case reflect.Interface:
		return true
	case reflect.Pointer, reflect.Slice, reflect.Array:
		if t.Kind() == reflect.Slice && t.Elem().Kind() == reflect.Uint8 {
			return false // []byte, Raw, json.RawMessage
		}
		return holdsInterface(t.Elem(), seen)
	case reflect.Map:
		return holdsInterface(t.Key(), seen) || holdsInterface(t.Elem(), seen)
	case reflect.Struct:
		if seen[t] {
			return false
		}
		if seen == nil {
			seen = map[reflect.Type]bool{}
		}
		seen[t] = true
		for i := range t.NumField() {
			if f := t.Field(i); f.IsExported() || f.Anonymous {
				if holdsInterface(f.Type, seen) {
					return true
				}
			}
		}
	}
	return false
}

// fixNumbers replaces, everywhere inside v, the numbers that conv
// converts and that sit in interface slots.
func fixNumbers(v reflect.Value, conv func(any) (any, bool)) {
	switch v.Kind() {
	case reflect.Pointer:
		if !v.IsNil() {
			fixNumbers(v.Elem(), conv)
		}
	case reflect.Interface:
		if v.IsNil() {
			return
		}
		x := v.Elem().Interface()
		if n, ok := conv(x); ok {
			if v.CanSet() {
				v.Set(reflect.ValueOf(n))
			}
			return
		}
		switch t := x.(type) {
		case map[string]any:
			fixTree(t, conv)
		case []any:
			fixTree(t, conv)
		case map[any]any:
			fixTree(t, conv)
		default:
			fixNumbers(v.Elem(), conv)
		}
	case reflect.Struct:
		for i := range v.NumField() {
			if f := v.Field(i); f.CanSet() {
				fixNumbers(f, conv)
			}
		}
	case reflect.Slice, reflect.Array:
		if v.Type() == sliceType {
			fixTree(v.Interface().([]any), conv)
			return
		}
		if holdsInterface(v.Type().Elem(), nil) {
			for i := range v.Len() {
				fixNumbers(v.Index(i), conv)
			}
		}
	case reflect.Map:
		if v.IsNil() || !holdsInterface(v.Type().Elem(), nil) {
			return
		}
		if v.Type() == mapType {
			fixTree(v.Interface().(map[string]any), conv)
			return
		}
		iter := v.MapRange()
		for iter.Next() {
			e := reflect.New(v.Type().Elem()).Elem()
			e.Set(iter.Value())
			fixNumbers(e, conv)
			v.SetMapIndex(iter.Key(), e)
		}
	}
}

// fixTree is fixNumbers for the plain trees decoders build, without
// reflection. It returns the converted value of x.
func fixTree(x any, conv func(any) (any, bool)) any {
	if n, ok := conv(x); ok {
		return n
	}
	switch t := x.(type) {
	case map[string]any:
		for k, e := range t {
			t[k] = fixTree(e, conv)
		}
	case map[any]any:
		for k, e := range t {
			t[k] = fixTree(e, conv)
		}
	case []any:
		for i, e := range t {
			t[i] = fixTree(e, conv)
		}
	}
	return x
}

// toMsgpack prepares a value for the msgpack encoder: json.Numbers inside
// plain trees (what a json decode into any leaves for integers beyond 64
// bits, or a caller's own) become the int or float they stand for, and an
// integer msgpack cannot carry is an error, where the encoder would write
// the digits as a string. Trees without json.Number are returned as they
// are, without copying.
func toMsgpack(v any) (any, error) {
	if !hasNumber(v) {
		return v, nil
	}
	return copyNumbers(v)
}

func hasNumber(v any) bool {
	switch t := v.(type) {
	case json.Number:
		return true
	case map[string]any:
		for _, e := range t {
			if hasNumber(e) {
				return true
			}
		}
	case []any:
		for _, e := range t {
			if hasNumber(e) {
				return true
			}
		}
	}
	return false
}

func copyNumbers(v any) (any, error) {
	switch t := v.(type) {
	case json.Number:
		n := NumberValue(t)
		if _, still := n.(json.Number); still {
			return nil, fmt.Errorf("%w: the integer %s does not fit msgpack's 64 bits", ErrUnsupported, t)
		}
		return n, nil
	case map[string]any:
		out := make(map[string]any, len(t))
		for k, e := range t {
			c, err := copyNumbers(e)
			if err != nil {
				return nil, err
			}
			out[k] = c
		}
		return out, nil
	case []any:
		out := make([]any, len(t))
		for i, e := range t {
			c, err := copyNumbers(e)
			if err != nil {
				return nil, err
			}
			out[i] = c
		}
		return out, nil
	}
	return v, nil
}

// Floats on their way to json are written as Python writes them when they
// sit in plain trees (any, map[string]any, []any, what decoding into any
// gives): encoding/json writes a whole float64 as an integer (3.0 as 3,
// -0.0 as -0, 1e20 as 100000000000000000000), which Python reads as an
// int. A float64 field of a struct is still written encoding/json's way.

// pyFloats returns v, or a copy of it in which every whole float64 below
// 1e21 is a PyFloat, when v holds one; plain trees only.
func pyFloats(v any) any {
	if !hasWholeFloat(v) {
		return v
	}
	return copyFloats(v)
}

func wholeFloat(f float64) bool {
	return f == math.Trunc(f) && math.Abs(f) < 1e21
}

func hasWholeFloat(v any) bool {
	switch t := v.(type) {
	case float64:
		return wholeFloat(t)
	case map[string]any:
		for _, e := range t {
			if hasWholeFloat(e) {
				return true
			}
		}
	case []any:
		for _, e := range t {
			if hasWholeFloat(e) {
				return true
			}
		}
	}
	return false
}

func copyFloats(v any) any {
	switch t := v.(type) {
	case float64:
		if wholeFloat(t) {
			return PyFloat(t)
		}
	case map[string]any:
		out := make(map[string]any, len(t))
		for k, e := range t {
			out[k] = copyFloats(e)
		}
		return out
	case []any:
		out := make([]any, len(t))
		for i, e := range t {
			out[i] = copyFloats(e)
		}
		return out
	}
	return v
}

// PyFloat is a float64 that encodes to json as Python's repr writes a
// float: the shortest digits that read back exactly, with at least one
// decimal in fixed notation for exponents from -4 to 15 (3.0, -0.0,
// 1000000000000000.0), else 1e+16, 1e-05. Python reads it back as a
// float, never an int.
type PyFloat float64

// MarshalJSON implements json.Marshaler. NaN and ±Inf are an error, as
// JSON has no such numbers.
func (f PyFloat) MarshalJSON() ([]byte, error) {
	x := float64(f)
	if math.IsInf(x, 0) || math.IsNaN(x) {
		return json.Marshal(x)
	}
	e := strconv.FormatFloat(x, 'e', -1, 64)
	_, exp, _ := strings.Cut(e, "e")
	if n, _ := strconv.Atoi(exp); n < -4 || n >= 16 {
		return []byte(e), nil
	}
	s := strconv.FormatFloat(x, 'f', -1, 64)
	if !strings.Contains(s, ".") {
		s += ".0"
	}
	return []byte(s), nil
}
