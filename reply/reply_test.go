package reply_test

import (
	"math"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gopidbox/pidbox/reply"
)

// Python's json writes float('inf') and float('nan') as Infinity and NaN;
// a Celery worker's conf reply holds them.
func TestAsPythonNonFinite(t *testing.T) {
	r := reply.Reply{Node: "celery@h", ContentType: "application/json",
		Value: reply.Raw(`{"worker_max_tasks": Infinity, "lo": -Infinity, "x": NaN, "n": 3}`)}
	m, err := reply.As[map[string]any](r)
	require.NoError(t, err)
	assert.Equal(t, math.Inf(1), m["worker_max_tasks"])
	assert.Equal(t, math.Inf(-1), m["lo"])
	assert.True(t, math.IsNaN(m["x"].(float64)))
	assert.Equal(t, int64(3), m["n"])

	f, err := reply.As[float64](reply.Reply{Node: "n", ContentType: "application/json", Value: reply.Raw("-Infinity")})
	require.NoError(t, err)
	assert.Equal(t, math.Inf(-1), f)

	_, err = reply.As[map[string]int](r)
	assert.ErrorIs(t, err, reply.ErrNonFinite)
	assert.ErrorContains(t, err, `celery@h`)
	_, err = reply.As[struct {
		Max float64 `json:"worker_max_tasks"`
		X   any     `json:"x"`
	}](r)
	assert.ErrorIs(t, err, reply.ErrNonFinite, "a typed float64 field is refused, never a wrong number")

	// Malformed text is still an error, not a non-finite number.
	_, err = reply.As[any](reply.Reply{Node: "n", ContentType: "application/json", Value: reply.Raw("[Infinityx]")})
	assert.Error(t, err)
}
