// Package redis is the pidbox transport for Redis, wire-compatible with
// Kombu's Redis transport (Kombu 5, Celery 5): Go nodes and controllers
// talk to each other and to Python processes on the same Redis.
//
// On Redis, as in Kombu:
//
//   - an exchange's bindings are the set "_kombu.binding.<exchange>", each
//     member routing_key + "\x06\x16" + pattern + "\x06\x16" + queue;
//   - a fanout exchange is a pub/sub channel "/<db>.<exchange>" that nodes
//     pattern-subscribe to;
//   - a queue is a list, with priority sub-lists "<queue>\x06\x163", "...6"
//     and "...9", pushed with LPUSH and popped from the right.
//
// Open takes Kombu's redis://, rediss:// and unix:// URLs, its Sentinel
// URL (sentinel://...;sentinel://...?master_name=NAME, see sentinel.go) and
// redis+cluster:// for Redis Cluster, where Kombu has no support and keys
// carry hash tags (see cluster.go).
//
// Beyond Kombu: every list pidbox pushes to gets a TTL in the same round
// trip; replies are delivered by one Lua script call and popped in batches;
// Go bindings carry leases, so bindings of dead processes disappear and the
// set of known nodes stays true; subscriptions are confirmed before
// Subscribe returns, health-checked with PINGs, and re-established, with
// their bindings, after a Redis restart or a dead socket.
package redis

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/gopidbox/pidbox/transport"
	goredis "github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
)

// Defaults for Options.
const (
	DefaultQueueTTL            = 5 * time.Minute
	DefaultLeaseTTL            = 15 * time.Second
	DefaultHealthCheckInterval = 5 * time.Second
	DefaultBlockTimeout        = time.Second
	DefaultMaxQueues           = 4096
)

// ErrTooManyQueues is returned, wrapped, by Subscribe when the transport
// already consumes Options.MaxQueues queues by blocking pops.
var ErrTooManyQueues = errors.New("redis transport: too many queues consumed at once")

// sep joins the parts of a binding member and names priority sub-lists,
// as in Kombu.
const sep = "\x06\x16"

// priorities are Kombu's priority steps; step 0 is the queue's own list.
var priorities = [...]string{"", sep + "3", sep + "6", sep + "9"}

// wakeToken is pushed to a list to end a blocking pop early on Close. It
// is never delivered.
const wakeToken = "\x00pidbox:wake"

// Options configure a Transport. The zero value works and behaves like
// Kombu's defaults.
type Options struct {
	// KeyPrefix is Kombu's global_keyprefix: prepended to every key and
	// channel name, publish and subscribe alike.
	KeyPrefix string
	// FanoutPrefix is Kombu's fanout_prefix as a string. Empty means Kombu's
	// default, "/{db}." ("{db}" becomes the database number).
	FanoutPrefix string
	// NoFanoutPrefix is Kombu's fanout_prefix=False: channels are named
	// after the exchange alone.
	NoFanoutPrefix bool
	// NoFanoutPatterns is Kombu's fanout_patterns=False: a routing key is
	// not appended to the channel name.
	NoFanoutPatterns bool
	// DB is the database number used in the fanout prefix. Open takes it
	// from the URL; NewFromClient from the client's options.
	DB int
	// QueueTTL is set on every list pidbox pushes to. Default 5 minutes.
	QueueTTL time.Duration
	// LeaseTTL is how long a binding outlives its process when the process
	// dies without unbinding. Leases are renewed every LeaseTTL/3.
	// Default 15s.
	LeaseTTL time.Duration
	// HealthCheckInterval is how often an idle subscription PINGs Redis; a
	// subscription whose PING goes unanswered for another interval is
	// re-established. Default 5s.
	HealthCheckInterval time.Duration
	// BlockTimeout bounds each blocking pop on a list. Default and
	// minimum 1s.
	BlockTimeout time.Duration
	// MaxQueues bounds the direct and topic subscriptions (queues, read
	// by blocking pops) the transport consumes at once: each holds a
	// connection of its own while it waits. Subscribe refuses more with
	// ErrTooManyQueues. Default 4096. The pool of these connections is
	// sized to it when the transport is made, at a cost that grows with
	// it (about 15 ns a slot): a short-lived process pays it at start-up.
	MaxQueues int
	// SentinelFanout chooses the broadcast channels on Sentinel, where
	// Kombu's depend on its version. Default SentinelFanoutBoth.
	SentinelFanout SentinelFanout
	// Logger receives connection trouble and recovery. Nil means
	// slog.Default().
	Logger *slog.Logger
}

func (o *Options) setDefaults() {
	if o.QueueTTL <= 0 {
		o.QueueTTL = DefaultQueueTTL
	}
	if o.LeaseTTL <= 0 {
		o.LeaseTTL = DefaultLeaseTTL
	}
	if o.HealthCheckInterval <= 0 {
		o.HealthCheckInterval = DefaultHealthCheckInterval
	}
	if o.BlockTimeout < time.Second {
		o.BlockTimeout = DefaultBlockTimeout
	}
	if o.MaxQueues <= 0 {
		o.MaxQueues = DefaultMaxQueues
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
}

// Transport is a transport.Transport on Redis. It is safe for concurrent
// use.
type Transport struct {
	opts     Options
	client   goredis.UniversalClient // commands and pub/sub
	blocking goredis.UniversalClient // blocking pops, one connection each
	owned    []goredis.UniversalClient
	addr     string
	fanout   string   // fanout channel prefix, with {db} filled in
	fanouts  []string // the fanout prefixes broadcasts use: two on Sentinel

	// dialMaster dials the master through a Sentinel failover client's
	// dialer; nil when not on Sentinel.
	dialMaster func(ctx context.Context, network, addr string) (net.Conn, error)
	conns      *connSet // the blocking client's connections, on Sentinel
	cluster    bool     // on Redis Cluster: keys carry hash tags

	noBLMPOP atomic.Bool // the server lacks BLMPOP (Redis < 7)

	co coalescer // publishes waiting to go out in one pipeline

	queueTTLArg  any          // ms(opts.QueueTTL), boxed once for pushArgs and queuePush
	bindingKeys  sync.Map     // exchange name -> its binding set's key
	bindingKeysN atomic.Int32 // entries in bindingKeys, at most maxBindingKeys

	// redial is signalled when the blocking client opens a connection
	// after one was lost: Redis may have restarted without its data, so
	// bindings are declared again at once rather than at the next lease
	// renewal. The first connections of new subscriptions, which declare
	// their bindings themselves, do not signal it.
	redial chan struct{}
	// lost is set when a pop or a subscription's connection fails, and
	// taken by the next dial of the blocking client.
	lost atomic.Bool

	// declMu orders binding declarations (read side) before and after
	// unbinding (write side), so a lease renewal in flight cannot re-add
	// a binding that was just removed.
	declMu sync.RWMutex

	mu      sync.Mutex
	closed  bool
	subs    map[*subscription]struct{}
	queues  int // subscriptions in subs that read by blocking pops
	seconds int // reply queues' second readers running (secondReaders at most)
	stop    chan struct{}
	wg      sync.WaitGroup
}

var _ transport.Transport = (*Transport)(nil)

// NewFromClient returns a transport on a client the caller already has; the
// caller keeps ownership of it and closes it after the transport. For a
// *goredis.Client or *goredis.ClusterClient, blocking pops run on a second
// client with the same options, so they never starve the caller's pool.
//
// A client from goredis.NewFailoverClient is Sentinel: broadcasts use both
// fanout channels (see SentinelFanout), and blocking pops and pub/sub
// follow the master (see sentinel.go). A *goredis.ClusterClient is Redis
// Cluster, with its own key layout (see cluster.go).
//
// Set ContextTimeoutEnabled in the client's options: without it go-redis
// lets a command outlive its context's deadline (up to its own read and
// write timeouts), and so would a call made while Redis is unresponsive.
func NewFromClient(client goredis.UniversalClient, opts Options) *Transport {
	t := newTransport(client, opts)
	switch c := client.(type) {
	case *goredis.Client:
		o := *c.Options()
		o.PoolSize, o.MinIdleConns, o.MaxIdleConns = t.opts.MaxQueues+secondReaders, 0, 0
		// The copy must not share the first client's push machinery.
		o.PushNotificationProcessor = nil
		o.MaintNotificationsConfig = &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}
		t.blocking = goredis.NewClient(&o)
		t.owned = append(t.owned, t.blocking)
		t.addr = o.Addr
		t.opts.DB = o.DB
		if o.Addr == failoverAddr && o.Dialer != nil {
			t.dialMaster = o.Dialer
			t.addr = "sentinel master"
		}
	case *goredis.ClusterClient:
		o := *c.Options()
		o.PoolSize = t.opts.MaxQueues + secondReaders
		t.blocking = goredis.NewClusterClient(&o)
		t.owned = append(t.owned, t.blocking)
		t.addr = strings.Join(o.Addrs, ",")
		t.cluster = true
	}
	t.fanout = fanoutPrefix(t.opts)
	t.fanouts = fanoutPrefixes(t.opts, t.dialMaster != nil)
	hook := dialHook{redial: t.redial, lost: &t.lost}
	if t.dialMaster != nil {
		t.conns = &connSet{m: map[*trackedConn]struct{}{}}
		hook.conns = t.conns
	}
	t.blocking.AddHook(hook)
	if t.cluster {
		t.hookClusterNodes(hook)
	}
	return t
}

// dialHook signals the connections the blocking client opens after one
// was lost and, on Sentinel, tracks every connection.
type dialHook struct {
	redial     chan struct{}
	lost       *atomic.Bool
	conns      *connSet // nil when not on Sentinel
	dialFailed func()   // on Cluster, reloads the slot maps
}

// DialHook implements goredis.Hook: it signals a successful dial that
// follows a lost connection.
func (h dialHook) DialHook(next goredis.DialHook) goredis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := next(ctx, network, addr)
		if err != nil && h.dialFailed != nil {
			h.dialFailed()
		}
		if err == nil {
			if h.conns != nil {
				c = h.conns.track(c)
			}
			if h.lost.Swap(false) {
				select {
				case h.redial <- struct{}{}:
				default:
				}
			}
		}
		return c, err
	}
}

// ProcessHook implements goredis.Hook and changes nothing.
func (h dialHook) ProcessHook(next goredis.ProcessHook) goredis.ProcessHook { return next }

// ProcessPipelineHook implements goredis.Hook and changes nothing.
func (h dialHook) ProcessPipelineHook(next goredis.ProcessPipelineHook) goredis.ProcessPipelineHook {
	return next
}

func newTransport(client goredis.UniversalClient, opts Options) *Transport {
	opts.setDefaults()
	return &Transport{
		opts:     opts,
		client:   client,
		blocking: client,
		addr:     "redis",
		fanout:   fanoutPrefix(opts),
		fanouts:  []string{fanoutPrefix(opts)},
		subs:     map[*subscription]struct{}{},
		stop:     make(chan struct{}),
		redial:   make(chan struct{}, 1),
		co:       coalescer{max: maxInflight},

		queueTTLArg: ms(opts.QueueTTL),
	}
}

func fanoutPrefix(o Options) string {
	if o.NoFanoutPrefix {
		return ""
	}
	p := o.FanoutPrefix
	if p == "" {
		p = "/{db}."
	}
	return strings.ReplaceAll(p, "{db}", fmt.Sprint(o.DB))
}

// Addr returns the address of the Redis server, for messages.
func (t *Transport) Addr() string { return t.addr }

func (t *Transport) errorf(format string, args ...any) error {
	return fmt.Errorf("redis %s: "+format, append([]any{t.addr}, args...)...)
}

// Ping checks that Redis answers. On a transport Open made on a single
// server, which makes no round trip itself, it is the way to find out
// before a first operation whether the server can be reached.
func (t *Transport) Ping(ctx context.Context) error {
	pipe := t.client.Pipeline() // a pipeline: it carries Open's check (see checkHook)
	pipe.Ping(ctx)
	_, err := pipe.Exec(ctx)
	if err != nil {
		return t.errorf("%w", err)
	}
	return nil
}

// check checks that Redis answers and reads its maxmemory-policy to warn
// about eviction (see checkEviction), in one round trip: CONFIG GET alone,
// since any answer, a refusal included (ACLs, managed Redis), shows the
// server is there. Open runs it on Sentinel and Cluster, which find their
// servers first; on a single server the check rides with the first
// pipeline instead (see checkHook).
func (t *Transport) check(ctx context.Context) error {
	policy := t.client.ConfigGet(ctx, "maxmemory-policy")
	if err := policy.Err(); err != nil {
		// The server's own refusal is an error of go-redis's reply type
		// as it is; anything else (a dial, a deadline, a Sentinel that
		// does not know the master, which wraps one) means no answer.
		if _, answered := err.(goredis.Error); !answered {
			return err
		}
	}
	t.checkEviction(policy)
	return nil
}

// Key names, with the global key prefix.

// On Cluster, every key of an exchange also carries the exchange's hash
// tag (see slotTag), so each script touches one slot.

func (t *Transport) key(name string) string { return t.opts.KeyPrefix + name }
func (t *Transport) bindingKey(exchange string) string {
	// Every publish and declaration needs it, for a handful of exchanges.
	if k, ok := t.bindingKeys.Load(exchange); ok {
		return k.(string)
	}
	k := t.exchangeKey(exchange, "_kombu.binding."+exchange)
	if t.bindingKeysN.Load() < maxBindingKeys && t.bindingKeysN.Add(1) <= maxBindingKeys {
		t.bindingKeys.Store(exchange, k)
	}
	return k
}

// maxBindingKeys bounds the binding keys a transport remembers: a program
// uses a few exchanges, but nothing stops one from naming many.
const maxBindingKeys = 64

func (t *Transport) leaseKey(exchange string) string {
	return t.exchangeKey(exchange, "_pidbox.lease."+exchange)
}
func (t *Transport) ownerKey(b transport.Binding) string {
	return t.exchangeKey(b.Exchange.Name, "_pidbox.owner."+b.Queue)
}

// listKeys are a bound queue's list and its priority sub-lists.
func (t *Transport) listKeys(b transport.Binding) []string {
	keys := make([]string, len(priorities))
	for i, p := range priorities {
		keys[i] = t.exchangeKey(b.Exchange.Name, b.Queue+p)
	}
	return keys
}

// topic is the pub/sub channel of a fanout exchange, as Kombu names it.
func (t *Transport) topic(exchange, routingKey string) string {
	return t.topicOn(t.fanout, exchange, routingKey)
}

// topicOn is topic with another fanout prefix.
func (t *Transport) topicOn(prefix, exchange, routingKey string) string {
	if routingKey != "" && !t.opts.NoFanoutPatterns {
		return t.key(prefix + exchange + "/" + routingKey)
	}
	return t.key(prefix + exchange)
}

func member(b transport.Binding) string { return b.RoutingKey + sep + sep + b.Queue }

func ms(d time.Duration) int64 { return max(1, d.Milliseconds()) }

// Publish implements transport.Publisher: a PUBLISH for fanout exchanges,
// one script call that pushes to every bound queue for direct ones.
func (t *Transport) Publish(ctx context.Context, ex transport.Exchange, routingKey string, msg []byte) error {
	if t.isClosed() {
		return transport.ErrClosed
	}
	if t.coalesces(ex) {
		return t.coalesce(&pubOp{ctx: ctx, ex: ex, routingKey: routingKey, msg: msg})
	}
	return t.publishPlain(ctx, ex, routingKey, msg)
}

// coalesces reports whether publishes to ex go through the coalescer (see
// batch.go): fanout and direct exchanges, but not on Cluster, whose
// publishes take their own paths.
func (t *Transport) coalesces(ex transport.Exchange) bool {
	return !t.cluster && (ex.Kind == transport.Fanout || ex.Kind == transport.Direct)
}

// publishPlain publishes msg on its own.
func (t *Transport) publishPlain(ctx context.Context, ex transport.Exchange, routingKey string, msg []byte) error {
	var err error
	switch ex.Kind {
	case transport.Fanout:
		err = t.publishFanout(ctx, ex.Name, routingKey, msg)
	case transport.Direct:
		err = t.push(ctx, ex, routingKey, msg)
	case transport.Topic:
		err = t.publishTopic(ctx, ex, routingKey, msg)
	default:
		return fmt.Errorf("redis transport: exchange %q has unknown kind %q", ex.Name, ex.Kind)
	}
	if err != nil {
		return t.errorf("publish to %s: %w", ex.Name, err)
	}
	return nil
}

// Bindings implements transport.Transport. Bindings whose lease ran out are
// removed first; Kombu's bindings, which have no lease, are listed as they
// are.
func (t *Transport) Bindings(ctx context.Context, ex transport.Exchange) ([]transport.Binding, error) {
	if t.isClosed() {
		return nil, transport.ErrClosed
	}
	members, err := bindingsScript.Run(ctx, t.client, t.bindingsKeys(ex)).StringSlice()
	if err != nil {
		return nil, t.errorf("list bindings of %s: %w", ex.Name, err)
	}
	return parseBindings(ex, members), nil
}

// bindingsKeys are bindingsScript's keys for ex.
func (t *Transport) bindingsKeys(ex transport.Exchange) []string {
	return []string{t.bindingKey(ex.Name), t.leaseKey(ex.Name)}
}

// parseBindings reads the members of ex's binding set.
func parseBindings(ex transport.Exchange, members []string) []transport.Binding {
	out := make([]transport.Binding, 0, len(members))
	for _, m := range members {
		rk, rest, ok := strings.Cut(m, sep)
		_, queue, ok2 := strings.Cut(rest, sep)
		if !ok || !ok2 {
			continue
		}
		out = append(out, transport.Binding{Exchange: ex, RoutingKey: rk, Queue: queue})
	}
	return out
}

// Subscribe implements transport.Subscriber. It declares the binding
// (with a lease), then for a fanout exchange pattern-subscribes to its
// channel and waits for Redis to confirm; for a direct exchange it starts
// popping the queue's lists.
func (t *Transport) Subscribe(ctx context.Context, b transport.Binding, h transport.Handler) (transport.Subscription, error) {
	s, _, err := t.subscribe(ctx, b, h, nil)
	return s, err
}

var _ transport.ListingSubscriber = (*Transport)(nil)

// SubscribeListing implements transport.ListingSubscriber: the binding's
// declaration and the listing of list's bindings go in one pipeline.
func (t *Transport) SubscribeListing(ctx context.Context, b transport.Binding, h transport.Handler, list transport.Exchange) (transport.Subscription, []transport.Binding, error) {
	return t.subscribe(ctx, b, h, &list)
}

// subscribe is Subscribe, listing list's bindings with the declaration
// when list is not nil.
func (t *Transport) subscribe(ctx context.Context, b transport.Binding, h transport.Handler, list *transport.Exchange) (transport.Subscription, []transport.Binding, error) {
	if b.Exchange.Kind != transport.Fanout && b.Exchange.Kind != transport.Direct && b.Exchange.Kind != transport.Topic {
		return nil, nil, fmt.Errorf("redis transport: exchange %q has unknown kind %q", b.Exchange.Name, b.Exchange.Kind)
	}
	s := &subscription{
		t:        t,
		b:        b,
		member:   topicMember(b),
		h:        h,
		done:     make(chan struct{}),
		loopDone: make(chan struct{}),
		instance: uuid.NewString(),
	}
	if err := t.add(s); err != nil {
		return nil, nil, err
	}
	if s.pops() {
		// The reading loop starts now, so that its first pop dials its
		// connection while the binding is declared: a message can only
		// come once Subscribe has returned, and then the pop is waiting.
		s.startList()
	}
	listed, err := s.declareListing(ctx, list)
	if err != nil {
		s.abandon()
		return nil, nil, err
	}
	if b.Exchange.Kind == transport.Fanout {
		s.channels = t.subscribePatterns(b)
		if len(s.channels) > 1 {
			s.dedup = newDedup()
		}
		ps, err := t.psubscribe(ctx, s.channels...)
		if err != nil {
			t.remove(s)
			_ = s.unbind(context.WithoutCancel(ctx))
			return nil, nil, err
		}
		s.ps = ps
		s.seen()
		go s.runFanout(ps)
	} else {
		s.seen()
	}
	return s, listed, nil
}

func (t *Transport) add(s *subscription) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return transport.ErrClosed
	}
	if s.pops() {
		if t.queues >= t.opts.MaxQueues {
			return fmt.Errorf("%w: %s would be queue %d, above MaxQueues (%d)", ErrTooManyQueues, s.b.Queue, t.queues+1, t.opts.MaxQueues)
		}
		t.queues++
	}
	if len(t.subs) == 0 {
		t.wg.Add(1)
		go t.renewLeases(t.stop)
		if t.dialMaster != nil {
			t.wg.Add(1)
			go t.watchMaster(t.stop)
		}
	}
	t.subs[s] = struct{}{}
	return nil
}

func (t *Transport) remove(s *subscription) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.subs[s]; ok && s.pops() {
		t.queues--
		if s.hasSecond {
			t.seconds--
		}
	}
	delete(t.subs, s)
	if len(t.subs) == 0 && !t.closed {
		close(t.stop)
		t.stop = make(chan struct{})
	}
}

func (t *Transport) isClosed() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.closed
}

// psubscribe pattern-subscribes to patterns (see subscribePattern) on a
// fresh connection and waits for the confirmations.
func (t *Transport) psubscribe(ctx context.Context, patterns ...string) (*goredis.PubSub, error) {
	c := t.client
	if t.dialMaster != nil || t.cluster {
		c = t.blocking // its connections follow a failover, see watchMaster and hookClusterNodes
	}
	ps := c.PSubscribe(ctx)
	name := strings.Join(patterns, " and ")
	if err := ps.PSubscribe(ctx, patterns...); err != nil {
		_ = ps.Close()
		return nil, t.errorf("subscribe to %s: %w", name, err)
	}
	cctx, cancel := context.WithTimeout(ctx, t.opts.HealthCheckInterval+5*time.Second)
	defer cancel()
	confirmed := map[string]bool{}
	for {
		msg, err := ps.Receive(cctx)
		if err != nil {
			_ = ps.Close()
			return nil, t.errorf("subscribe to %s: no confirmation: %w", name, err)
		}
		if sub, ok := msg.(*goredis.Subscription); ok && sub.Kind == "psubscribe" {
			confirmed[sub.Channel] = true
			if len(confirmed) == len(slices.Compact(slices.Sorted(slices.Values(patterns)))) {
				return ps, nil
			}
		}
	}
}

// escapeGlob quotes the characters PSUBSCRIBE reads as a pattern, so the
// subscription matches exactly the channel Kombu publishes to.
func escapeGlob(s string) string {
	if !strings.ContainsAny(s, `*?[]\`) {
		return s
	}
	var b strings.Builder
	for _, r := range s {
		if strings.ContainsRune(`*?[]\`, r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}

// renewLeases keeps the bindings of live subscriptions declared: it renews
// their leases, and re-adds bindings lost to a Redis restart without data.
func (t *Transport) renewLeases(stop chan struct{}) {
	defer t.wg.Done()
	tick := time.NewTicker(t.opts.LeaseTTL / 3)
	defer tick.Stop()
	for {
		select {
		case <-stop:
			return
		case <-tick.C:
		case <-t.redial:
		}
		t.mu.Lock()
		subs := make([]*subscription, 0, len(t.subs))
		for s := range t.subs {
			subs = append(subs, s)
		}
		t.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), t.opts.LeaseTTL/3)
		t.declareAll(ctx, subs)
		cancel()
	}
}

// withScript runs run, which sends script in a pipeline, and once more
// after loading the script when Redis does not have it (NOSCRIPT: a new
// or restarted server, SCRIPT FLUSH): go-redis loads scripts by itself
// only for commands sent alone.
func (t *Transport) withScript(ctx context.Context, script *goredis.Script, run func() error) error {
	err := run()
	if goredis.HasErrorPrefix(err, "NOSCRIPT") && script.Load(ctx, t.client).Err() == nil {
		err = run()
	}
	return err
}

// declareAll renews many leases in one pipeline.
func (t *Transport) declareAll(ctx context.Context, subs []*subscription) {
	t.declMu.RLock()
	defer t.declMu.RUnlock()
	subs = slices.DeleteFunc(subs, (*subscription).isUnbound)
	if len(subs) == 0 {
		return
	}
	cmds := make([]*goredis.Cmd, len(subs))
	err := t.withScript(ctx, leaseScript, func() error {
		pipe := t.client.Pipeline()
		for i, s := range subs {
			cmds[i] = s.leaseCmd(ctx, pipe)
		}
		_, err := pipe.Exec(ctx)
		return err
	})
	if err != nil && !errors.Is(err, goredis.Nil) {
		t.opts.Logger.Warn("pidbox redis: cannot renew binding leases", "addr", t.addr, "err", err)
		return
	}
	for i, s := range subs {
		s.checkOwner(cmds[i])
	}
}

// pop takes up to a batch of messages from the first non-empty list,
// blocking up to BlockTimeout. It returns no error and no messages on
// timeout.
func (t *Transport) pop(ctx context.Context, keys []string) ([]string, error) {
	if !t.noBLMPOP.Load() {
		_, vals, err := t.blocking.BLMPop(ctx, t.opts.BlockTimeout, "right", 512, keys...).Result()
		if err == nil || errors.Is(err, goredis.Nil) {
			return vals, nil
		}
		if !strings.Contains(strings.ToLower(err.Error()), "unknown command") {
			return nil, err
		}
		if t.noBLMPOP.CompareAndSwap(false, true) {
			t.opts.Logger.Info("pidbox redis: server has no BLMPOP (Redis < 7); popping one message at a time", "addr", t.addr)
		}
	}
	kv, err := t.blocking.BRPop(ctx, t.opts.BlockTimeout, keys...).Result()
	if errors.Is(err, goredis.Nil) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return kv[1:], nil
}

// Close closes every subscription (unbinding them) and the clients the
// transport made. It is safe to call more than once.
func (t *Transport) Close() error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil
	}
	t.closed = true
	subs := make([]*subscription, 0, len(t.subs))
	for s := range t.subs {
		subs = append(subs, s)
	}
	close(t.stop)
	t.mu.Unlock()

	var wg sync.WaitGroup
	for _, s := range subs {
		wg.Go(func() { _ = s.Close() })
	}
	wg.Wait()
	t.wg.Wait()
	var errs []error
	for _, c := range t.owned {
		errs = append(errs, c.Close())
	}
	return errors.Join(errs...)
}

// backoff returns the wait before reconnect attempt n (from 0): 50 ms
// doubling to at most 1 s, so that a node is back within a second or so of
// Redis accepting connections again.
func backoff(n int) time.Duration {
	return time.Duration(math.Min(float64(50*time.Millisecond)*math.Pow(2, float64(n)), float64(time.Second)))
}
