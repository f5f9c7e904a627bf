package amqp

import (
	"bufio"
	"encoding/binary"
	"io"
	"net"
)

// AMQP frame types.
const (
	frameMethod    = 1
	frameHeader    = 2
	frameBody      = 3
	frameHeartbeat = 8
)

// sizeGuard is the connection as amqp091 reads it: AMQP frames pass
// through unchanged, except a message whose content header announces a
// body above limit. Its header is passed on with a body size of 0 and its
// body frames are discarded as they arrive, so an oversized message costs
// no memory; the client sees an empty message, which the transport drops.
type sizeGuard struct {
	net.Conn
	r       *bufio.Reader
	limit   uint64
	refused func(size uint64)

	pending []byte            // frame bytes ready for Read
	hbuf    []byte            // the last content header frame
	buf     [7 + 12]byte      // a frame header and a content header's fixed part
	pass    int64             // payload bytes (and the frame end) to copy through
	skip    map[uint16]uint64 // channel -> body bytes still to discard
	raw     bool              // not AMQP frames (a protocol header): copy everything
	started bool
}

// maxHeaderFrame bounds the content header frames the guard reads whole
// (to fix their header table); larger ones stream through unfixed.
const maxHeaderFrame = 1 << 20

func newSizeGuard(c net.Conn, limit int, refused func(size uint64)) *sizeGuard {
	return &sizeGuard{Conn: c, r: bufio.NewReaderSize(c, 64<<10), limit: uint64(limit), refused: refused, skip: map[uint16]uint64{}}
}

// Read implements net.Conn.
func (g *sizeGuard) Read(p []byte) (int, error) {
	for {
		if len(g.pending) > 0 {
			n := copy(p, g.pending)
			g.pending = g.pending[n:]
			return n, nil
		}
		if g.raw {
			return g.r.Read(p)
		}
		if g.pass > 0 {
			if int64(len(p)) > g.pass {
				p = p[:g.pass]
			}
			n, err := g.r.Read(p)
			g.pass -= int64(n)
			return n, err
		}
		if err := g.next(); err != nil {
			return 0, err
		}
	}
}

// next reads the next frame's header and decides what to do with it.
func (g *sizeGuard) next() error {
	if !g.started {
		g.started = true
		// A server refusing our protocol version answers with a protocol
		// header ("AMQP...") instead of a frame.
		b, err := g.r.Peek(1)
		if err != nil {
			return err
		}
		if b[0] != frameMethod {
			g.raw = true
			return nil
		}
	}
	h := g.buf[:7]
	if _, err := io.ReadFull(g.r, h); err != nil {
		return err
	}
	typ, ch, size := h[0], binary.BigEndian.Uint16(h[1:3]), int64(binary.BigEndian.Uint32(h[3:7]))
	switch {
	case typ == frameBody && g.skip[ch] > 0:
		if _, err := g.r.Discard(int(size + 1)); err != nil {
			return err
		}
		if left := g.skip[ch]; uint64(size) >= left {
			delete(g.skip, ch)
		} else {
			g.skip[ch] = left - uint64(size)
		}
		return nil
	case typ == frameHeader && size >= 12 && size <= maxHeaderFrame:
		// A whole content header: small, as frame_max bounds it.
		need := 7 + int(size) + 1
		if cap(g.hbuf) < need {
			g.hbuf = make([]byte, need)
		}
		buf := g.hbuf[:need]
		copy(buf, h)
		if _, err := io.ReadFull(g.r, buf[7:]); err != nil {
			return err
		}
		payload := buf[7 : 7+size]
		if body := binary.BigEndian.Uint64(payload[4:12]); body > g.limit {
			binary.BigEndian.PutUint64(payload[4:12], 0)
			g.skip[ch] = body
			g.refused(body)
		}
		fixHeaders(payload)
		g.pending = buf
	case typ == frameHeader && size >= 12:
		hdr := g.buf[7:19]
		if _, err := io.ReadFull(g.r, hdr); err != nil {
			return err
		}
		if body := binary.BigEndian.Uint64(hdr[4:12]); body > g.limit {
			binary.BigEndian.PutUint64(hdr[4:12], 0)
			g.skip[ch] = body
			g.refused(body)
		}
		g.pending = g.buf[:19]
		g.pass = size - 12 + 1
	default:
		g.pending = h
		g.pass = size + 1
	}
	return nil
}

// fixHeaders rewrites, in a content header's payload, the field type 'L'
// that py-amqp writes for an int above 2^31-1 (a signed 64-bit value) to
// 'l', the same value as amqp091-go and the AMQP 0-9-1 errata spell it.
// amqp091-go cannot read 'L' and would drop the whole connection over one
// Kombu message whose clock passed 2^31. Anything it does not understand
// it leaves alone.
func fixHeaders(p []byte) {
	if len(p) < 14 {
		return
	}
	flags := binary.BigEndian.Uint16(p[12:14])
	off := 14
	for w := flags; w&1 != 0; off += 2 { // continuation flag words
		if off+2 > len(p) {
			return
		}
		w = binary.BigEndian.Uint16(p[off : off+2])
	}
	for _, bit := range []uint16{1 << 15, 1 << 14} { // content-type, content-encoding
		if flags&bit != 0 {
			if off >= len(p) {
				return
			}
			off += 1 + int(p[off])
		}
	}
	if flags&(1<<13) == 0 || off+4 > len(p) {
		return
	}
	n := int(binary.BigEndian.Uint32(p[off : off+4]))
	off += 4
	if n > len(p)-off {
		return
	}
	fixTable(p[off:off+n], 0)
}

func fixTable(t []byte, depth int) {
	for i := 0; i < len(t); {
		i += 1 + int(t[i]) // the field name
		if i = fixValue(t, i, depth); i < 0 {
			return
		}
	}
}

// fixValue fixes the value whose type byte is t[i] and returns the index
// after it, or -1 when it cannot tell.
func fixValue(t []byte, i, depth int) int {
	if depth > 32 || i >= len(t) {
		return -1
	}
	typ := t[i]
	i++
	size := 0
	switch typ {
	case 'V':
	case 't', 'b', 'B':
		size = 1
	case 's', 'u':
		size = 2
	case 'I', 'i', 'f':
		size = 4
	case 'D':
		size = 5
	case 'L':
		t[i-1] = 'l'
		size = 8
	case 'l', 'd', 'T':
		size = 8
	case 'S', 'x', 'A', 'F':
		if i+4 > len(t) {
			return -1
		}
		size = int(binary.BigEndian.Uint32(t[i : i+4]))
		i += 4
		if size > len(t)-i {
			return -1
		}
		switch typ {
		case 'F':
			fixTable(t[i:i+size], depth+1)
		case 'A':
			for j, end := i, i+size; j < end; {
				if j = fixValue(t[:end], j, depth+1); j < 0 {
					break
				}
			}
		}
	default:
		return -1
	}
	if size > len(t)-i {
		return -1
	}
	return i + size
}
