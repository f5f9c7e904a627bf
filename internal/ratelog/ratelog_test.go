package ratelog

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

func TestBurstThenSuppressedCount(t *testing.T) {
	var buf bytes.Buffer
	l := New(slog.New(slog.NewTextHandler(&buf, nil)), "node", "w1")
	now := time.Unix(1000, 0)
	l.now = func() time.Time { return now }
	for range 1000 {
		l.Warn("dropped")
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	assert.Len(t, lines, Burst, "a flood is cut to the burst")
	assert.Contains(t, lines[0], "node=w1")

	buf.Reset()
	now = now.Add(time.Second)
	l.Error("dropped again")
	out := buf.String()
	assert.Contains(t, out, "level=ERROR")
	assert.Contains(t, out, "suppressed=980", "the next line says how many were left out")
}
