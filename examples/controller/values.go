package main

import (
	"bytes"
	"encoding/json"
	"maps"
	"math"
	"slices"
	"strconv"

	"github.com/gopidbox/pidbox/internal/wire"
)

// marshalValue writes a decoded reply value as JSON the way Celery's
// command line prints it (Python's json): a float keeps its fraction, so
// 3.0 prints as 3.0, not 3, and stays apart from the int 3. Integers are
// exact (the codecs decode them as int64, uint64 or json.Number). NaN and
// ±Inf are written NaN, Infinity and -Infinity, as Python's json.dumps
// writes them (not standard JSON).
func marshalValue(v any) ([]byte, error) {
	b, err := wire.JSON{}.Marshal(v)
	if err == nil || !hasNonFinite(v) {
		return b, err
	}
	return pyDumps(nil, v, "", ""), nil
}

// hasNonFinite reports whether a decoded tree holds NaN or ±Inf.
func hasNonFinite(v any) bool {
	switch x := v.(type) {
	case float64:
		return math.IsInf(x, 0) || math.IsNaN(x)
	case map[string]any:
		for _, e := range x {
			if hasNonFinite(e) {
				return true
			}
		}
	case []any:
		for _, e := range x {
			if hasNonFinite(e) {
				return true
			}
		}
	}
	return false
}

// pyDumps appends v as Python's json.dumps(v, sort_keys=True) writes it,
// with indent (and newline-separated items) when indent is not empty, or
// compact otherwise: NaN, Infinity and -Infinity for the non-finite
// floats, a float's repr for the others.
func pyDumps(out []byte, v any, indent, prefix string) []byte {
	sep, colon, inner := []byte(","), []byte(":"), prefix+indent
	if indent != "" {
		sep, colon = []byte(",\n"+inner), []byte(": ")
	}
	open := func(c byte) {
		out = append(out, c)
		if indent != "" {
			out = append(out, '\n')
			out = append(out, inner...)
		}
	}
	closing := func(c byte) {
		if indent != "" {
			out = append(out, '\n')
			out = append(out, prefix...)
		}
		out = append(out, c)
	}
	switch x := v.(type) {
	case float64:
		switch {
		case math.IsNaN(x):
			return append(out, "NaN"...)
		case math.IsInf(x, 1):
			return append(out, "Infinity"...)
		case math.IsInf(x, -1):
			return append(out, "-Infinity"...)
		}
		b, _ := wire.PyFloat(x).MarshalJSON()
		return append(out, b...)
	case int64:
		return strconv.AppendInt(out, x, 10)
	case uint64:
		return strconv.AppendUint(out, x, 10)
	case map[string]any:
		if len(x) == 0 {
			return append(out, "{}"...)
		}
		open('{')
		for i, k := range slices.Sorted(maps.Keys(x)) {
			if i > 0 {
				out = append(out, sep...)
			}
			out = appendJSON(out, k)
			out = append(out, colon...)
			out = pyDumps(out, x[k], indent, inner)
		}
		closing('}')
		return out
	case []any:
		if len(x) == 0 {
			return append(out, "[]"...)
		}
		open('[')
		for i, e := range x {
			if i > 0 {
				out = append(out, sep...)
			}
			out = pyDumps(out, e, indent, inner)
		}
		closing(']')
		return out
	}
	return appendJSON(out, v) // null, booleans, strings, json.Number
}

// appendJSON appends v as encoding/json writes it, without HTML escapes.
func appendJSON(out []byte, v any) []byte {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if enc.Encode(v) != nil {
		return append(out, "null"...)
	}
	return append(out, bytes.TrimSuffix(b.Bytes(), []byte("\n"))...)
}

// compactPy removes the whitespace outside strings from a JSON value that
// may hold Python's NaN and ±Infinity, where json.Compact refuses those.
func compactPy(b []byte) []byte {
	out := make([]byte, 0, len(b))
	inString, escaped := false, false
	for _, c := range b {
		switch {
		case inString && escaped:
			escaped = false
		case inString && c == '\\':
			escaped = true
		case inString:
			inString = c != '"'
		case c == '"':
			inString = true
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			continue
		}
		out = append(out, c)
	}
	return out
}

// marshalReplies writes the --json object, node name to reply value, with
// sorted names. A value that holds Python's NaN or ±Infinity (which
// json.Marshal refuses) is written as it came, compacted, as Python's
// json.dumps would write it.
func marshalReplies(values map[string]json.RawMessage) ([]byte, error) {
	if b, err := json.Marshal(values); err == nil {
		return b, nil
	}
	out := []byte{'{'}
	for i, n := range slices.Sorted(maps.Keys(values)) {
		if i > 0 {
			out = append(out, ',')
		}
		out = appendJSON(out, n)
		out = append(out, ':')
		var b bytes.Buffer
		if json.Compact(&b, values[n]) == nil {
			out = append(out, b.Bytes()...)
		} else {
			out = append(out, compactPy(values[n])...)
		}
	}
	return append(out, '}'), nil
}
