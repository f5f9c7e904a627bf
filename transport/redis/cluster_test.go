package redis_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gopidbox/pidbox"
	"github.com/gopidbox/pidbox/internal/redistest"
	"github.com/gopidbox/pidbox/internal/testlog"
	"github.com/gopidbox/pidbox/transport"
	pidredis "github.com/gopidbox/pidbox/transport/redis"
	"github.com/gopidbox/pidbox/transport/transporttest"
	goredis "github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseClusterURL(t *testing.T) {
	var o pidredis.Options
	co, err := pidredis.ParseClusterURL("redis+cluster://u:p@h1:7000,h2:7001, h3?global_keyprefix=k:&dial_timeout=2s", &o)
	require.NoError(t, err)
	assert.Equal(t, []string{"h1:7000", "h2:7001", "h3:6379"}, co.Addrs)
	assert.Equal(t, "u", co.Username)
	assert.Equal(t, "p", co.Password)
	assert.Equal(t, 2*time.Second, co.DialTimeout)
	assert.Equal(t, 2, co.Protocol)
	assert.Equal(t, "k:", o.KeyPrefix)
	assert.Nil(t, co.TLSConfig)
	co, err = pidredis.ParseClusterURL("rediss+cluster://h1:7000/0", &o)
	require.NoError(t, err)
	assert.NotNil(t, co.TLSConfig)

	for url, want := range map[string]string{
		"redis+cluster://h1:7000/3":       "database 0 only",
		"redis+cluster://":                "no node address",
		"redis+cluster://h1:7000?bogus=1": "bogus",
		"redis://h1:7000":                 "scheme",
	} {
		_, err := pidredis.ParseClusterURL(url, &pidredis.Options{})
		assert.ErrorContains(t, err, want, url)
	}
	assert.Equal(t, "redis+cluster://u:xxxxx@h1:7000,h2:7001", pidredis.Redact("redis+cluster://u:secret@h1:7000,h2:7001"))
}

func TestClusterConformance(t *testing.T) {
	c := deployments.Cluster(t)
	transporttest.Run(t, func(t *testing.T) transport.Transport {
		return open(t, nil, c.URL(), pidredis.Options{})
	})
}

func TestClusterConformanceWithPrefix(t *testing.T) {
	c := deployments.Cluster(t)
	transporttest.Run(t, func(t *testing.T) transport.Transport {
		return open(t, nil, c.URL()+"?global_keyprefix=app:&fanout_prefix=false", pidredis.Options{})
	})
}

// A transport on a go-redis ClusterClient in hand uses the same layout.
func TestClusterFromClient(t *testing.T) {
	c := deployments.Cluster(t)
	client := goredis.NewClusterClient(&goredis.ClusterOptions{Addrs: c.Addrs(), ContextTimeoutEnabled: true, Protocol: 2})
	defer client.Close()
	transporttest.Run(t, func(t *testing.T) transport.Transport {
		return pidredis.NewFromClient(client, pidredis.Options{Logger: quiet})
	})
}

// On Cluster every key of an exchange carries its hash tag, so the
// scripts touch one slot; the channel names stay Kombu's.
func TestClusterKeyLayout(t *testing.T) {
	c := deployments.Cluster(t)
	tr := open(t, nil, c.URL(), pidredis.Options{})
	mb, err := pidbox.New(tr, pidbox.Options{Namespace: "layout", Type: transport.Direct, Logger: quiet})
	require.NoError(t, err)
	t.Cleanup(func() { _ = mb.Close() })
	n := mb.NewNode("n@layout", pidbox.NodeOptions{})
	serve(t, n)
	require.NoError(t, ping(t, mb, "n@layout", 5*time.Second))
	client := goredis.NewClusterClient(&goredis.ClusterOptions{Addrs: c.Addrs()})
	defer client.Close()
	ctx := context.Background()
	var keys []string
	var mu sync.Mutex
	require.NoError(t, client.ForEachMaster(ctx, func(ctx context.Context, m *goredis.Client) error {
		ks, err := m.Keys(ctx, "*layout*").Result()
		mu.Lock()
		keys = append(keys, ks...)
		mu.Unlock()
		return err
	}))
	slices.Sort(keys)
	assert.Contains(t, keys, "{layout.pidbox}_kombu.binding.layout.pidbox")
	assert.Contains(t, keys, "{layout.pidbox}_pidbox.lease.layout.pidbox")
	assert.Contains(t, keys, "{reply.layout.pidbox}_kombu.binding.reply.layout.pidbox")
	for _, k := range keys {
		assert.True(t, strings.HasPrefix(k, "{layout.pidbox}") || strings.HasPrefix(k, "{reply.layout.pidbox}"), k)
	}
}

// nodesOn serves n fanout nodes named prefix-<i>, sharing one transport
// per perTransport nodes.
func nodesOn(t *testing.T, url string, n, perTransport int, prefix string, opts pidredis.Options) []string {
	var names []string
	var tr *pidredis.Transport
	var mu sync.Mutex
	var wg sync.WaitGroup
	fan := variant{Kind: transport.Fanout, Serializer: "json"}
	for i := range n {
		if i%perTransport == 0 {
			tr = open(t, nil, url, opts)
		}
		name := fmt.Sprintf("%s-%03d@h", prefix, i)
		names = append(names, name)
		mb := mailbox(t, tr, fan)
		wg.Go(func() {
			node := mb.NewNode(name, pidbox.NodeOptions{})
			mu.Lock()
			defer mu.Unlock()
			serve(t, node)
		})
	}
	wg.Wait()
	slices.Sort(names)
	return names
}

// A broadcast reaches 200 nodes on Cluster.
func TestClusterBroadcast200(t *testing.T) {
	c := deployments.Cluster(t)
	want := nodesOn(t, c.URL(), 200, 20, "b200", pidredis.Options{})
	ctl := mailbox(t, open(t, nil, c.URL(), pidredis.Options{}), variant{Kind: transport.Fanout, Serializer: "json"})
	start := time.Now()
	rs, err := replies(ctl.Call(context.Background(), "ping", nil, pidbox.Timeout(10*time.Second)))
	require.NoError(t, err)
	assert.Equal(t, want, names(rs))
	t.Logf("200 replies in %s", time.Since(start).Round(time.Millisecond))
}

// A master is SIGKILLed under running nodes: the one that serves the
// namespace's pub/sub, its broadcast exchange and its reply exchange.
// Its replica takes over, and every node answers within 5 s of the
// promotion.
func TestClusterFailover(t *testing.T) {
	c := deployments.Cluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	// A namespace whose channel, exchange and reply keys share a master.
	var ns string
	var victim *redistest.Server
	for i := 0; victim == nil && i < 500; i++ {
		cand := fmt.Sprintf("fo%d", i)
		var ms []*redistest.Server
		for _, k := range []string{"/0." + cand + ".pidbox", "{" + cand + ".pidbox}", "{reply." + cand + ".pidbox}"} {
			m, err := c.MasterOf(ctx, k)
			require.NoError(t, err)
			ms = append(ms, m)
		}
		if ms[0] == ms[1] && ms[1] == ms[2] {
			ns, victim = cand, ms[0]
		}
	}
	require.NotNil(t, victim, "no namespace with its keys on one master")

	url := c.URL()
	var logs testlog.Buffer // the transports' account of the failover, shown if it fails
	opts := pidredis.Options{HealthCheckInterval: time.Second, Logger: logs.Logger()}
	var fanNodes, directNodes []string
	mkmb := func(tr transport.Transport, kind transport.Kind) *pidbox.Mailbox {
		mb, err := pidbox.New(tr, pidbox.Options{Namespace: ns, Type: kind, Logger: quiet})
		require.NoError(t, err)
		t.Cleanup(func() { _ = mb.Close() })
		return mb
	}
	for i := range 2 {
		tr := open(t, nil, url, opts)
		for j := range 5 {
			name := fmt.Sprintf("f%d-%d@cluster", i, j)
			serve(t, mkmb(tr, transport.Fanout).NewNode(name, pidbox.NodeOptions{}))
			fanNodes = append(fanNodes, name)
		}
		name := fmt.Sprintf("d%d@cluster", i)
		serve(t, mkmb(tr, transport.Direct).NewNode(name, pidbox.NodeOptions{}))
		directNodes = append(directNodes, name)
	}
	slices.Sort(fanNodes)
	ctlTr := open(t, nil, url, opts)
	ctlFan, ctlDirect := mkmb(ctlTr, transport.Fanout), mkmb(ctlTr, transport.Direct)
	everyone := func(timeout time.Duration) error {
		rs, err := replies(ctlFan.Call(context.Background(), "ping", nil, pidbox.Timeout(timeout), pidbox.Limit(len(fanNodes))))
		if err != nil {
			return err
		}
		if got := names(rs); !slices.Equal(got, fanNodes) {
			return fmt.Errorf("fanout: %v answered", got)
		}
		rs, err = replies(ctlDirect.Call(context.Background(), "ping", nil, pidbox.To(directNodes...), pidbox.Timeout(timeout)))
		if err != nil {
			return err
		}
		if len(rs) != len(directNodes) {
			return fmt.Errorf("direct: %v answered", names(rs))
		}
		return nil
	}
	require.NoError(t, everyone(5*time.Second))

	const callTimeout = time.Second
	var log callLog
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		log.keepCalling(mkmb(ctlTr, transport.Fanout), stop, pidbox.Timeout(callTimeout), pidbox.Limit(len(fanNodes)))
	})
	killed := time.Now()
	victim.Kill()
	require.NoError(t, c.WaitPromotion(ctx, victim.Addr()))
	promoted := time.Now()
	t.Logf("replica promoted %s after the SIGKILL of %s", promoted.Sub(killed).Round(time.Millisecond), victim.Addr())
	var last error
	for {
		if last = everyone(300 * time.Millisecond); last == nil || time.Since(promoted) > 20*time.Second {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if last != nil {
		t.Logf("the transports' log:\n%s", logs.String())
	}
	require.NoError(t, last, "nodes never answered after the promotion")
	recovered := time.Since(promoted)
	t.Logf("every node answered %s after the promotion", recovered.Round(time.Millisecond))
	assert.Less(t, recovered, 5*time.Second, "nodes answered later than 5 s after the promotion")
	close(stop)
	wg.Wait()
	failed := 0
	for _, c := range log.calls {
		assert.Less(t, c.elapsed, callTimeout+2*time.Second, "a call at %s overran its timeout (err %v)", c.at.Format(time.TimeOnly), c.err)
		if c.err != nil {
			failed++
		}
	}
	t.Logf("%d calls during the failover, %d failed with an error", len(log.calls), failed)
	require.NoError(t, c.Revive(ctx, victim))

	// A failover with the master alive: the revived node, now a replica,
	// takes its slots back (CLUSTER FAILOVER), and the demoted master keeps
	// running. Every node answers again.
	require.NoError(t, c.Switch(ctx, victim))
	switched := time.Now()
	require.Eventually(t, func() bool { return everyone(300*time.Millisecond) == nil }, 15*time.Second, 20*time.Millisecond)
	t.Logf("after a failover with the master alive, every node answered %s after the switch", time.Since(switched).Round(time.Millisecond))
}
