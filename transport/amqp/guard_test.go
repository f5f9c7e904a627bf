package amqp

import (
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// conn is a net.Conn whose reads come from r.
type conn struct {
	net.Conn
	r io.Reader
}

func (c conn) Read(p []byte) (int, error) { return c.r.Read(p) }

func frameBytes(typ byte, ch uint16, payload []byte) []byte {
	b := []byte{typ, byte(ch >> 8), byte(ch)}
	b = binary.BigEndian.AppendUint32(b, uint32(len(payload)))
	b = append(b, payload...)
	return append(b, 0xCE)
}

// contentHeader is a content header whose headers table holds clock as
// py-amqp writes a big int ('L'), inside a nested table and an array too.
func contentHeader(bodySize uint64) []byte {
	table := []byte{5}
	table = append(table, "clock"...)
	table = append(table, 'L')
	table = binary.BigEndian.AppendUint64(table, 3_000_000_000)
	inner := append([]byte{1, 'n', 'L'}, make([]byte, 8)...)
	table = append(table, 1, 't', 'F')
	table = binary.BigEndian.AppendUint32(table, uint32(len(inner)))
	table = append(table, inner...)
	arr := append([]byte{'L'}, make([]byte, 8)...)
	table = append(table, 1, 'a', 'A')
	table = binary.BigEndian.AppendUint32(table, uint32(len(arr)))
	table = append(table, arr...)

	p := []byte{0, 60, 0, 0}
	p = binary.BigEndian.AppendUint64(p, bodySize)
	p = binary.BigEndian.AppendUint16(p, 1<<15|1<<13) // content-type, headers
	p = append(p, 16)
	p = append(p, "application/json"...)
	p = binary.BigEndian.AppendUint32(p, uint32(len(table)))
	return append(p, table...)
}

func readAll(t *testing.T, in []byte, limit int) ([]byte, int) {
	t.Helper()
	refused := 0
	g := newSizeGuard(conn{r: bytes.NewReader(in)}, limit, func(uint64) { refused++ })
	out, err := io.ReadAll(g)
	require.NoError(t, err)
	return out, refused
}

func TestGuardFixesBigInts(t *testing.T) {
	in := append(frameBytes(frameMethod, 1, []byte{0, 60, 0, 60}), frameBytes(frameHeader, 1, contentHeader(2))...)
	in = append(in, frameBytes(frameBody, 1, []byte("{}"))...)
	out, refused := readAll(t, in, 100)
	assert.Zero(t, refused)
	assert.Equal(t, len(in), len(out))
	assert.Equal(t, 0, bytes.Count(out, []byte{'L'}), "every 'L' became 'l'")
	assert.Equal(t, bytes.ReplaceAll(in, []byte{'L'}, []byte{'l'}), out)
}

func TestGuardSkipsLargeBodies(t *testing.T) {
	body := bytes.Repeat([]byte("x"), 300)
	in := frameBytes(frameMethod, 1, []byte{0, 60, 0, 60})
	in = append(in, frameBytes(frameHeader, 1, contentHeader(uint64(len(body))))...)
	in = append(in, frameBytes(frameBody, 1, body[:200])...)
	in = append(in, frameBytes(frameHeartbeat, 0, nil)...)
	in = append(in, frameBytes(frameBody, 1, body[200:])...)
	in = append(in, frameBytes(frameMethod, 1, []byte{0, 60, 0, 60})...)
	out, refused := readAll(t, in, 100)
	assert.Equal(t, 1, refused)
	assert.NotContains(t, string(out), "xxx", "the body was skipped")
	assert.Equal(t, 2, bytes.Count(out, frameBytes(frameMethod, 1, []byte{0, 60, 0, 60})))
	assert.Contains(t, string(out), string(frameBytes(frameHeartbeat, 0, nil)))
}

// Whatever a broker sends, the guard neither panics nor grows beyond a
// frame.
func FuzzGuard(f *testing.F) {
	f.Add(append(frameBytes(frameMethod, 1, []byte{0, 60, 0, 60}), frameBytes(frameHeader, 1, contentHeader(2))...))
	f.Add(frameBytes(frameHeader, 3, contentHeader(1<<40)))
	f.Add([]byte("AMQP\x00\x00\x09\x01"))
	f.Fuzz(func(t *testing.T, in []byte) {
		g := newSizeGuard(conn{r: bytes.NewReader(in)}, 64, func(uint64) {})
		_, _ = io.Copy(io.Discard, g)
	})
}
