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
	buf     [7 + 12]byte      // a frame header and a content header's fixed part
	pass    int64             // payload bytes (and the frame end) to copy through
	skip    map[uint16]uint64 // channel -> body bytes still to discard
	raw     bool              // not AMQP frames (a protocol header): copy everything
	started bool
}

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
