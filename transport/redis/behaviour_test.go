package redis_test

import (
	"bytes"
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/gopidbox/pidbox"
	"github.com/gopidbox/pidbox/internal/redistest"
	"github.com/gopidbox/pidbox/internal/testlog"
	"github.com/gopidbox/pidbox/internal/wire"
	"github.com/gopidbox/pidbox/transport"
	pidredis "github.com/gopidbox/pidbox/transport/redis"
	goredis "github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func ping(t *testing.T, ctl *pidbox.Mailbox, node string, timeout time.Duration) error {
	rs, err := replies(ctl.Call(context.Background(), "ping", nil, pidbox.To(node), pidbox.Timeout(timeout)))
	if err != nil {
		return err
	}
	if len(rs) != 1 {
		return fmt.Errorf("%d replies", len(rs))
	}
	return rs[0].Err
}

// Replies that arrive after their call ended, and after their mailbox
// closed, leave no key behind without a TTL.
func TestNoKeyWithoutTTL(t *testing.T) {
	srv := redistest.Start(t)
	ctx := context.Background()
	for _, kind := range []transport.Kind{transport.Fanout, transport.Direct} {
		tr := open(t, srv, srv.URL(0), pidredis.Options{})
		v := variant{Kind: kind, Serializer: "json"}
		n := mailbox(t, tr, v).NewNode("slow@h", pidbox.NodeOptions{ShutdownGrace: time.Second})
		n.RegisterFunc("slow", func(context.Context, *pidbox.Request) (any, error) {
			time.Sleep(300 * time.Millisecond)
			return "late", nil
		})
		stopped := serve(t, n)
		ctl, err := pidbox.New(tr, pidbox.Options{Type: kind, Logger: quiet})
		require.NoError(t, err)
		for range 5 {
			rs, err := replies(ctl.Call(ctx, "slow", nil, pidbox.To("slow@h"), pidbox.Timeout(100*time.Millisecond)))
			require.ErrorIs(t, err, pidbox.ErrIncomplete)
			assert.Empty(t, rs)
		}
		// Late replies land in the open mailbox's reply list...
		time.Sleep(400 * time.Millisecond)
		// ...and while everything runs, only Kombu's binding sets lack a TTL.
		keys, err := srv.KeysWithoutTTL(ctx, 0, "*")
		require.NoError(t, err)
		for _, k := range keys {
			assert.True(t, strings.HasPrefix(k, "_kombu.binding."), "%s has no TTL", k)
		}
		// A late reply to a closed mailbox is dropped: its binding is gone.
		_, err = ctl.Send(ctx, "slow", nil, pidbox.To("slow@h"), pidbox.Timeout(2*time.Second))
		require.NoError(t, err)
		require.NoError(t, ctl.Close())
		time.Sleep(400 * time.Millisecond)
		n.Shutdown()
		require.NoError(t, stopped(5*time.Second))
		require.NoError(t, tr.Close())
		keys, err = srv.KeysWithoutTTL(ctx, 0, "*")
		require.NoError(t, err)
		assert.Empty(t, keys, "%s: keys without TTL once everything closed", kind)
	}
}

// A socket that dies silently (no RST, nothing answers) is found by the
// PING health check and replaced.
func TestSilentlyDeadSocket(t *testing.T) {
	srv := redistest.Start(t)
	proxy := redistest.NewProxy(t, srv.Addr())
	v := variant{Kind: transport.Fanout, Serializer: "json"}
	var logs testlog.Buffer
	ntr := open(t, srv, "redis://"+proxy.Addr()+"/0", pidredis.Options{HealthCheckInterval: 300 * time.Millisecond, Logger: logs.Logger()})
	goNode(t, ntr, v, "n1@h")
	ctl := mailbox(t, open(t, srv, srv.URL(0), pidredis.Options{}), v)
	require.NoError(t, ping(t, ctl, "n1@h", 5*time.Second))

	proxy.Blackhole()
	assert.Error(t, ping(t, ctl, "n1@h", 200*time.Millisecond), "the node is deaf while its socket is dead")
	require.Eventually(t, func() bool { return ping(t, ctl, "n1@h", 300*time.Millisecond) == nil },
		10*time.Second, 20*time.Millisecond, "the node re-subscribed on a new connection")
	assert.Contains(t, logs.String(), "health check")
	assert.Contains(t, logs.String(), "subscription re-established")
}

// Direct mailboxes deliver through lists, so a node whose connection
// drops gets what was sent meanwhile.
func TestDirectKeepsMessagesWhileAway(t *testing.T) {
	srv := redistest.Start(t)
	proxy := redistest.NewProxy(t, srv.Addr())
	v := variant{Kind: transport.Direct, Serializer: "json"}
	ntr := open(t, srv, "redis://"+proxy.Addr()+"/0", pidredis.Options{})
	n := mailbox(t, ntr, v).NewNode("n1@h", pidbox.NodeOptions{})
	got := make(chan string, 10)
	n.Register("note", pidbox.Typed(func(_ context.Context, a struct {
		Text string `json:"text"`
	}) (any, error) {
		got <- a.Text
		return nil, nil
	}))
	serve(t, n)
	ctl := mailbox(t, open(t, srv, srv.URL(0), pidredis.Options{}), v)

	proxy.Cut() // the node is away
	time.Sleep(200 * time.Millisecond)
	for i := range 3 {
		require.NoError(t, ctl.Cast(context.Background(), "note", map[string]string{"text": fmt.Sprint(i)}))
	}
	time.Sleep(500 * time.Millisecond)
	select {
	case text := <-got:
		t.Fatalf("%s delivered while the node was cut off", text)
	default:
	}
	proxy.Restore()
	var texts []string
	for range 3 {
		select {
		case text := <-got:
			texts = append(texts, text)
		case <-time.After(15 * time.Second):
			t.Fatalf("only %v delivered after the node came back", texts)
		}
	}
	sort.Strings(texts) // handlers run concurrently
	assert.Equal(t, []string{"0", "1", "2"}, texts)
}

// Hostile input on the wire is logged and dropped; the node keeps serving
// and loses nothing else.
func TestHostileWireInput(t *testing.T) {
	srv := redistest.Start(t)
	raw := srv.Client(0)
	ctx := context.Background()
	for _, kind := range []transport.Kind{transport.Fanout, transport.Direct} {
		t.Run(string(kind), func(t *testing.T) {
			var logs testlog.Buffer
			tr := open(t, srv, srv.URL(0), pidredis.Options{Logger: logs.Logger()})
			mb, err := pidbox.New(tr, pidbox.Options{Type: kind, Logger: logs.Logger(), MaxMessageSize: 1 << 20})
			require.NoError(t, err)
			t.Cleanup(func() { _ = mb.Close() })
			n := mb.NewNode("n1@h", pidbox.NodeOptions{})
			serve(t, n)
			ctl := mailbox(t, open(t, srv, srv.URL(0), pidredis.Options{}), variant{Kind: kind, Serializer: "json"})

			inject := func(msg []byte) {
				if kind == transport.Fanout {
					require.NoError(t, raw.Publish(ctx, "/0.celery.pidbox", msg).Err())
				} else {
					require.NoError(t, raw.LPush(ctx, "n1@h.celery.pidbox", msg).Err())
				}
			}
			body := func(ct string, b []byte) []byte {
				return wire.Encode(&wire.Envelope{Body: b, ContentType: ct})
			}
			bad := map[string][]byte{
				"garbage":              []byte("\x00\xffgarbage"),
				"not json":             []byte("{not json"),
				"bad base64":           []byte(`{"body": "!!notbase64", "properties": {"body_encoding": "base64"}, "content-type": "application/json"}`),
				"unknown content type": body("application/x-python-serialize", []byte("cos\nsystem\n(S'id'\ntR.")),
				"50 MB body":           body("application/json", bytes.Repeat([]byte(" "), 50<<20)),
			}
			for name, m := range bad {
				inject(m)
				// The next good command still gets through.
				require.Eventually(t, func() bool { return ping(t, ctl, "n1@h", 500*time.Millisecond) == nil },
					20*time.Second, 10*time.Millisecond, "after %s", name)
			}
			out := logs.String()
			for _, want := range []string{"envelope is not a JSON object", "not valid base64", "application/x-python-serialize", "above the 1048576-byte limit"} {
				if kind == transport.Fanout && want == "above the 1048576-byte limit" {
					// Redis cuts a subscriber off before it could read a
					// 50 MB message (client-output-buffer-limit pubsub);
					// the node re-subscribes.
					continue
				}
				assert.Contains(t, out, want)
			}
			assert.GreaterOrEqual(t, n.Stats().Dropped, uint64(3))
		})
	}
}

// Open on a single server makes no round trip; the first one says that
// the server cannot be reached, and why, within its context, and without
// the password; an operation's error says the same.
func TestOpenErrors(t *testing.T) {
	ctx := context.Background()
	tr, err := pidredis.Open(ctx, "redis://user:s3cret@127.0.0.1:1/0", pidredis.Options{Logger: quiet})
	require.NoError(t, err, "Open dials nothing")
	defer tr.Close()
	mb := mailbox(t, tr, variant{Kind: transport.Fanout, Serializer: "json"})
	for name, op := range map[string]func(context.Context) error{
		"ping": tr.Ping,
		"publish": func(ctx context.Context) error {
			return tr.Publish(ctx, transport.Exchange{Name: "x", Kind: transport.Direct}, "q", []byte("m"))
		},
		"call": func(ctx context.Context) error {
			_, err := mb.Call(ctx, "ping", nil)
			return err
		},
	} {
		octx, cancel := context.WithTimeout(ctx, time.Second)
		start := time.Now()
		err := op(octx)
		cancel()
		require.Error(t, err, name)
		assert.Less(t, time.Since(start), 2*time.Second, "%s overran its deadline", name)
		assert.Contains(t, err.Error(), "redis://user:xxxxx@127.0.0.1:1/0", name)
		assert.ErrorIs(t, err, transport.ErrUnreachable, name)
		assert.NotErrorIs(t, err, pidbox.ErrBrokerSilent, "%s: an unreachable broker is not a silent one", name)
		assert.Contains(t, err.Error(), "cannot reach the broker", name)
		assert.Contains(t, err.Error(), "connection refused", name)
		assert.NotContains(t, err.Error(), "s3cret", name)
	}

	for _, bad := range []string{"http://x", "redis://h/0?fanout_patterns=maybe", "redis://h/0?nosuchoption=1", "::"} {
		_, err := pidredis.Open(ctx, bad, pidredis.Options{Logger: quiet})
		assert.ErrorContains(t, err, "bad URL", bad)
	}
}

// Kombu's transport options shape the names on the wire.
func TestKombuNamingOptions(t *testing.T) {
	srv := redistest.Start(t)
	ctx := context.Background()
	cases := []struct {
		query, channel, bindingKey string
	}{
		{"", "/2.celery.pidbox", "_kombu.binding.celery.pidbox"},
		{"?global_keyprefix=app:", "app:/2.celery.pidbox", "app:_kombu.binding.celery.pidbox"},
		{"?fanout_prefix=false", "celery.pidbox", "_kombu.binding.celery.pidbox"},
		{"?fanout_prefix=custom.", "custom.celery.pidbox", "_kombu.binding.celery.pidbox"},
	}
	for _, tc := range cases {
		t.Run(tc.query, func(t *testing.T) {
			tr := open(t, srv, srv.URL(2)+tc.query, pidredis.Options{})
			raw := srv.Client(2)
			ps := raw.Subscribe(ctx, tc.channel)
			defer ps.Close()
			_, err := ps.Receive(ctx)
			require.NoError(t, err)
			mb := mailbox(t, tr, variant{Kind: transport.Fanout, Serializer: "json"})
			n := mb.NewNode("n@h", pidbox.NodeOptions{})
			serve(t, n)
			members, err := raw.SMembers(ctx, tc.bindingKey).Result()
			require.NoError(t, err)
			assert.Contains(t, members, "\x06\x16\x06\x16n@h.celery.pidbox")
			require.NoError(t, mb.Cast(ctx, "ping", nil))
			msg, err := ps.ReceiveTimeout(ctx, 5*time.Second)
			require.NoError(t, err)
			require.IsType(t, &goredis.Message{}, msg)
			assert.Contains(t, msg.(*goredis.Message).Payload, `"content-type": "application/json"`)
		})
	}
}
