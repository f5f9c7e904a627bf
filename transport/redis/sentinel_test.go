package redis_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gopidbox/pidbox"
	"github.com/gopidbox/pidbox/internal/redistest"
	"github.com/gopidbox/pidbox/transport"
	pidredis "github.com/gopidbox/pidbox/transport/redis"
	"github.com/gopidbox/pidbox/transport/transporttest"
	goredis "github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseSentinelURL(t *testing.T) {
	var o pidredis.Options
	fo, err := pidredis.ParseSentinelURL("sentinel://u:p@h1:26379/2;sentinel://h2:26380;sentinel://h3?master_name=m&sentinel_password=sp&global_keyprefix=k:&dial_timeout=3s", &o)
	require.NoError(t, err)
	assert.Equal(t, []string{"h1:26379", "h2:26380", "h3:26379"}, fo.SentinelAddrs)
	assert.Equal(t, "m", fo.MasterName)
	assert.Equal(t, 2, fo.DB)
	assert.Equal(t, 2, o.DB)
	assert.Equal(t, "u", fo.Username)
	assert.Equal(t, "p", fo.Password, "the first part's password is the master's, as in Kombu")
	assert.Equal(t, "sp", fo.SentinelPassword)
	assert.Equal(t, 3*time.Second, fo.DialTimeout)
	assert.Equal(t, 2, fo.Protocol, "RESP2, as Kombu")
	assert.Equal(t, "k:", o.KeyPrefix)

	// The spelling, with the database on the last part, is
	// accepted when it agrees with the first.
	fo, err = pidredis.ParseSentinelURL("sentinel://h1:26379/0;sentinel://h2:26380/0?master_name=m", &o)
	require.NoError(t, err)
	assert.Equal(t, 0, fo.DB)

	for url, want := range map[string]string{
		"sentinel://h1;sentinel://h2/3?master_name=m":     "Kombu reads the database from the first part",
		"sentinel://h1;sentinel://h2":                     "master_name is missing",
		"sentinel://h1;redis://h2?master_name=m":          "not sentinel",
		"sentinel://h1/x?master_name=m":                   "not a number",
		"sentinel://h1?master_name=m&sentinel_fanout=all": "sentinel_fanout",
		"sentinel://h1?master_name=m&bogus=1":             "bogus",
	} {
		_, err := pidredis.ParseSentinelURL(url, &pidredis.Options{})
		assert.ErrorContains(t, err, want, url)
	}
	assert.Equal(t, "sentinel://u:xxxxx@h1:1;sentinel://v:xxxxx@h2:2?master_name=m",
		pidredis.Redact("sentinel://u:secret@h1:1;sentinel://v:secret2@h2:2?master_name=m"))
}

func TestSentinelConformance(t *testing.T) {
	d := deployments.Sentinel(t)
	transporttest.Run(t, func(t *testing.T) transport.Transport {
		return open(t, nil, d.URL(1), pidredis.Options{})
	})
}

// A transport on a go-redis failover client the caller already has
// passes the same suite and listens on both fanout channels.
func TestSentinelFromClient(t *testing.T) {
	d := deployments.Sentinel(t)
	client := goredis.NewFailoverClient(&goredis.FailoverOptions{
		MasterName: redistest.MasterName, SentinelAddrs: d.SentinelAddrs(), DB: 2,
		ContextTimeoutEnabled: true, Protocol: 2,
	})
	defer client.Close()
	transporttest.Run(t, func(t *testing.T) transport.Transport {
		return pidredis.NewFromClient(client, pidredis.Options{Logger: quiet})
	})
	tr := pidredis.NewFromClient(client, pidredis.Options{Logger: quiet})
	defer tr.Close()
	fanoutChannels(t, d, tr, 2)
}

// Kombu 5.2 and 5.3 broadcast on the literal "/{db}." channel on
// Sentinel, Kombu 5.4 and later on "/<db>.": a Go node hears both, and
// once only when a publisher (Kombu's sentinel_fanout_compat, or another
// Go node) sends one message to both; a message sent twice on one channel
// arrives twice.
func TestSentinelFanoutChannels(t *testing.T) {
	d := deployments.Sentinel(t)
	fanoutChannels(t, d, open(t, nil, d.URL(3), pidredis.Options{}), 3)
}

func fanoutChannels(t *testing.T, d *redistest.Sentinel, tr *pidredis.Transport, db int) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ex := transport.Exchange{Name: "fc.pidbox", Kind: transport.Fanout}
	got := make(chan string, 16)
	sub, err := tr.Subscribe(ctx, transport.Binding{Exchange: ex, Queue: "n.fc.pidbox"}, func(m []byte) { got <- string(m) })
	require.NoError(t, err)
	defer sub.Close()

	m, err := d.Master(ctx)
	require.NoError(t, err)
	raw := goredis.NewClient(&goredis.Options{Addr: m.Addr(), DB: db})
	defer raw.Close()
	literal, filled := "/{db}.fc.pidbox", fmt.Sprintf("/%d.fc.pidbox", db)
	require.NoError(t, raw.Publish(ctx, literal, "from-5.2").Err())
	require.NoError(t, raw.Publish(ctx, filled, "from-5.4").Err())
	require.NoError(t, raw.Publish(ctx, literal, "compat").Err())
	require.NoError(t, raw.Publish(ctx, filled, "compat").Err())
	require.NoError(t, raw.Publish(ctx, literal, "twice").Err())
	require.NoError(t, raw.Publish(ctx, literal, "twice").Err())
	require.NoError(t, raw.Publish(ctx, filled, "last").Err())
	var seen []string
	for len(seen) < 6 {
		select {
		case s := <-got:
			seen = append(seen, s)
		case <-ctx.Done():
			t.Fatalf("got only %v", seen)
		}
	}
	assert.Equal(t, []string{"from-5.2", "from-5.4", "compat", "twice", "twice", "last"}, seen,
		"one copy of a message sent on both channels; both of a message sent twice on one")

	// A Go publisher reaches listeners of either channel.
	ps := raw.Subscribe(ctx, literal, filled)
	defer ps.Close()
	_, err = ps.Receive(ctx)
	require.NoError(t, err)
	_, err = ps.Receive(ctx)
	require.NoError(t, err)
	require.NoError(t, tr.Publish(ctx, ex, "", []byte("go")))
	var channels []string
	for range 2 {
		msg, err := ps.ReceiveMessage(ctx)
		require.NoError(t, err)
		assert.Equal(t, "go", msg.Payload)
		channels = append(channels, msg.Channel)
	}
	slices.Sort(channels)
	assert.Equal(t, []string{filled, literal}, channels)
}

// callLog records calls made while the master fails.
type callLog struct {
	mu    sync.Mutex
	calls []callResult
}

type callResult struct {
	at      time.Time
	elapsed time.Duration
	replies int
	err     error
}

// keepCalling broadcasts ping every 100 ms until stop is closed.
func (l *callLog) keepCalling(ctl *pidbox.Mailbox, stop chan struct{}, opts ...pidbox.CallOption) {
	for {
		select {
		case <-stop:
			return
		case <-time.After(100 * time.Millisecond):
		}
		start := time.Now()
		rs, err := replies(ctl.Call(context.Background(), "ping", nil, opts...))
		l.mu.Lock()
		l.calls = append(l.calls, callResult{start, time.Since(start), len(rs), err})
		l.mu.Unlock()
	}
}

// pubsubClients counts the clients of a server with pattern
// subscriptions: the pidbox nodes listening there.
func pubsubClients(ctx context.Context, addr string) (int, string, error) {
	c := goredis.NewClient(&goredis.Options{Addr: addr})
	defer c.Close()
	list, err := c.ClientList(ctx).Result()
	if err != nil {
		return 0, "", err
	}
	n := 0
	for _, line := range strings.Split(list, "\n") {
		if strings.Contains(line, " psub=") && !strings.Contains(line, " psub=0 ") {
			n++
		}
	}
	return n, list, nil
}

// The master is SIGKILLed under running nodes and a controller calling
// them. Every node answers a broadcast again within 5 s of the promotion,
// through the new master; no pub/sub connection stays on the old one; and
// calls during the failover end within their timeout, with an error that
// names the broker.
func TestSentinelFailover(t *testing.T) {
	d := deployments.Sentinel(t)
	url := d.URL(0)
	opts := pidredis.Options{HealthCheckInterval: time.Second}
	fan, direct := variant{Kind: transport.Fanout, Serializer: "json"}, variant{Kind: transport.Direct, Serializer: "json"}
	var fanNodes, directNodes []string
	for i := range 2 {
		tr := open(t, nil, url, opts)
		for j := range 5 {
			name := fmt.Sprintf("f%d-%d@sentinel", i, j)
			goNode(t, tr, fan, name)
			fanNodes = append(fanNodes, name)
		}
		name := fmt.Sprintf("d%d@sentinel", i)
		goNode(t, tr, direct, name)
		directNodes = append(directNodes, name)
	}
	slices.Sort(fanNodes)
	ctlTr := open(t, nil, url, opts)
	ctlFan, ctlDirect := mailbox(t, ctlTr, fan), mailbox(t, ctlTr, direct)
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

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const callTimeout = time.Second
	var log callLog
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		log.keepCalling(mailbox(t, ctlTr, fan), stop, pidbox.Timeout(callTimeout), pidbox.Limit(len(fanNodes)))
	})

	old, killed, err := d.KillMaster(ctx)
	require.NoError(t, err)
	master, err := d.WaitPromotion(ctx, old.Addr())
	require.NoError(t, err)
	promoted := time.Now()
	t.Logf("replica %s promoted %s after the SIGKILL of %s", master, promoted.Sub(killed).Round(time.Millisecond), old.Addr())

	var last error
	for {
		if last = everyone(300 * time.Millisecond); last == nil || time.Since(promoted) > 20*time.Second {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	require.NoError(t, last, "nodes never answered after the promotion")
	recovered := time.Since(promoted)
	t.Logf("every node answered %s after the promotion", recovered.Round(time.Millisecond))
	assert.Less(t, recovered, 5*time.Second, "nodes answered later than 5 s after the promotion")
	close(stop)
	wg.Wait()

	// Calls made during the failover ended within their timeout; the
	// failed ones say which broker failed.
	failed := 0
	for _, c := range log.calls {
		assert.Less(t, c.elapsed, callTimeout+2*time.Second, "a call at %s overran its timeout (err %v)", c.at.Format(time.TimeOnly), c.err)
		if c.err != nil {
			failed++
			assert.Contains(t, c.err.Error(), "sentinel://", "the error names the broker")
		}
	}
	t.Logf("%d calls during the failover, %d failed with an error", len(log.calls), failed)

	// Pub/sub followed the failover: the nodes listen on the new master.
	require.Eventually(t, func() bool {
		n, _, err := pubsubClients(ctx, master)
		return err == nil && n == len(fanNodes)
	}, 10*time.Second, 50*time.Millisecond, "every fanout node listens on the new master")

	// A failover with the old master alive: it is demoted and keeps
	// answering, but no node stays listening there.
	require.NoError(t, d.Revive(ctx, old))
	demoted, master, err := d.Switch(ctx)
	require.NoError(t, err)
	switched := time.Now()
	require.Eventually(t, func() bool { return everyone(300*time.Millisecond) == nil }, 15*time.Second, 20*time.Millisecond)
	t.Logf("after a failover with the master alive, every node answered %s after the promotion", time.Since(switched).Round(time.Millisecond))
	require.Eventually(t, func() bool {
		n, _, err := pubsubClients(ctx, master)
		return err == nil && n == len(fanNodes)
	}, 10*time.Second, 50*time.Millisecond, "every fanout node listens on the new master")
	n, list, err := pubsubClients(ctx, demoted)
	require.NoError(t, err)
	assert.Zero(t, n, "pub/sub connections on the demoted master:\n%s", list)
}

// A Kombu process on the same sentinel:// URL calls Go nodes before,
// during and after a failover; a Go controller calls a Kombu node.
func TestSentinelInteropKombu(t *testing.T) {
	redistest.RequirePython(t, "kombu", "redis")
	d := deployments.Sentinel(t)
	url := d.URL(0)
	fan := variant{Kind: transport.Fanout, Serializer: "json"}
	tr := open(t, nil, url, pidredis.Options{HealthCheckInterval: time.Second})
	goNode(t, tr, fan, "go1@sentinel")
	goNode(t, tr, fan, "go2@sentinel")

	// Kombu 5.2 listens on the literal channel; the Go controller
	// publishes on both.
	kombuNode(t, url, "py@sentinel", fan)
	ctl := mailbox(t, open(t, nil, url, pidredis.Options{}), fan)
	require.NoError(t, ping(t, ctl, "py@sentinel", 5*time.Second))

	loop := redistest.StartProcess(t, "testdata", nil, redistest.Python, "kombu_loop.py", url, "0.5")
	t.Cleanup(func() { _ = loop.Stop(5 * time.Second) })
	loop.WaitFor(`"replies"`, 20*time.Second)

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	old, killed, err := d.KillMaster(ctx)
	require.NoError(t, err)
	_, err = d.WaitPromotion(ctx, old.Addr())
	require.NoError(t, err)
	promoted := time.Now()

	// The Kombu process hears both Go nodes in a round that ends after the
	// promotion. (A round that began before it may ride out the outage
	// inside Kombu's own retries.)
	type round struct {
		T, End  float64
		Replies []map[string]any
		Error   string
	}
	rounds := func() []round {
		var out []round
		for _, line := range loop.Lines() {
			var r round
			if json.Unmarshal([]byte(line), &r) == nil && r.End > 0 {
				out = append(out, r)
			}
		}
		return out
	}
	at := func(f float64) time.Time { return time.UnixMilli(int64(f * 1000)) }
	heard := func() (round, bool) {
		for _, r := range rounds() {
			got := map[string]bool{}
			for _, m := range r.Replies {
				for k := range m {
					got[k] = true
				}
			}
			if at(r.End).After(promoted) && got["go1@sentinel"] && got["go2@sentinel"] {
				return r, true
			}
		}
		return round{}, false
	}
	require.Eventually(t, func() bool { _, ok := heard(); return ok }, 20*time.Second, 100*time.Millisecond,
		"the Kombu process never heard the Go nodes after the failover:\n%s", loop.Output())
	r, _ := heard()
	failed := 0
	for _, r := range rounds() {
		if r.Error != "" {
			failed++
		}
	}
	t.Logf("master killed; promoted after %s; a Kombu round from %+.3fs to %+.3fs around the promotion heard both Go nodes; %d Kombu rounds failed",
		promoted.Sub(killed).Round(time.Millisecond), at(r.T).Sub(promoted).Seconds(), at(r.End).Sub(promoted).Seconds(), failed)
	require.NoError(t, d.Revive(ctx, old))
}

// Open fails within its context, with an error naming the URL without
// its password, when no sentinel answers, when the sentinels do not know
// the master name, and when no cluster node answers.
func TestOpenTopologyErrors(t *testing.T) {
	d := deployments.Sentinel(t)
	sentinels := strings.Split(d.URL(0), "?")[0]
	for url, want := range map[string]string{
		"sentinel://u:secret@127.0.0.1:1;sentinel://127.0.0.1:2?master_name=m": "sentinel://u:xxxxx@127.0.0.1:1",
		sentinels + "?master_name=nosuchmaster":                                "nosuchmaster",
		"redis+cluster://u:secret@127.0.0.1:1,127.0.0.1:2":                     "redis+cluster://u:xxxxx@127.0.0.1:1",
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		start := time.Now()
		tr, err := pidredis.Open(ctx, url, pidredis.Options{Logger: quiet})
		cancel()
		if tr != nil {
			_ = tr.Close()
		}
		require.Error(t, err, url)
		assert.Contains(t, err.Error(), want)
		assert.Contains(t, err.Error(), "cannot reach the broker")
		assert.NotContains(t, err.Error(), "secret")
		assert.Less(t, time.Since(start), 4*time.Second, "Open overran its context: %v", err)
		t.Logf("%s: %v", url, err)
	}
}
