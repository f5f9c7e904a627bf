package celery

import (
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
)

// pyFloat formats f as Python's str(float) does for ordinary values:
// "20.0", "0.5".
func pyFloat(f float64) string {
	if math.IsInf(f, 0) || math.IsNaN(f) {
		return strings.ToLower(strconv.FormatFloat(f, 'f', -1, 64))
	}
	s := strconv.FormatFloat(f, 'f', -1, 64)
	if !strings.ContainsAny(s, ".e") {
		s += ".0"
	}
	return s
}

// pyRepr formats a value roughly as Python's repr would: strings quoted
// with single quotes (double when they hold a single quote and no double
// one), None, True and False, lists and dicts.
func pyRepr(v any) string {
	switch x := v.(type) {
	case nil:
		return "None"
	case string:
		q := "'"
		if strings.Contains(x, "'") && !strings.Contains(x, `"`) {
			q = `"`
		}
		r := strings.NewReplacer(`\`, `\\`, "\n", `\n`, "\t", `\t`, "\r", `\r`, q, `\`+q)
		return q + r.Replace(x) + q
	case bool:
		if x {
			return "True"
		}
		return "False"
	case float64:
		return pyFloat(x)
	case float32:
		return pyFloat(float64(x))
	case []string:
		parts := make([]string, len(x))
		for i, e := range x {
			parts[i] = pyRepr(e)
		}
		return "[" + strings.Join(parts, ", ") + "]"
	case []any:
		parts := make([]string, len(x))
		for i, e := range x {
			parts[i] = pyRepr(e)
		}
		return "[" + strings.Join(parts, ", ") + "]"
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		parts := make([]string, len(keys))
		for i, k := range keys {
			parts[i] = pyRepr(k) + ": " + pyRepr(x[k])
		}
		return "{" + strings.Join(parts, ", ") + "}"
	default:
		return fmt.Sprint(v)
	}
}

// humanBytes is celery.utils.debug.humanbytes: "44.734MB".
func humanBytes(n int64) string {
	units := []struct {
		div  int64
		name string
	}{{1 << 40, "TB"}, {1 << 30, "GB"}, {1 << 20, "MB"}, {1 << 10, "KB"}, {0, "b"}}
	for _, u := range units {
		if n >= u.div {
			f := float64(n)
			if u.div > 0 {
				f /= float64(u.div)
			}
			if f == math.Trunc(f) {
				return strconv.FormatInt(int64(f), 10) + u.name
			}
			return strconv.FormatFloat(f, 'g', 5, 64) + u.name
		}
	}
	return strconv.FormatInt(n, 10) + "b"
}

// Float is a float64 that JSON writes as Python writes a float: with a
// ".0" when whole ("2.0", not "2"), so Python peers read a float.
type Float float64

// MarshalJSON implements json.Marshaler.
func (f Float) MarshalJSON() ([]byte, error) {
	if math.IsInf(float64(f), 0) || math.IsNaN(float64(f)) {
		return nil, fmt.Errorf("json: unsupported value %v", float64(f))
	}
	s := strconv.FormatFloat(float64(f), 'f', -1, 64)
	if !strings.ContainsAny(s, ".e") {
		s += ".0"
	}
	return []byte(s), nil
}
