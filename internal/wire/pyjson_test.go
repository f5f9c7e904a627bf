package wire_test

import (
	"errors"
	"math"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gopidbox/pidbox/internal/wire"
)

// A Celery 5.2 worker's conf reply, cut short: Python's json writes
// float('inf') as Infinity.
const celeryConf = `{"celery@h": {"broker_connection_timeout": 4, "result_chord_join_timeout": 3.0, "worker_max_tasks": Infinity, "lo": -Infinity, "x": NaN, "s": "NaN"}}`

func TestDecodeReplyTakesPythonNonFinite(t *testing.T) {
	node, value, err := wire.DecodeReply(wire.JSON{}, []byte(celeryConf))
	require.NoError(t, err)
	assert.Equal(t, "celery@h", node)
	assert.Contains(t, string(value), `"worker_max_tasks": Infinity`, "the value is kept as the worker wrote it")

	var v map[string]any
	require.NoError(t, wire.UnmarshalReply(wire.JSON{}, value, &v))
	assert.Equal(t, math.Inf(1), v["worker_max_tasks"])
	assert.Equal(t, math.Inf(-1), v["lo"])
	assert.True(t, math.IsNaN(v["x"].(float64)), "%v", v["x"])
	assert.Equal(t, "NaN", v["s"], "strings are not touched")
	assert.Equal(t, int64(4), v["broker_connection_timeout"], "ints stay ints")
	assert.Equal(t, 3.0, v["result_chord_join_timeout"])

	// The reply re-encodes as it came (a Python peer reads it back).
	b, err := wire.EncodeReply(wire.JSON{}, node, value)
	require.NoError(t, err)
	_, again, err := wire.DecodeReply(wire.JSON{}, b)
	require.NoError(t, err)
	assert.Equal(t, string(value), string(again))
}

func TestUnmarshalReplyNonFiniteTargets(t *testing.T) {
	for text, want := range map[string]float64{"Infinity": math.Inf(1), " -Infinity ": math.Inf(-1), "NaN": math.NaN()} {
		var f float64
		require.NoError(t, wire.UnmarshalReply(wire.JSON{}, []byte(text), &f), text)
		if math.IsNaN(want) {
			assert.True(t, math.IsNaN(f), text)
		} else {
			assert.Equal(t, want, f, text)
		}
		var a any
		require.NoError(t, wire.UnmarshalReply(wire.JSON{}, []byte(text), &a), text)
		assert.IsType(t, float64(0), a, text)
	}
	// A genuine huge number is still +Inf, as Python's float reads it,
	// and a genuine NaN stand-in text is refused, never misread.
	var a any
	require.NoError(t, wire.UnmarshalReply(wire.JSON{}, []byte(`[1e99999, NaN]`), &a))
	assert.Equal(t, math.Inf(1), a.([]any)[0])

	for _, target := range []any{new(int), new(string), new(map[string]float64), new(wire.Raw), new(struct{ A float64 }), new(struct {
		A any
		B float64
	})} {
		err := wire.UnmarshalReply(wire.JSON{}, []byte(`{"A": 1, "B": Infinity}`), target)
		require.Error(t, err, "%T", target)
		assert.True(t, errors.Is(err, wire.ErrNonFinite), "%T: %v", target, err)
	}
	err := wire.UnmarshalReply(wire.JSON{}, []byte(`[7e99999, NaN]`), &a)
	assert.ErrorIs(t, err, wire.ErrNonFinite)

	// Strict everywhere else: the codec, requests, and tokens out of place.
	assert.Error(t, wire.JSON{}.Unmarshal([]byte(`Infinity`), &a))
	_, err = wire.DecodeRequest(wire.JSON{}, []byte(`{"method": "ping", "arguments": {"a": NaN}}`))
	assert.ErrorIs(t, err, wire.ErrMalformed)
	for _, bad := range []string{`[1NaN]`, `[NaN1]`, `-NaN`, `nan`, `"x"Infinity`, `{Infinity: 1}`, `[Infinity-]`} {
		assert.Error(t, wire.UnmarshalReply(wire.JSON{}, []byte(bad), &a), bad)
	}
	// msgpack carries non-finite floats natively.
	b, err := wire.Msgpack{}.Marshal(math.Inf(1))
	require.NoError(t, err)
	var f float64
	require.NoError(t, wire.UnmarshalReply(wire.Msgpack{}, b, &f))
	assert.Equal(t, math.Inf(1), f)
}
