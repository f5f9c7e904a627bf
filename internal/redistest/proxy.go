package redistest

import (
	"net"
	"sync"
	"sync/atomic"
)

// Proxy forwards loopback TCP connections to a target. Blackhole makes
// the connections open so far go silent without closing, the way a socket
// dies behind a NAT or a proxy; connections made later work again.
type Proxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	conns  []*proxied
	cut    bool
	wg     sync.WaitGroup
}

type proxied struct {
	client, server net.Conn
	silent         atomic.Bool
	mu             sync.Mutex
	sent           []string // the client's first reads, in order (see Sent)
}

// Bounds of what Sent keeps of each connection.
const (
	keptReads = 64
	keptBytes = 4 << 10
)

// NewProxy listens on a free loopback port and forwards to target until
// the test ends.
func NewProxy(t TB, target string) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{ln: ln, target: target}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

// Addr is the proxy's host:port.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		cut := p.cut
		p.mu.Unlock()
		if cut {
			c.Close()
			continue
		}
		s, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		pc := &proxied{client: c, server: s}
		p.mu.Lock()
		p.conns = append(p.conns, pc)
		p.mu.Unlock()
		p.wg.Add(2)
		go p.pipe(pc, c, s)
		go p.pipe(pc, s, c)
	}
}

// pipe copies src to dst, dropping the bytes once the pair is silent.
func (p *Proxy) pipe(pc *proxied, src, dst net.Conn) {
	defer p.wg.Done()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && src == pc.client {
			pc.mu.Lock()
			if len(pc.sent) < keptReads {
				pc.sent = append(pc.sent, string(buf[:min(n, keptBytes)]))
			}
			pc.mu.Unlock()
		}
		if n > 0 && !pc.silent.Load() {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			_ = dst.Close()
			return
		}
	}
}

// Sent returns, for each connection in the order they were made, what
// the client sent, one string per read (at most 64 reads of 4 KiB each).
// A client that waits for the answer to each write before the next, as a
// Redis client does between round trips, shows one round trip per read.
func (p *Proxy) Sent() [][]string {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([][]string, len(p.conns))
	for i, pc := range p.conns {
		pc.mu.Lock()
		out[i] = append([]string(nil), pc.sent...)
		pc.mu.Unlock()
	}
	return out
}

// Blackhole silences every connection open now.
func (p *Proxy) Blackhole() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, pc := range p.conns {
		pc.silent.Store(true)
	}
}

// Cut closes every connection open now and refuses new ones until
// Restore: the network between client and server is down.
func (p *Proxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = true
	for _, pc := range p.conns {
		_ = pc.client.Close()
		_ = pc.server.Close()
	}
}

// Restore lets new connections through again after Cut.
func (p *Proxy) Restore() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = false
}

func (p *Proxy) close() {
	_ = p.ln.Close()
	p.mu.Lock()
	for _, pc := range p.conns {
		_ = pc.client.Close()
		_ = pc.server.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}
