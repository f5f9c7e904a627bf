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
	s.expect()
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
// finds none; a Go node's reply finds its way without it (replyFallback).
const rebindEvery = time.Second

// rebindDue reports whether s's binding should go with this publish.
func (s *subscription) rebindDue(now time.Time) bool {
	if hasReplyFallback(s.b.Exchange, s.b.RoutingKey) {
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
	if t.cluster && ex.Kind == transport.Fanout {
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
			pushScript.EvalSha(ctx, pipe, []string{t.bindingKey(ex.Name)}, t.pushArgs(ex, routingKey, msg)...)
		}
		_, err := pipe.Exec(ctx)
		return err
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

// orphanTTL bounds how long a reply pushed to its fallback queue waits: a
// caller that lost its binding pops it at once; one that is gone never
// will.
const orphanTTL = 10 * time.Second

// pushArgs are pushScript's arguments for a message to a direct exchange.
func (t *Transport) pushArgs(ex transport.Exchange, routingKey string, msg []byte) []any {
	return []any{routingKey, msg, t.queueTTLArg, t.opts.KeyPrefix + t.slotTag(ex.Name), replyFallback(ex, routingKey), orphanTTLArg}
}

// orphanTTLArg is ms(orphanTTL), boxed once rather than with every reply.
var orphanTTLArg any = ms(orphanTTL)

// replyFallback names the queue a reply goes to when its caller's binding
// is missing. Kombu names every reply queue "<oid>.reply.<ns>.pidbox" and
// binds it under the routing key <oid>, so a reply to routing key R on
// exchange "reply.<ns>.pidbox" belongs in "R.reply.<ns>.pidbox" even when
// the binding that says so is gone. Other exchanges have no fallback.
func replyFallback(ex transport.Exchange, routingKey string) string {
	if !hasReplyFallback(ex, routingKey) {
		return ""
	}
	return routingKey + "." + ex.Name
}

// hasReplyFallback reports whether replyFallback names a queue, without
// making its name.
func hasReplyFallback(ex transport.Exchange, routingKey string) bool {
	return routingKey != "" && strings.HasPrefix(ex.Name, "reply.") && strings.HasSuffix(ex.Name, ".pidbox")
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
	if s != nil {
		s.expect()
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
