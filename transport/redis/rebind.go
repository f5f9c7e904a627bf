package redis

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/gopidbox/pidbox/transport"
)

var _ transport.Rebinder = (*Transport)(nil)

// PublishRebind implements transport.Rebinder: msg is published and sub's
// binding added again (SADD; the lease follows at the next renewal) in one
// pipeline, one round trip.
// A binding that Redis lost (evicted under an allkeys-* maxmemory-policy,
// flushed, or gone with a failover without persistence) is back before any
// reply to msg needs it; Kombu drops such replies until it reconnects
// (kombu#1063). A sub that is not this transport's, or that is closed, is
// not declared again.
func (t *Transport) PublishRebind(ctx context.Context, ex transport.Exchange, routingKey string, msg []byte, sub transport.Subscription) error {
	s := t.own(sub)
	if s == nil {
		return t.Publish(ctx, ex, routingKey, msg)
	}
	if t.isClosed() {
		return transport.ErrClosed
	}
	if !s.rebindDue(time.Now()) {
		return t.Publish(ctx, ex, routingKey, msg) // one command, no pipeline
	}
	if t.coalesces(ex) {
		return t.coalesce(&pubOp{ctx: ctx, ex: ex, routingKey: routingKey, msg: msg, rebind: s})
	}
	return t.publishRebind(ctx, ex, routingKey, msg, s)
}

// publishRebind publishes msg with s's binding (none once s is unbound),
// without the coalescer.
func (t *Transport) publishRebind(ctx context.Context, ex transport.Exchange, routingKey string, msg []byte, s *subscription) error {
	t.declMu.RLock()
	defer t.declMu.RUnlock()
	if s.unbound {
		s = nil
	}
	return t.publishPipe(ctx, ex, routingKey, msg, s)
}

// own returns sub when it is one of t's subscriptions, else nil.
func (t *Transport) own(sub transport.Subscription) *subscription {
	if s, ok := sub.(*subscription); ok && s.t == t {
		return s
	}
	return nil
}

// rebindEvery spaces the re-declarations of a node's binding: a node
// replies to every broadcast, and a gather of a thousand nodes should not
// cost Redis a thousand more commands. A caller's reply binding is
// declared with every request, since a Kombu node drops a reply that
// finds none; a Go node's reply finds its way without it (queuePush).
const rebindEvery = time.Second

// rebindDue reports whether s's binding should go with this publish.
func (s *subscription) rebindDue(now time.Time) bool {
	if isReply(s.b.Exchange, s.b.RoutingKey) {
		return true
	}
	last := s.lastRebind.Load()
	if now.UnixNano()-last < int64(rebindEvery) {
		return false
	}
	return s.lastRebind.CompareAndSwap(last, now.UnixNano())
}

// publishPipe publishes msg, with an SADD of s's binding in the same
// pipeline when s is not nil: a set member costs Redis next to nothing,
// where the lease script would cost a call a third of its time. The caller
// holds declMu for reading.
func (t *Transport) publishPipe(ctx context.Context, ex transport.Exchange, routingKey string, msg []byte, s *subscription) error {
	if ex.Kind != transport.Fanout && ex.Kind != transport.Direct {
		return fmt.Errorf("redis transport: exchange %q has unknown kind %q", ex.Name, ex.Kind)
	}
	if t.cluster && (ex.Kind == transport.Fanout || isReply(ex, routingKey)) {
		return t.publishRebindCluster(ctx, ex, routingKey, msg, s)
	}
	err := t.withScript(ctx, pushScript, func() error {
		pipe := t.client.Pipeline()
		if s != nil {
			pipe.SAdd(ctx, t.bindingKey(s.b.Exchange.Name), s.member)
		}
		if ex.Kind == transport.Fanout {
			for _, ch := range t.topics(ex.Name, routingKey) { // two on Sentinel
				pipe.Publish(ctx, ch, msg)
			}
		} else {
			t.queuePush(ctx, pipe, ex, routingKey, msg)
		}
		return execErr(pipe.Exec(ctx))
	})
	if err != nil && !errors.Is(err, goredis.Nil) {
		return t.errorf("publish to %s: %w", ex.Name, err)
	}
	return nil
}

// checkEviction warns when Redis may evict pidbox's keys to make room:
// under any maxmemory-policy but noeviction, binding sets and reply lists
// can vanish while their owners still use them. A server that does not let
// us read its configuration (managed Redis, ACLs) is not warned about.
func (t *Transport) checkEviction(policy *goredis.MapStringStringCmd) {
	m, err := policy.Result()
	if err != nil {
		return
	}
	p, ok := m["maxmemory-policy"]
	if !ok || p == "noeviction" {
		return
	}
	t.opts.Logger.Warn("pidbox redis: maxmemory-policy can evict pidbox's keys (bindings, reply lists); pidbox re-declares its bindings with every call, but a reply list evicted before it is read is lost. Set maxmemory-policy noeviction, or give the control plane a Redis of its own",
		"addr", t.addr, "maxmemory-policy", p)
}

// queuePush adds to pipe the commands that push msg to a direct exchange.
//
// A reply goes straight to its caller's list, which Kombu's naming makes
// known without a lookup (see replyKey): LPUSH and PEXPIRE in a MULTI,
// which costs Redis a quarter of the routing script (1.2 µs a reply
// against 4.6, docs/BENCHMARKS.md) and reaches a caller whose binding was
// evicted or flushed. The MULTI keeps the list from ever lacking its TTL,
// whatever happens to the connection. Commands without a key go to any
// node of a Cluster, so there a reply takes its own transaction
// (publishReply), not pipe.
//
// Any other message goes through pushScript, which routes it by the
// exchange's bindings as Kombu does.
func (t *Transport) queuePush(ctx context.Context, pipe goredis.Pipeliner, ex transport.Exchange, routingKey string, msg []byte) {
	if !isReply(ex, routingKey) {
		pushScript.EvalSha(ctx, pipe, []string{t.bindingKey(ex.Name)}, t.pushArgs(ex, routingKey, msg)...)
		return
	}
	key := t.replyKey(ex, routingKey)
	// A PEXPIRE first, outside the MULTI: go-redis judges a pipeline by
	// its first reply, and retries it on a fresh connection (dropping this
	// one) when that is READONLY (a replica behind a name that moved in a
	// failover) or LOADING (a restart); MULTI is never refused so.
	_ = pipe.Process(ctx, goredis.NewCmd(ctx, "pexpire", key, t.queueTTLArg))
	_ = pipe.Process(ctx, goredis.NewStatusCmd(ctx, "multi"))
	_ = pipe.Process(ctx, goredis.NewCmd(ctx, "lpush", key, msg))
	_ = pipe.Process(ctx, goredis.NewCmd(ctx, "pexpire", key, t.queueTTLArg))
	_ = pipe.Process(ctx, goredis.NewSliceCmd(ctx, "exec"))
}

// push publishes msg to a direct exchange on its own.
func (t *Transport) push(ctx context.Context, ex transport.Exchange, routingKey string, msg []byte) error {
	switch {
	case !isReply(ex, routingKey):
		return pushScript.Run(ctx, t.client, []string{t.bindingKey(ex.Name)}, t.pushArgs(ex, routingKey, msg)...).Err()
	case t.cluster:
		return t.publishReply(ctx, ex, routingKey, msg)
	}
	pipe := t.client.Pipeline()
	t.queuePush(ctx, pipe, ex, routingKey, msg)
	return execErr(pipe.Exec(ctx))
}

// execErr is a pipeline's error: Exec's, or when Exec found none, the
// first refusal inside a MULTI's EXEC (see firstErr).
func execErr(cmds []goredis.Cmder, err error) error {
	if err == nil {
		err = firstErr(cmds)
	}
	return err
}

// pushArgs are pushScript's arguments for a message to a direct exchange.
func (t *Transport) pushArgs(ex transport.Exchange, routingKey string, msg []byte) []any {
	return []any{routingKey, msg, t.queueTTLArg, t.opts.KeyPrefix + t.slotTag(ex.Name)}
}

// publishReply pushes a reply to its caller's list in a transaction of its
// own, for Cluster (see queuePush).
func (t *Transport) publishReply(ctx context.Context, ex transport.Exchange, routingKey string, msg []byte) error {
	key := t.replyKey(ex, routingKey)
	_, err := t.client.TxPipelined(ctx, func(p goredis.Pipeliner) error {
		p.LPush(ctx, key, msg)
		p.PExpire(ctx, key, t.opts.QueueTTL)
		return nil
	})
	return err
}

// replyKey is the list a reply to routing key R on exchange
// "reply.<ns>.pidbox" belongs in: Kombu names every reply queue
// "<oid>.reply.<ns>.pidbox" and binds it under the routing key <oid>.
func (t *Transport) replyKey(ex transport.Exchange, routingKey string) string {
	return t.exchangeKey(ex.Name, routingKey+"."+ex.Name)
}

// isReply reports whether a message to ex under routingKey is a reply,
// whose list replyKey names.
func isReply(ex transport.Exchange, routingKey string) bool {
	return ex.Kind == transport.Direct && routingKey != "" && strings.HasPrefix(ex.Name, "reply.") && strings.HasSuffix(ex.Name, ".pidbox")
}

var _ transport.ListingPublisher = (*Transport)(nil)

// PublishListing implements transport.ListingPublisher: the listing script,
// the SADD of sub's binding (when sub is this transport's) and the publish
// go in one pipeline. On Cluster, whose fanout publishes take their own
// path, and for topic exchanges, it lists, then publishes.
func (t *Transport) PublishListing(ctx context.Context, ex transport.Exchange, routingKey string, msg []byte, sub transport.Subscription, list transport.Exchange) ([]transport.Binding, error) {
	s := t.own(sub)
	if t.cluster || !t.coalesces(ex) {
		bs, _ := t.Bindings(ctx, list) // nil when it fails, as documented
		if s != nil {
			return bs, t.PublishRebind(ctx, ex, routingKey, msg, s)
		}
		return bs, t.Publish(ctx, ex, routingKey, msg)
	}
	if t.isClosed() {
		return nil, transport.ErrClosed
	}
	t.declMu.RLock()
	defer t.declMu.RUnlock()
	o := &pubOp{ctx: ctx, ex: ex, routingKey: routingKey, msg: msg, rebind: s}
	run := func() (*goredis.Cmd, []goredis.Cmder) {
		pipe := t.client.Pipeline()
		listing := bindingsScript.EvalSha(ctx, pipe, t.bindingsKeys(list))
		t.queueOp(ctx, pipe, o)
		cmds, _ := pipe.Exec(ctx) // each command keeps its own error
		return listing, cmds[1:]
	}
	listing, cmds := run()
	// Redis without its scripts (a restart, SCRIPT FLUSH) refuses each
	// script call on its own: send again only what it refused, so that a
	// publish that went out is not sent twice. (go-redis does not load
	// scripts in a pipeline; Run does.)
	err := firstErr(cmds)
	if goredis.HasErrorPrefix(err, "NOSCRIPT") {
		if s != nil && s.unbound {
			s = nil
		}
		err = t.publishPipe(ctx, ex, routingKey, msg, s) // loads the script; declMu is held
	} else if err != nil {
		err = t.errorf("publish to %s: %w", ex.Name, err)
	}
	if err != nil {
		return nil, err
	}
	if goredis.HasErrorPrefix(listing.Err(), "NOSCRIPT") {
		bs, _ := t.Bindings(ctx, list) // nil when it fails, as documented
		return bs, nil
	}
	members, lerr := listing.StringSlice()
	if lerr != nil {
		return nil, nil
	}
	return parseBindings(list, members), nil
}
