package redis

// Redis Cluster. Kombu has no Cluster support (celery/kombu#526), so on
// Cluster pidbox talks only to pidbox: the key layout may differ from
// Kombu's there, and does.
//
// Every script and blocking pop touches the keys of one exchange: its
// binding set, its lease zset, the owner records and the lists of its
// queues. Cluster refuses a script or multi-key command whose keys hash to
// different slots (CROSSSLOT), so on Cluster each of these keys starts
// with the exchange's hash tag, "{<exchange>}" after the global key
// prefix:
//
//	{celery.pidbox}_kombu.binding.celery.pidbox
//	{reply.celery.pidbox}5d6c...reply.celery.pidbox
//
// and an exchange lives in one slot. Broadcasts use classic PUBLISH and
// PSUBSCRIBE, which Cluster delivers to subscribers on every node, with
// the same channel names as on single Redis.

import (
	"context"
	"fmt"
	"net/url"
	"strings"

	"github.com/gopidbox/pidbox/transport"
	goredis "github.com/redis/go-redis/v9"
)

// ClusterScheme is the URL scheme of Redis Cluster; "rediss+cluster" is
// the same over TLS.
const ClusterScheme = "redis+cluster"

// slotTag is the hash tag that keeps an exchange's keys in one slot on
// Cluster, and "" elsewhere, where keys are named as Kombu names them.
func (t *Transport) slotTag(exchange string) string {
	if !t.cluster {
		return ""
	}
	return "{" + exchange + "}"
}

// exchangeKey is the key of name, which belongs to exchange.
func (t *Transport) exchangeKey(exchange, name string) string {
	return t.opts.KeyPrefix + t.slotTag(exchange) + name
}

// hookClusterNodes puts the dial hook on every node client of the
// blocking cluster client (a ClusterClient's own dial hooks never run),
// and makes a failed dial reload the slot maps: go-redis would otherwise
// keep subscribing and popping on a master that died, until its periodic
// reload (every 60 s), after its replica has long taken over.
func (t *Transport) hookClusterNodes(hook dialHook) {
	cc, ok := t.blocking.(*goredis.ClusterClient)
	if !ok {
		return
	}
	hook.dialFailed = func() {
		cc.ReloadState(context.Background())
		if c, ok := t.client.(*goredis.ClusterClient); ok && c != cc {
			c.ReloadState(context.Background())
		}
	}
	cc.OnNewNode(func(n *goredis.Client) { n.AddHook(hook) })
}

// publishCluster publishes on the master that serves the channel's slot,
// where go-redis also puts the subscribers' connections. PUBLISH on any
// node reaches every subscriber, through the cluster bus, but two
// PUBLISHes sent to two nodes may overtake each other; on one node, one
// publisher's messages arrive in order.
func (t *Transport) publishCluster(ctx context.Context, channel string, msg []byte) error {
	cc, ok := t.client.(*goredis.ClusterClient)
	if !ok {
		return t.client.Publish(ctx, channel, msg).Err()
	}
	node, err := cc.MasterForKey(ctx, escapeGlob(channel)) // the subscribers' slot
	if err != nil {
		return err
	}
	return node.Publish(ctx, channel, msg).Err()
}

// publishRebindCluster is publishPipe for a broadcast or a reply on
// Cluster: the binding's SADD first, then the PUBLISH on the channel's
// slot master (see publishCluster), or the reply's transaction
// (publishReply), which a pipeline cannot route. Two round trips.
func (t *Transport) publishRebindCluster(ctx context.Context, ex transport.Exchange, routingKey string, msg []byte, s *subscription) error {
	if s != nil {
		if err := t.client.SAdd(ctx, t.bindingKey(s.b.Exchange.Name), s.member).Err(); err != nil {
			return t.errorf("publish to %s: %w", ex.Name, err)
		}
	}
	return t.publishPlain(ctx, ex, routingKey, msg)
}

// ParseClusterURL turns a Cluster URL into go-redis cluster options, and
// applies the Kombu transport options it carries to opts:
//
//	redis+cluster://[user:password@]host:port[,host:port...][/0][?params]
//	rediss+cluster://...   TLS
//
// The addresses are seed nodes: go-redis learns the rest of the cluster
// from them. Cluster has only database 0. Parameters: global_keyprefix,
// fanout_prefix, fanout_patterns, and go-redis's cluster parameters
// (dial_timeout, read_only, ...).
func ParseClusterURL(rawURL string, opts *Options) (*goredis.ClusterOptions, error) {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("redis transport: bad cluster URL %s: %s", Redact(rawURL), fmt.Sprintf(format, args...))
	}
	scheme, rest, ok := strings.Cut(rawURL, "://")
	if !ok || (scheme != ClusterScheme && scheme != "rediss+cluster") {
		return nil, bad("the scheme is not %s:// or rediss+cluster://", ClusterScheme)
	}
	rest, query, _ := strings.Cut(rest, "?")
	hosts, path, _ := strings.Cut(rest, "/")
	userinfo := ""
	if i := strings.LastIndex(hosts, "@"); i >= 0 {
		userinfo, hosts = hosts[:i+1], hosts[i+1:]
	}
	if path != "" && path != "0" {
		return nil, bad("database %q: Redis Cluster has database 0 only", path)
	}
	var addrs []string
	for _, h := range strings.Split(hosts, ",") {
		if h = strings.TrimSpace(h); h == "" {
			continue
		}
		if !strings.Contains(h, ":") {
			h += ":6379"
		}
		addrs = append(addrs, h)
	}
	if len(addrs) == 0 {
		return nil, bad("no node address")
	}
	q, err := url.ParseQuery(query)
	if err != nil {
		return nil, bad("%v", err)
	}
	if err := takeKombuOptions(q, opts); err != nil {
		return nil, bad("%v", err)
	}
	if !q.Has("protocol") {
		q.Set("protocol", "2") // RESP2, as on single Redis, see ParseURL
	}
	for _, a := range addrs[1:] {
		q.Add("addr", a)
	}
	goScheme := "redis"
	if scheme == "rediss+cluster" {
		goScheme = "rediss"
	}
	co, err := goredis.ParseClusterURL(goScheme + "://" + userinfo + addrs[0] + "?" + q.Encode())
	if err != nil {
		return nil, bad("%v", err)
	}
	opts.DB = 0
	return co, nil
}
