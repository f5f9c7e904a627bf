package main

import (
	"encoding/json"
	"errors"
	"math"
	"testing"

	"github.com/gopidbox/pidbox/internal/wire"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The arguments reach the wire with the types they were written with, on
// both serializers: what a Python handler then sees is checked against
// real Kombu by internal/kombudiff; here, that the serialized payload
// holds ints as ints and floats as floats.
func TestArgumentsKeepTypes(t *testing.T) {
	argsJSON := `{"n": 3, "f": 3.0, "neg": -7, "big": 18446744073709551615, "p53": 9007199254740993,
		"nested": {"l": [1, 2.5, "x", null, true]}}`
	pairs := []string{"max=10", "soft=1.5", "level=debug", "rate_limit=10/m", "empty=", "quoted=\"3\"", "exp=1e3"}
	want := map[string]string{
		"n": "int 3", "f": "float 3.0", "neg": "int -7", "big": "int 18446744073709551615", "p53": "int 9007199254740993",
		"nested": "dict", "nested.l": "list 5", "nested.l[0]": "int 1", "nested.l[1]": "float 2.5", "nested.l[2]": `str "x"`,
		"nested.l[3]": "null None", "nested.l[4]": "bool True",
		"max": "int 10", "soft": "float 1.5", "level": `str "debug"`, "rate_limit": `str "10/m"`, "empty": `str ""`,
		"quoted": `str "3"`, "exp": "float 1000.0",
	}
	for _, c := range wire.Codecs() {
		t.Run(c.Name(), func(t *testing.T) {
			args, err := parseArguments(argsJSON, pairs, c.Name())
			require.NoError(t, err)
			payload, err := c.Marshal(args)
			require.NoError(t, err)
			got := flatten(t, c, payload)
			assert.Equal(t, want, got)
		})
	}
}

func TestArgumentsBigIntegers(t *testing.T) {
	// json carries any integer, as Python's json does.
	args, err := parseArguments(`{"x": 1267650600228229401496703205376}`, []string{"y=-1267650600228229401496703205376"}, "json")
	require.NoError(t, err)
	b, err := wire.JSON{}.Marshal(args)
	require.NoError(t, err)
	assert.JSONEq(t, `{"x": 1267650600228229401496703205376, "y": -1267650600228229401496703205376}`, string(b))

	// msgpack stops at 64 bits: a usage error naming the argument.
	for _, c := range []struct {
		argsJSON string
		pairs    []string
	}{
		{`{"x": 18446744073709551616}`, nil},
		{"", []string{"x=-9223372036854775809"}},
		{`{"x": [1, {"y": 1267650600228229401496703205376}]}`, nil},
	} {
		_, err := parseArguments(c.argsJSON, c.pairs, "msgpack")
		var ue usageError
		require.True(t, errors.As(err, &ue), "%v", err)
		assert.ErrorIs(t, err, errNumber)
		assert.Contains(t, err.Error(), "argument x: ")
		assert.Contains(t, err.Error(), "does not fit msgpack's 64 bits")
	}
	// Limits pass.
	args, err = parseArguments("", []string{"a=18446744073709551615", "b=-9223372036854775808"}, "msgpack")
	require.NoError(t, err)
	assert.Equal(t, map[string]any{"a": uint64(math.MaxUint64), "b": int64(math.MinInt64)}, args)
}

func TestArgumentsUnrepresentable(t *testing.T) {
	for _, ser := range []string{"json", "msgpack"} {
		for _, in := range []string{"x=1e400", "x=-1e999"} {
			_, err := parseArguments("", []string{in}, ser)
			assert.ErrorIs(t, err, errNumber, "%s %s", ser, in)
			assert.Contains(t, err.Error(), "beyond a float's range")
		}
		_, err := parseArguments(`{"x": [1e400]}`, nil, ser)
		assert.ErrorIs(t, err, errNumber)
	}
	for _, bad := range []string{`[1,2]`, `"x"`, `3`, `{"a": 1} x`, `{"a": `} {
		_, err := parseArguments(bad, nil, "json")
		var ue usageError
		assert.True(t, errors.As(err, &ue), "%q: %v", bad, err)
	}
	// Not JSON: a string, as before (NaN is no JSON number).
	args, err := parseArguments("", []string{"x=NaN", "y=1.2.3", "z={"}, "msgpack")
	require.NoError(t, err)
	assert.Equal(t, map[string]any{"x": "NaN", "y": "1.2.3", "z": "{"}, args)
}

// flatten decodes a payload and lists its leaves by path, with Python's
// view of their types.
func flatten(t *testing.T, c wire.Codec, payload []byte) map[string]string {
	t.Helper()
	var v any
	require.NoError(t, c.Unmarshal(payload, &v))
	out := map[string]string{}
	var walk func(path string, v any)
	walk = func(path string, v any) {
		switch x := v.(type) {
		case map[string]any:
			if path != "" {
				out[path] = "dict"
			}
			for k, e := range x {
				if path != "" {
					k = path + "." + k
				}
				walk(k, e)
			}
		case []any:
			out[path] = "list " + itoa(len(x))
			for i, e := range x {
				walk(path+"["+itoa(i)+"]", e)
			}
		case int64, uint64, json.Number:
			out[path] = "int " + jsonText(x)
		case float64:
			s := jsonText(x)
			if x == math.Trunc(x) {
				s += ".0"
			}
			out[path] = "float " + s
		case string:
			out[path] = "str " + jsonText(x)
		case bool:
			out[path] = map[bool]string{true: "bool True", false: "bool False"}[x]
		case nil:
			out[path] = "null None"
		default:
			t.Errorf("%s: unexpected %T", path, v)
		}
	}
	walk("", v)
	return out
}

func jsonText(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func itoa(i int) string { return jsonText(i) }

// Replies print as Celery prints them: floats keep their fraction, 64-bit
// integers every digit. The expectation is Python's json.dumps output.
func TestMarshalValueAsPython(t *testing.T) {
	b, err := marshalValue(map[string]any{"a": []any{1.0, int64(1), "x", 0.5, uint64(math.MaxUint64)}})
	require.NoError(t, err)
	assert.Equal(t, `{"a":[1.0,1,"x",0.5,18446744073709551615]}`, string(b))
}
