package main

import (
	"encoding/json"
	"math"
	"strconv"
	"strings"
)

// marshalValue writes a decoded reply value as JSON the way Celery's
// command line prints it (Python's json): a float keeps its fraction, so
// 3.0 prints as 3.0, not 3, and stays apart from the int 3. Integers are
// exact (the codecs decode them as int64, uint64 or json.Number).
func marshalValue(v any) ([]byte, error) { return json.Marshal(pyFloats(v)) }

// pyFloats returns v with every float64 inside plain maps and lists
// wrapped to print as Python does.
func pyFloats(v any) any {
	switch x := v.(type) {
	case float64:
		return pyFloat(x)
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[k] = pyFloats(e)
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = pyFloats(e)
		}
		return out
	}
	return v
}

// pyFloat prints as Python's repr of a float: the shortest digits that
// read back exactly, in fixed notation with at least one decimal for
// exponents from -4 to 15, else as 1e+16.
type pyFloat float64

// MarshalJSON implements json.Marshaler.
func (f pyFloat) MarshalJSON() ([]byte, error) {
	x := float64(f)
	if math.IsInf(x, 0) || math.IsNaN(x) {
		return json.Marshal(x) // an error: JSON has no such numbers
	}
	e := strconv.FormatFloat(x, 'e', -1, 64)
	_, exp, _ := strings.Cut(e, "e")
	n, _ := strconv.Atoi(exp)
	if n < -4 || n >= 16 {
		return []byte(e), nil
	}
	s := strconv.FormatFloat(x, 'f', -1, 64)
	if !strings.Contains(s, ".") {
		s += ".0"
	}
	return []byte(s), nil
}
