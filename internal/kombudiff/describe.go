package kombudiff

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"math/big"
	"reflect"
	"sort"
	"strconv"
	"strings"
)

// Describe returns what a Python program would see for a value that Go
// decoded: ["int", "7"], ["float", "<IEEE-754 bits in hex>"], ["str", s],
// ["bytes", "<hex>"], ["list", [...]], ["dict", [[k, v], ...]] sorted by
// key, ["bool", b], ["null"]; ["go", "<type>", "<value>"] for a Go type
// that has no Python counterpart. kombu_peer.py's describe writes the same
// shape for Python values, so the two compare as JSON.
func Describe(v any) any {
	switch x := v.(type) {
	case nil:
		return []any{"null"}
	case bool:
		return []any{"bool", x}
	case int, int8, int16, int32, int64, uint, uint8, uint16, uint32, uint64:
		return []any{"int", fmt.Sprint(x)}
	case *big.Int:
		return []any{"int", x.String()}
	case json.Number:
		return describeNumber(string(x))
	case float32:
		return describeFloat(float64(x))
	case float64:
		return describeFloat(x)
	case string:
		return []any{"str", x}
	case []byte:
		return []any{"bytes", hex.EncodeToString(x)}
	case []any:
		items := make([]any, len(x))
		for i, e := range x {
			items[i] = Describe(e)
		}
		return []any{"list", items}
	case map[string]any:
		items := make([]any, 0, len(x))
		for k, e := range x {
			items = append(items, []any{Describe(k), Describe(e)})
		}
		return []any{"dict", sortItems(items)}
	case map[any]any:
		items := make([]any, 0, len(x))
		for k, e := range x {
			items = append(items, []any{Describe(k), Describe(e)})
		}
		return []any{"dict", sortItems(items)}
	}
	return []any{"go", reflect.TypeOf(v).String(), fmt.Sprint(v)}
}

// describeNumber describes a JSON number as Python's json module reads it:
// an int when it has no fraction or exponent, else a float.
func describeNumber(s string) any {
	if !strings.ContainsAny(s, ".eE") {
		if n, ok := new(big.Int).SetString(s, 10); ok {
			return []any{"int", n.String()}
		}
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil && !math.IsInf(f, 0) {
		return []any{"go", "json.Number", s}
	}
	return describeFloat(f)
}

func describeFloat(f float64) any {
	if math.IsNaN(f) {
		return []any{"float", "nan"}
	}
	return []any{"float", fmt.Sprintf("%016x", math.Float64bits(f))}
}

func sortItems(items []any) []any {
	sort.Slice(items, func(i, j int) bool {
		return sortKey(items[i].([]any)[0]) < sortKey(items[j].([]any)[0])
	})
	return items
}

// sortKey orders dict keys as kombu_peer.py does: type name, NUL, value.
func sortKey(d any) string {
	parts := d.([]any)
	if len(parts) < 2 {
		return parts[0].(string)
	}
	switch v := parts[1].(type) {
	case string:
		return parts[0].(string) + "\x00" + v
	case bool:
		return parts[0].(string) + "\x00" + strconv.FormatBool(v)
	default:
		b, _ := json.Marshal(v)
		return parts[0].(string) + "\x00" + string(b)
	}
}

// Same reports whether two descriptions are equal, whichever side (Go or
// the JSON that Python printed) made them.
func Same(a, b any) bool { return Canon(a) == Canon(b) }

// Canon is a description as compact JSON, for comparing and printing.
func Canon(d any) string {
	b, err := json.Marshal(d)
	if err != nil {
		return fmt.Sprintf("<%v>", err)
	}
	return string(b)
}

// Show renders a description readably: 3, 3.0, "text", b'00ff', [..], {..}.
func Show(d any) string {
	var sb strings.Builder
	show(&sb, d)
	return sb.String()
}

func show(sb *strings.Builder, d any) {
	parts, ok := d.([]any)
	if !ok || len(parts) == 0 {
		fmt.Fprintf(sb, "?%v", d)
		return
	}
	kind, _ := parts[0].(string)
	switch kind {
	case "null":
		sb.WriteString("None")
	case "bool":
		if parts[1] == true {
			sb.WriteString("True")
		} else {
			sb.WriteString("False")
		}
	case "int":
		fmt.Fprintf(sb, "%v", parts[1])
	case "float":
		s, _ := parts[1].(string)
		if bits, err := strconv.ParseUint(s, 16, 64); err == nil {
			f := math.Float64frombits(bits)
			t := strconv.FormatFloat(f, 'g', -1, 64)
			if !strings.ContainsAny(t, ".eIN") {
				t += ".0"
			}
			sb.WriteString(t)
		} else {
			sb.WriteString(s)
		}
	case "str":
		fmt.Fprintf(sb, "%q", parts[1])
	case "bytes":
		fmt.Fprintf(sb, "b'%v'", parts[1])
	case "list":
		sb.WriteByte('[')
		items, _ := parts[1].([]any)
		for i, it := range items {
			if i > 0 {
				sb.WriteString(", ")
			}
			show(sb, it)
		}
		sb.WriteByte(']')
	case "dict":
		sb.WriteByte('{')
		items, _ := parts[1].([]any)
		for i, it := range items {
			kv, _ := it.([]any)
			if i > 0 {
				sb.WriteString(", ")
			}
			if len(kv) == 2 {
				show(sb, kv[0])
				sb.WriteString(": ")
				show(sb, kv[1])
			}
		}
		sb.WriteByte('}')
	default:
		fmt.Fprintf(sb, "%v", parts[1:])
	}
}

// Flatten turns a description into path -> leaf lines, so two messages
// can be compared field by field: "body.arguments.a" -> "int 1". Maps and
// lists also get a line of their own ("dict", "list 2"), so a change of
// shape shows too.
func Flatten(prefix string, d any, out map[string]string) {
	parts, ok := d.([]any)
	if !ok || len(parts) == 0 {
		out[prefix] = fmt.Sprintf("? %v", d)
		return
	}
	kind, _ := parts[0].(string)
	switch kind {
	case "dict":
		items, _ := parts[1].([]any)
		out[prefix] = "dict"
		for _, it := range items {
			kv := it.([]any)
			key := Show(kv[0])
			if k := kv[0].([]any); k[0] == "str" {
				key = k[1].(string)
			}
			Flatten(join(prefix, key), kv[1], out)
		}
	case "list":
		items, _ := parts[1].([]any)
		out[prefix] = fmt.Sprintf("list %d", len(items))
		for i, it := range items {
			Flatten(fmt.Sprintf("%s[%d]", prefix, i), it, out)
		}
	default:
		out[prefix] = kind + " " + Show(d)
	}
}

func join(prefix, key string) string {
	if prefix == "" {
		return key
	}
	return prefix + "." + key
}
