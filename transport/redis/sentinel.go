package redis

// Redis Sentinel: Kombu's sentinel:// URLs, the fanout channel whose name
// depends on the Kombu version, and pub/sub connections that follow a
// failover.

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gopidbox/pidbox/transport"
	goredis "github.com/redis/go-redis/v9"
)

// failoverAddr is the address go-redis puts in the options of a client
// made by NewFailoverClient; the transport recognizes Sentinel by it.
const failoverAddr = "FailoverClient"

// SentinelFanout says which pub/sub channels a transport on Sentinel
// publishes broadcasts to and listens on.
//
// Kombu before 5.4 never fills the database number into the fanout prefix
// on Sentinel, so Celery 5.2 and 5.3 fleets broadcast on the literal
// channel "/{db}.celery.pidbox"; Kombu 5.4 and later broadcast on
// "/0.celery.pidbox" (for database 0), as on plain Redis. A node listening
// on one of them is deaf to the other fleets.
type SentinelFanout string

// SentinelFanout values. The zero value means SentinelFanoutBoth.
const (
	// SentinelFanoutBoth publishes every broadcast to both channels and
	// listens on both, delivering a message that arrives on both once. It
	// reaches Kombu peers of every version, as Kombu's own
	// sentinel_fanout_compat option does. The default.
	SentinelFanoutBoth SentinelFanout = "both"
	// SentinelFanoutLiteral uses only the literal "/{db}." channel, as
	// Kombu 5.2 and 5.3 do.
	SentinelFanoutLiteral SentinelFanout = "literal"
	// SentinelFanoutDB uses only the channel with the database number
	// filled in, as Kombu 5.4 and later do.
	SentinelFanoutDB SentinelFanout = "db"
)

// fanoutPrefixes returns the fanout prefixes a transport publishes to and
// listens on: one on plain Redis and Cluster, one or two on Sentinel.
// An unknown SentinelFanout counts as SentinelFanoutBoth.
func fanoutPrefixes(o Options, sentinel bool) []string {
	filled := fanoutPrefix(o)
	if !sentinel || o.NoFanoutPrefix {
		return []string{filled}
	}
	literal := o.FanoutPrefix
	if literal == "" {
		literal = "/{db}."
	}
	switch o.SentinelFanout {
	case SentinelFanoutLiteral:
		return []string{literal}
	case SentinelFanoutDB:
		return []string{filled}
	}
	if literal == filled {
		return []string{filled}
	}
	return []string{literal, filled}
}

// topics are the pub/sub channels of a fanout exchange, one per fanout
// prefix.
func (t *Transport) topics(exchange, routingKey string) []string {
	out := make([]string, len(t.fanouts))
	for i, p := range t.fanouts {
		out[i] = t.topicOn(p, exchange, routingKey)
	}
	return out
}

// subscribePatterns are the PSUBSCRIBE patterns of a fanout binding, one
// per fanout prefix.
func (t *Transport) subscribePatterns(b transport.Binding) []string {
	out := make([]string, len(t.fanouts))
	for i, p := range t.fanouts {
		out[i] = t.subscribePatternOn(p, b)
	}
	return out
}

// publishFanout publishes msg on every channel of a fanout exchange, in
// one round trip.
func (t *Transport) publishFanout(ctx context.Context, exchange, routingKey string, msg []byte) error {
	if len(t.fanouts) == 1 {
		ch := t.topicOn(t.fanouts[0], exchange, routingKey)
		if t.cluster {
			return t.publishCluster(ctx, ch, msg)
		}
		return t.client.Publish(ctx, ch, msg).Err()
	}
	pipe := t.client.Pipeline()
	for _, ch := range t.topics(exchange, routingKey) {
		pipe.Publish(ctx, ch, msg)
	}
	_, err := pipe.Exec(ctx)
	return err
}

// dedup pairs the two copies of a broadcast that a subscription on two
// channels receives, and drops the second. Copies of one publish are
// byte-identical, and two different pidbox messages never are: each
// carries its own delivery_tag (a uuid). A copy pairs only with one that
// came on the other channel, so a message published twice on one channel
// is delivered twice, as on plain Redis.
type dedup struct {
	seed maphash.Seed
	ring [128]dedupEntry
	next int
}

type dedupEntry struct {
	hash    uint64
	pattern string // the subscription pattern the copy matched
	paired  bool
}

func newDedup() *dedup { return &dedup{seed: maphash.MakeSeed()} }

// seen reports whether msg, which matched pattern, is the second copy of
// a message that came on the other channel; otherwise it remembers msg.
func (d *dedup) seen(msg, pattern string) bool {
	h := maphash.String(d.seed, msg)
	for i := range d.ring {
		e := &d.ring[i]
		if e.hash == h && !e.paired && e.pattern != "" && e.pattern != pattern {
			e.paired = true
			return true
		}
	}
	d.ring[d.next] = dedupEntry{hash: h, pattern: pattern}
	d.next = (d.next + 1) % len(d.ring)
	return false
}

// connSet tracks the connections of a transport's blocking client, the
// one for blocking pops and, on Sentinel, pub/sub: go-redis moves its
// command pool to a new master, but not these.
type connSet struct {
	mu sync.Mutex
	m  map[*trackedConn]struct{}
}

// trackedConn is a connection in a connSet until it closes.
type trackedConn struct {
	net.Conn
	set *connSet
}

func (s *connSet) track(c net.Conn) net.Conn {
	tc := &trackedConn{Conn: c, set: s}
	s.mu.Lock()
	s.m[tc] = struct{}{}
	s.mu.Unlock()
	return tc
}

// Close implements net.Conn and forgets the connection.
func (c *trackedConn) Close() error {
	c.set.mu.Lock()
	delete(c.set.m, c)
	c.set.mu.Unlock()
	return c.Conn.Close()
}

// closeExcept closes the connections to servers other than addr, and
// returns how many it closed. A blocking pop or pub/sub read on one of
// them fails at once, and go-redis dials again, to the master.
func (s *connSet) closeExcept(addr string) int {
	s.mu.Lock()
	var stale []*trackedConn
	for c := range s.m {
		if c.RemoteAddr().String() != addr {
			stale = append(stale, c)
		}
	}
	s.mu.Unlock()
	for _, c := range stale {
		_ = c.Close()
	}
	return len(stale)
}

// masterAddr asks Sentinel (through the failover client's own dialer)
// which server is the master now.
func (t *Transport) masterAddr(ctx context.Context) (string, error) {
	conn, err := t.dialMaster(ctx, "tcp", failoverAddr)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	return conn.RemoteAddr().String(), nil
}

// watchMaster makes blocking pops and pub/sub follow a failover. go-redis
// moves its command pool to a new master, but a blocked pop or a pub/sub
// connection stays where it is: on a master that was demoted, or cut off
// from its clients, while it still answers, a node would be deaf. Every
// HealthCheckInterval the watcher asks Sentinel for the master and closes
// the connections to any other server; their readers reconnect, to the
// master.
func (t *Transport) watchMaster(stop chan struct{}) {
	defer t.wg.Done()
	tick := time.NewTicker(t.opts.HealthCheckInterval)
	defer tick.Stop()
	for {
		select {
		case <-stop:
			return
		case <-tick.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), t.opts.HealthCheckInterval)
		master, err := t.masterAddr(ctx)
		cancel()
		if err != nil {
			continue // the readers' own health checks report the trouble
		}
		if n := t.conns.closeExcept(master); n > 0 {
			t.opts.Logger.Info("pidbox redis: the master changed; moving connections to it", "addr", t.addr, "master", master, "connections", n)
		}
	}
}

// sentinelDialError explains a failed first PING on Sentinel: when the
// deadline ran out while go-redis retried, one plain dial of each sentinel
// shows whether any answers at all.
// A nil reply from the sentinels means they know no such master.
func sentinelDialError(ctx context.Context, fo *goredis.FailoverOptions, pingErr error) error {
	if errors.Is(pingErr, goredis.Nil) {
		return fmt.Errorf("the sentinels know no master named %q (master_name): %w", fo.MasterName, pingErr)
	}
	if ctx.Err() == nil {
		return pingErr
	}
	var first error
	for _, a := range fo.SentinelAddrs {
		dctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		c, err := (&net.Dialer{}).DialContext(dctx, "tcp", a)
		cancel()
		if err == nil {
			c.Close()
			return pingErr
		}
		first = cmp.Or(first, err)
	}
	return fmt.Errorf("none of the %d sentinels answers: %w", len(fo.SentinelAddrs), first)
}

// ParseSentinelURL turns Kombu's Sentinel URL into go-redis failover
// options, and applies the Kombu transport options it carries to opts:
//
//	sentinel://[user:password@]host:26379[/db];sentinel://host2:26380;...?master_name=NAME
//
// Each ";"-separated part names a sentinel. The user and password of the
// first part are the master's, as in Kombu. Parameters, on any part:
// master_name (required, as Kombu's transport option), sentinel_password
// and sentinel_username (Kombu: sentinel_kwargs), sentinel_fanout
// (both|literal|db, see SentinelFanout), global_keyprefix, fanout_prefix,
// fanout_patterns, and go-redis's failover parameters (dial_timeout, ...).
//
// The database is the first part's, as Kombu reads it: a different
// database on a later part is refused, since Kombu would ignore it and the
// two would not meet.
func ParseSentinelURL(rawURL string, opts *Options) (*goredis.FailoverOptions, error) {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("redis transport: bad sentinel URL %s: %s", Redact(rawURL), fmt.Sprintf(format, args...))
	}
	var addrs []string
	q := url.Values{}
	var first *url.URL
	db := ""
	for i, part := range strings.Split(rawURL, ";") {
		if strings.TrimSpace(part) == "" {
			continue
		}
		u, err := url.Parse(part)
		if err != nil {
			return nil, bad("%v", errors.Unwrap(err))
		}
		if u.Scheme != "sentinel" {
			return nil, bad("part %d has scheme %q, not sentinel", i+1, u.Scheme)
		}
		host := u.Hostname()
		if host == "" {
			host = "127.0.0.1"
		}
		port := u.Port()
		if port == "" {
			port = "26379"
		}
		addrs = append(addrs, net.JoinHostPort(host, port))
		for k, vs := range u.Query() {
			q[k] = vs
		}
		path := strings.Trim(u.Path, "/")
		if first == nil {
			first, db = u, path
		} else if path != "" && path != db {
			return nil, bad("database %q on part %d differs from the first part's %q: Kombu reads the database from the first part only; put it there", path, i+1, db)
		}
	}
	if first == nil {
		return nil, bad("no sentinel address")
	}
	dbn := 0
	if db != "" {
		n, err := strconv.Atoi(db)
		if err != nil || n < 0 {
			return nil, bad("database %q is not a number", db)
		}
		dbn = n
	}
	if err := takeKombuOptions(q, opts); err != nil {
		return nil, bad("%v", err)
	}
	if v, ok := take(q, "sentinel_fanout"); ok {
		switch f := SentinelFanout(v); f {
		case SentinelFanoutBoth, SentinelFanoutLiteral, SentinelFanoutDB:
			opts.SentinelFanout = f
		default:
			return nil, bad("sentinel_fanout=%q is not both, literal or db", v)
		}
	}
	name := q.Get("master_name")
	if name == "" {
		return nil, bad("master_name is missing (Kombu's transport option; add ?master_name=NAME)")
	}
	sentUser, _ := take(q, "sentinel_username")
	sentPass, _ := take(q, "sentinel_password")
	if !q.Has("protocol") {
		q.Set("protocol", "2") // RESP2, as Kombu, see ParseURL
	}
	// go-redis parses the remaining parameters (and refuses unknown ones).
	fo, err := goredis.ParseFailoverURL("redis://" + addrs[0] + "?" + q.Encode())
	if err != nil {
		return nil, bad("%v", err)
	}
	fo.SentinelAddrs = addrs
	fo.SentinelUsername, fo.SentinelPassword = sentUser, sentPass
	fo.Username = first.User.Username()
	fo.Password, _ = first.User.Password()
	fo.DB = dbn
	opts.DB = dbn
	return fo, nil
}
