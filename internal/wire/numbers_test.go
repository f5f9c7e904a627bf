package wire_test

import (
	"encoding/json"
	"errors"
	"math"
	"strings"
	"testing"

	"github.com/gopidbox/pidbox/internal/wire"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Integers decoded into interfaces stay integers, exact to 64 bits, and
// floats stay floats, in both codecs: what Python sent is what Go holds.
func TestNumbersIntoInterfaces(t *testing.T) {
	want := map[string]any{
		"small": int64(3), "neg": int64(-42), "f3": 3.0, "frac": 0.5,
		"p53": int64(1<<53 + 1), "max63": int64(math.MaxInt64), "min63": int64(math.MinInt64),
		"max64": uint64(math.MaxUint64), "u200": int64(200),
		"nested": []any{int64(1), map[string]any{"x": int64(2), "y": 2.5}},
	}
	jsonText := `{"small": 3, "neg": -42, "f3": 3.0, "frac": 0.5, "p53": 9007199254740993,
		"max63": 9223372036854775807, "min63": -9223372036854775808, "max64": 18446744073709551615,
		"u200": 200, "nested": [1, {"x": 2, "y": 2.5}]}`
	packed, err := wire.Msgpack{}.Marshal(want)
	require.NoError(t, err)
	for _, c := range []struct {
		codec wire.Codec
		data  []byte
	}{{wire.JSON{}, []byte(jsonText)}, {wire.Msgpack{}, packed}} {
		t.Run(c.codec.Name(), func(t *testing.T) {
			var m map[string]any
			require.NoError(t, c.codec.Unmarshal(c.data, &m))
			assert.Equal(t, want, m)

			var a any
			require.NoError(t, c.codec.Unmarshal(c.data, &a))
			assert.Equal(t, want, a)

			var s struct {
				Small  any            `json:"small"`
				Max64  any            `json:"max64"`
				Nested []any          `json:"nested"`
				Rest   map[string]any `json:"-"`
				N      int            `json:"neg"`
			}
			require.NoError(t, c.codec.Unmarshal(c.data, &s))
			assert.Equal(t, int64(3), s.Small)
			assert.Equal(t, uint64(math.MaxUint64), s.Max64)
			assert.Equal(t, want["nested"], s.Nested)
			assert.Equal(t, -42, s.N)
		})
	}
}

func TestJSONBeyond64Bits(t *testing.T) {
	var m map[string]any
	require.NoError(t, wire.JSON{}.Unmarshal([]byte(`{"big": 1267650600228229401496703205376, "neg": -18446744073709551616}`), &m))
	assert.Equal(t, json.Number("1267650600228229401496703205376"), m["big"])
	assert.Equal(t, json.Number("-18446744073709551616"), m["neg"])

	// Back to json: the same digits. To msgpack: an error, before anything
	// is written, as Python's msgpack refuses such an integer too.
	out, err := wire.JSON{}.Marshal(m)
	require.NoError(t, err)
	assert.JSONEq(t, `{"big": 1267650600228229401496703205376, "neg": -18446744073709551616}`, string(out))
	_, err = wire.Msgpack{}.Marshal(m)
	require.Error(t, err)
	assert.True(t, errors.Is(err, wire.ErrUnsupported), "%v", err)
	assert.Contains(t, err.Error(), "does not fit msgpack's 64 bits")

	// A json.Number that fits is written as the number it stands for.
	b, err := wire.Msgpack{}.Marshal(map[string]any{"n": json.Number("3"), "f": json.Number("3.0"), "l": []any{json.Number("18446744073709551615")}})
	require.NoError(t, err)
	var back map[string]any
	require.NoError(t, wire.Msgpack{}.Unmarshal(b, &back))
	assert.Equal(t, map[string]any{"n": int64(3), "f": 3.0, "l": []any{uint64(math.MaxUint64)}}, back)
}

func TestJSONUnmarshalErrorsUnchanged(t *testing.T) {
	var a any
	assert.Error(t, wire.JSON{}.Unmarshal([]byte(`{"a": 1} x`), &a))
	assert.Error(t, wire.JSON{}.Unmarshal([]byte(`{"a": `), &a))
	assert.Error(t, wire.JSON{}.Unmarshal([]byte(``), &a))
	var m map[string]any
	assert.Error(t, wire.JSON{}.Unmarshal([]byte(`[1]`), &m))
	require.NoError(t, wire.JSON{}.Unmarshal([]byte(" {\"a\": 1e400} \n"), &m))
	assert.True(t, math.IsInf(m["a"].(float64), 1), "1e400 is inf, as Python's json reads it")
}

// A string that is not UTF-8 would make Python's msgpack refuse the whole
// message: the encoder refuses it instead, wherever it sits; bytes go as
// bin.
func TestMsgpackRefusesInvalidUTF8(t *testing.T) {
	type S struct {
		Name string `json:"name"`
	}
	for _, v := range []any{"a\xffb", map[string]any{"k": []any{"ok", "\xc3"}}, S{Name: "x\x80"}, map[string]any{"\xff": 1},
		strings.Repeat("é", 40) + "\xff", strings.Repeat("x", 300) + "\xfe"} {
		_, err := wire.Msgpack{}.Marshal(v)
		require.Error(t, err, "%q", v)
		assert.ErrorIs(t, err, wire.ErrUnsupported)
		assert.Contains(t, err.Error(), "not valid UTF-8")
	}
	for _, v := range []any{"héllo ✓ 🎉", []byte("\xff\x00"), map[string]any{"b": []byte{0xc3}, "s": "ok"}, strings.Repeat("é", 300)} {
		_, err := wire.Msgpack{}.Marshal(v)
		assert.NoError(t, err, "%q", v)
	}
	// Nor is such a string read, as Python's msgpack would not read it.
	var v any
	err := wire.Msgpack{}.Unmarshal([]byte("\xa3a\xffb"), &v)
	assert.ErrorIs(t, err, wire.ErrUnsupported)
	_, _, err = wire.DecodeReply(wire.Msgpack{}, []byte("\x81\xa50000\xa10"))
	assert.ErrorIs(t, err, wire.ErrMalformed)
	require.NoError(t, wire.Msgpack{}.Unmarshal([]byte("\xc4\x01\xff"), &v), "bin holds any bytes")
	assert.Equal(t, []byte{0xff}, v)
}

// Whole floats in plain trees are written as Python writes them, so a
// Python peer reads floats; the expectations are Python's json.dumps.
func TestJSONFloatsAsPython(t *testing.T) {
	for _, c := range []struct {
		f    float64
		want string
	}{
		{3.0, "3.0"}, {0.0, "0.0"}, {math.Copysign(0, -1), "-0.0"}, {0.1, "0.1"}, {1e15, "1000000000000000.0"},
		{1e16, "1e+16"}, {1e20, "1e+20"}, {1e21, "1e+21"}, {1.5e-7, "1.5e-07"}, {0.0001, "0.0001"}, {1e-5, "1e-05"},
		{1e300, "1e+300"}, {123456.789, "123456.789"}, {float64(1 << 53), "9007199254740992.0"}, {-2.5, "-2.5"},
	} {
		b, err := wire.PyFloat(c.f).MarshalJSON()
		require.NoError(t, err)
		assert.Equal(t, c.want, string(b), "%v", c.f)
		// As a tree, through the codec: a whole float as Python writes it;
		// others as encoding/json does (1e-05 as 0.00001), a float either way.
		b, err = wire.JSON{}.Marshal(map[string]any{"l": []any{c.f}})
		require.NoError(t, err)
		if c.f == math.Trunc(c.f) {
			assert.Equal(t, `{"l":[`+c.want+`]}`, string(b))
		}
		var back map[string]any
		require.NoError(t, wire.JSON{}.Unmarshal(b, &back))
		assert.Equal(t, math.Float64bits(c.f), math.Float64bits(back["l"].([]any)[0].(float64)), "%v reads back exactly", c.f)
	}
	b, err := wire.EncodeReply(wire.JSON{}, "n@h", map[string]any{"x": 3.0, "i": int64(3)})
	require.NoError(t, err)
	assert.JSONEq(t, `{"n@h": {"x": 3.0, "i": 3}}`, string(b))
	assert.Contains(t, string(b), `"x":3.0`)
	_, err = wire.JSON{}.Marshal(map[string]any{"x": math.Inf(1)})
	assert.Error(t, err)
	// A struct's float64 field keeps encoding/json's form: the known limit.
	b, err = wire.JSON{}.Marshal(struct {
		F float64 `json:"f"`
	}{3})
	require.NoError(t, err)
	assert.Equal(t, `{"f":3}`, string(b))
}
