package wire_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/gopidbox/pidbox/internal/wire"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

func TestExtraHeadersRoundTrip(t *testing.T) {
	in := &wire.Envelope{Body: []byte("{}"), ContentType: "application/json", Headers: wire.Headers{Clock: 3, Ticket: "t"}}
	require.True(t, in.Headers.Set("traceparent", traceparent))
	require.True(t, in.Headers.Set("tracestate", "a=1,b=2"))
	require.True(t, in.Headers.Set("tracestate", "a=3"), "a repeated key replaces")
	for _, k := range []string{"compression", "Compression", "clock", "EXPIRES", "ticket"} {
		assert.False(t, in.Headers.Set(k, "x"), "%s is Kombu's", k)
	}
	assert.False(t, in.Headers.Set("", "x"))
	assert.False(t, in.Headers.Set("k", "line\nbreak"))
	assert.False(t, in.Headers.Set("k", strings.Repeat("v", wire.MaxHeaderValue+1)))
	assert.False(t, in.Headers.Set(strings.Repeat("k", wire.MaxHeaderKey+1), "v"))

	data := wire.Encode(in)
	require.True(t, json.Valid(data), "%s", data)
	var generic struct {
		Headers map[string]any `json:"headers"`
	}
	require.NoError(t, json.Unmarshal(data, &generic))
	assert.Equal(t, map[string]any{"clock": 3.0, "expires": 0.0, "ticket": "t", "traceparent": traceparent, "tracestate": "a=3"}, generic.Headers)

	out, err := wire.Decode(data, 0)
	require.NoError(t, err)
	assert.Equal(t, traceparent, out.Headers.Get("traceparent"))
	assert.Equal(t, "a=3", out.Headers.Get("tracestate"))
	assert.Equal(t, []string{"traceparent", "tracestate"}, out.Headers.Keys())
	assert.Zero(t, out.IgnoredHeaders)

	// Extra headers set directly, bypassing Set, are still checked.
	in.Headers.Extra = append(in.Headers.Extra, wire.Header{Key: "compression", Value: "zlib"}, wire.Header{Key: "k", Value: "\x00"})
	assert.NotContains(t, string(wire.Encode(in)), "compression")
}

// Hostile extra headers are ignored and counted; what is kept stays within
// the bounds whatever the input.
func TestHostileHeaders(t *testing.T) {
	huge := strings.Repeat("f", 1<<20)
	cases := []struct {
		name    string
		headers string
		kept    map[string]string
		ignored int
	}{
		{"not a string", `"traceparent": 12, "tracestate": {"a": [1]}, "baggage": null`, nil, 3},
		{"huge", `"traceparent": "` + huge + `"`, nil, 1},
		{"huge key", `"` + huge + `": "x"`, nil, 1},
		{"control characters", `"traceparent": "00-\n-01", "k\u0001": "v"`, nil, 2},
		{"not ascii", `"traceparent": "00-\u00e9"`, nil, 1},
		{"compression is Kombu's", `"compression": "application/x-gzip"`, nil, 0},
		{"malformed but a string", `"traceparent": "zz"`, map[string]string{"traceparent": "zz"}, 0},
	}
	var many []string
	for i := range 100 {
		many = append(many, fmt.Sprintf(`"h%d": "v"`, i))
	}
	cases = append(cases, struct {
		name    string
		headers string
		kept    map[string]string
		ignored int
	}{"too many", strings.Join(many, ", "), nil, 100 - wire.MaxExtraHeaders})
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			data := []byte(`{"body": "", "headers": {"clock": 1, ` + c.headers + `}}`)
			e, err := wire.Decode(data, 0)
			require.NoError(t, err, "a bad extra header never fails the message")
			assert.Equal(t, uint64(1), e.Headers.Clock)
			assert.Equal(t, c.ignored, e.IgnoredHeaders)
			assert.LessOrEqual(t, len(e.Headers.Extra), wire.MaxExtraHeaders)
			for _, x := range e.Headers.Extra {
				assert.LessOrEqual(t, len(x.Value), wire.MaxHeaderValue)
			}
			if c.kept != nil {
				for k, v := range c.kept {
					assert.Equal(t, v, e.Headers.Get(k))
				}
			} else if c.name != "too many" {
				assert.Empty(t, e.Headers.Extra)
			}
			ref, err := wire.ReferenceDecode(data)
			require.NoError(t, err)
			assert.Equal(t, ref.Headers, e.Headers)
			assert.Equal(t, ref.IgnoredHeaders, e.IgnoredHeaders)
		})
	}
}

// An envelope without extra headers decodes with no more allocations than
// before they existed, and one with trace context costs its two strings.
func TestExtraHeadersAllocs(t *testing.T) {
	plain := wire.Encode(&wire.Envelope{Body: []byte("{}"), ContentType: "application/json", Headers: wire.Headers{Clock: 1}})
	traced := &wire.Envelope{Body: []byte("{}"), ContentType: "application/json", Headers: wire.Headers{Clock: 1}}
	traced.Headers.Set("traceparent", traceparent)
	tdata := wire.Encode(traced)
	base := testing.AllocsPerRun(100, func() { _, _ = wire.Decode(plain, 0) })
	withTrace := testing.AllocsPerRun(100, func() { _, _ = wire.Decode(tdata, 0) })
	assert.LessOrEqual(t, withTrace, base+2, "the extra slice and the value; the key is interned")
}
