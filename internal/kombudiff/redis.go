package kombudiff

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"
)

// RedisTap watches a Redis server with MONITOR, which sees every PUBLISH
// and every LPUSH, those run from Lua scripts included, without taking
// anything from anybody. Fleet i is Redis database dbs[i].
type RedisTap struct {
	conn     net.Conn
	marker   net.Conn
	markerRd *bufio.Reader
	rd       *bufio.Reader
	dbs      [2]int
	lines    chan string
	errc     chan error
	n        int

	closeOnce sync.Once
}

// NewRedisTap connects to addr (host:port) and starts monitoring.
func NewRedisTap(ctx context.Context, addr string, dbs [2]int) (*RedisTap, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("kombudiff: monitor %s: %w", addr, err)
	}
	marker, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("kombudiff: monitor %s: %w", addr, err)
	}
	t := &RedisTap{conn: conn, marker: marker, rd: bufio.NewReaderSize(conn, 1<<20), markerRd: bufio.NewReader(marker), dbs: dbs,
		lines: make(chan string, 1<<14), errc: make(chan error, 1)}
	if _, err := conn.Write([]byte("MONITOR\r\n")); err != nil {
		t.Close()
		return nil, err
	}
	if l, err := t.rd.ReadString('\n'); err != nil || !strings.HasPrefix(l, "+OK") {
		t.Close()
		return nil, fmt.Errorf("kombudiff: MONITOR: %q %v", l, err)
	}
	go t.read()
	return t, nil
}

func (t *RedisTap) read() {
	for {
		l, err := t.rd.ReadString('\n')
		if err != nil {
			t.errc <- err
			close(t.lines)
			return
		}
		t.lines <- strings.TrimRight(l, "\r\n")
	}
}

// Close stops monitoring.
func (t *RedisTap) Close() error {
	t.closeOnce.Do(func() {
		t.conn.Close()
		t.marker.Close()
	})
	return nil
}

// Sync returns the messages published since the previous Sync: it sends
// an ECHO marker and reads the monitor stream up to it, so every publish
// that returned before Sync is included.
func (t *RedisTap) Sync(ctx context.Context) ([]Frame, error) {
	t.n++
	mark := "kombudiff-mark-" + strconv.Itoa(t.n)
	if _, err := fmt.Fprintf(t.marker, "*2\r\n$4\r\nECHO\r\n$%d\r\n%s\r\n", len(mark), mark); err != nil {
		return nil, err
	}
	_ = t.marker.SetReadDeadline(time.Now().Add(5 * time.Second))
	for range 2 { // "$N" and the marker
		if _, err := t.markerRd.ReadString('\n'); err != nil {
			return nil, fmt.Errorf("kombudiff: marker: %w", err)
		}
	}
	var frames []Frame
	for {
		select {
		case l, ok := <-t.lines:
			if !ok {
				return nil, fmt.Errorf("kombudiff: monitor closed: %w", <-t.errc)
			}
			db, args, err := parseMonitor(l)
			if err != nil {
				return nil, err
			}
			if len(args) == 2 && strings.EqualFold(args[0], "echo") && args[1] == mark {
				return frames, nil
			}
			fs, err := t.frames(db, args)
			if err != nil {
				return nil, err
			}
			frames = append(frames, fs...)
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

func (t *RedisTap) fleet(db int) int {
	for i, d := range t.dbs {
		if d == db {
			return i
		}
	}
	return -1
}

var uuidRE = regexp.MustCompile(`[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}`)

// frames turns a PUBLISH or LPUSH into frames; other commands give none.
func (t *RedisTap) frames(db int, args []string) ([]Frame, error) {
	if len(args) < 3 {
		return nil, nil
	}
	cmd := strings.ToLower(args[0])
	var payloads []string
	switch cmd {
	case "publish":
		payloads = args[2:3]
	case "lpush", "rpush":
		payloads = args[2:]
	default:
		return nil, nil
	}
	fleet := t.fleet(db)
	if fleet < 0 {
		return nil, nil
	}
	// Names that embed the Redis db or a caller's uuid are made comparable.
	key := strings.Replace(args[1], "/"+strconv.Itoa(db)+".", "/{db}.", 1)
	key = uuidRE.ReplaceAllString(key, "{oid}")
	var out []Frame
	for _, p := range payloads {
		fields, err := EnvelopeFields([]byte(p))
		if err != nil {
			// Not a Kombu envelope, such as the token pidbox's Redis
			// transport pushes to end its own blocking pop on Close:
			// reported as it is, so a comparison still sees it.
			fields = map[string]string{"(not an envelope)": fmt.Sprintf("%q", p)}
		}
		out = append(out, Frame{Fleet: fleet, Route: cmd + " " + key, Fields: fields})
	}
	return out, nil
}

// parseMonitor parses `+1700000000.123456 [0 127.0.0.1:5555] "cmd" "arg"`
// (or `[0 lua]`), undoing Redis's sdscatrepr quoting.
func parseMonitor(l string) (db int, args []string, err error) {
	l = strings.TrimPrefix(l, "+")
	open := strings.IndexByte(l, '[')
	end := strings.IndexByte(l, ']')
	if open < 0 || end < open {
		return 0, nil, fmt.Errorf("kombudiff: monitor line %.80q", l)
	}
	dbText, _, _ := strings.Cut(l[open+1:end], " ")
	if db, err = strconv.Atoi(dbText); err != nil {
		return 0, nil, fmt.Errorf("kombudiff: monitor line %.80q", l)
	}
	s := l[end+1:]
	for {
		s = strings.TrimLeft(s, " ")
		if s == "" {
			return db, args, nil
		}
		if s[0] != '"' {
			return 0, nil, fmt.Errorf("kombudiff: monitor line %.80q", l)
		}
		var sb strings.Builder
		i := 1
		for ; i < len(s) && s[i] != '"'; i++ {
			if s[i] != '\\' || i+1 >= len(s) {
				sb.WriteByte(s[i])
				continue
			}
			i++
			switch s[i] {
			case 'n':
				sb.WriteByte('\n')
			case 'r':
				sb.WriteByte('\r')
			case 't':
				sb.WriteByte('\t')
			case 'a':
				sb.WriteByte('\a')
			case 'b':
				sb.WriteByte('\b')
			case 'x':
				if i+2 >= len(s) {
					return 0, nil, errors.New("kombudiff: bad \\x escape in monitor line")
				}
				v, err := strconv.ParseUint(s[i+1:i+3], 16, 8)
				if err != nil {
					return 0, nil, fmt.Errorf("kombudiff: bad \\x escape in monitor line: %w", err)
				}
				sb.WriteByte(byte(v))
				i += 2
			default:
				sb.WriteByte(s[i])
			}
		}
		if i >= len(s) {
			return 0, nil, fmt.Errorf("kombudiff: unterminated argument in monitor line %.80q", l)
		}
		args = append(args, sb.String())
		s = s[i+1:]
	}
}
