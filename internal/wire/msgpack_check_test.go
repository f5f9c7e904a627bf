package wire_test

import (
	"strings"
	"testing"
	"time"

	"github.com/gopidbox/pidbox/internal/wire"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestMsgpackRefusesImplausibleLengths(t *testing.T) {
	c := wire.Msgpack{}
	hostile := map[string][]byte{
		"array32 of 4e9":  {0xdd, 0xff, 0xff, 0xff, 0xff, 0xc0},
		"map32 of 4e9":    {0xdf, 0xff, 0xff, 0xff, 0xff},
		"map16 of 65535":  {0xde, 0xff, 0xff, 0xa1, 'a', 0xc0},
		"str32 of 4e9":    {0xdb, 0xff, 0xff, 0xff, 0xff, 'x'},
		"bin32 of 4e9":    {0xc6, 0x7f, 0xff, 0xff, 0xff},
		"ext32 of 4e9":    {0xc9, 0x7f, 0xff, 0xff, 0xff, 0x01},
		"fixarray short":  {0x93, 0x01},
		"nested too deep": []byte(strings.Repeat("\x91", 5000) + "\xc0"),
		"unused code":     {0xc1},
	}
	for name, data := range hostile {
		start := time.Now()
		var v any
		err := c.Unmarshal(data, &v)
		assert.Error(t, err, name)
		assert.Less(t, time.Since(start), 50*time.Millisecond, name)
		_, err = wire.DecodeRequest(c, data)
		assert.ErrorIs(t, err, wire.ErrMalformed, name)
	}
	// Ordinary values still decode.
	for _, v := range []any{
		map[string]any{"a": []any{int8(1), "x", 2.5, nil, true, map[string]any{}}, "b": []byte{1, 2}},
		strings.Repeat("long string ", 1000),
		[]any{uint64(1) << 40, int64(-1) << 40, float32(1.5)},
	} {
		b, err := c.Marshal(v)
		require.NoError(t, err)
		var out any
		require.NoError(t, c.Unmarshal(b, &out), "%v", v)
	}
}
