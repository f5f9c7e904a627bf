package redis_test

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/gopidbox/pidbox/internal/redistest"
	"github.com/gopidbox/pidbox/transport"
	pidredis "github.com/gopidbox/pidbox/transport/redis"
	goredis "github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// aclRules reads the ACL SETUSER line for user from README.md, so the
// rules tested are the rules documented. The node's rules there are for
// celery@web-1; here they serve n1@h.
func aclRules(t *testing.T, user string) []string {
	readme, err := os.ReadFile("../../README.md")
	require.NoError(t, err)
	for _, line := range strings.Split(string(readme), "\n") {
		f := strings.Fields(line)
		if len(f) > 3 && f[0] == "ACL" && f[1] == "SETUSER" && f[2] == user {
			rules := f[3:]
			for i, r := range rules {
				r = strings.ReplaceAll(r, "celery@web-1", "n1@h")
				r = strings.ReplaceAll(r, ">NODE_PASSWORD", ">node-pw")
				rules[i] = strings.ReplaceAll(r, ">CONTROLLER_PASSWORD", ">controller-pw")
			}
			return rules
		}
	}
	t.Fatalf("README.md has no ACL SETUSER line for %s", user)
	return nil
}

func setUser(t *testing.T, admin *goredis.Client, name string, rules []string) {
	args := []any{"ACL", "SETUSER", name, "reset"}
	for _, r := range rules {
		args = append(args, r)
	}
	require.NoError(t, admin.Do(context.Background(), args...).Err())
}

// TestLeastPrivilegeACL runs a node's and a controller's transport
// operations, as pidbox performs them, each as a Redis user with only the
// documented rights; then checks that neither user can do what only the
// other needs.
func TestLeastPrivilegeACL(t *testing.T) {
	srv := redistest.Start(t)
	admin := srv.Client(0)
	setUser(t, admin, "pidbox-node", aclRules(t, "pidbox-node-web-1"))
	setUser(t, admin, "pidbox-controller", aclRules(t, "pidbox-controller"))
	require.NoError(t, admin.Do(context.Background(), "ACL", "LOG", "RESET").Err())
	defer func() {
		if t.Failed() {
			log, _ := admin.Do(context.Background(), "ACL", "LOG").Slice()
			t.Logf("ACL LOG: %v", log)
		}
	}()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	nodeURL := "redis://pidbox-node:node-pw@" + srv.Addr() + "/0"
	ctlURL := "redis://pidbox-controller:controller-pw@" + srv.Addr() + "/0"
	nodeTr := open(t, srv, nodeURL, pidredis.Options{})
	ctlTr := open(t, srv, ctlURL, pidredis.Options{})

	bcast := transport.Exchange{Name: "celery.pidbox", Kind: transport.Fanout}
	replyEx := transport.Exchange{Name: "reply.celery.pidbox", Kind: transport.Direct}
	const oid = "6a0c4a1e-7d35-4f4e-9d0b-0d6f1b2a9c11"

	// The node binds its queue and replies to every command.
	nodeErrs := make(chan error, 10)
	nodeSub, err := nodeTr.Subscribe(ctx, transport.Binding{Exchange: bcast, Queue: "n1@h.celery.pidbox"}, func(msg []byte) {
		nodeErrs <- nodeTr.Publish(context.Background(), replyEx, oid, append([]byte("reply to "), msg...))
	})
	require.NoError(t, err, "node binds")

	// The controller binds its reply queue, lists nodes, broadcasts.
	replies := make(chan string, 10)
	ctlSub, err := ctlTr.Subscribe(ctx, transport.Binding{Exchange: replyEx, RoutingKey: oid, Queue: oid + ".reply.celery.pidbox"}, func(msg []byte) {
		replies <- string(msg)
	})
	require.NoError(t, err, "controller binds its reply queue")
	nodes, err := ctlTr.Bindings(ctx, bcast)
	require.NoError(t, err, "controller lists nodes")
	require.Len(t, nodes, 1)
	assert.Equal(t, "n1@h.celery.pidbox", nodes[0].Queue)
	require.NoError(t, ctlTr.Publish(ctx, bcast, "", []byte("ping")), "controller broadcasts")
	select {
	case err := <-nodeErrs:
		require.NoError(t, err, "node replies")
	case <-ctx.Done():
		t.Fatal("the node got no command")
	}
	select {
	case r := <-replies:
		assert.Equal(t, "reply to ping", r)
	case <-ctx.Done():
		t.Fatal("the controller got no reply")
	}
	require.NoError(t, nodeSub.Close(), "node unbinds")
	require.NoError(t, ctlSub.Close(), "controller unbinds")
	log, err := admin.Do(ctx, "ACL", "LOG").Slice()
	require.NoError(t, err)
	for _, e := range log {
		// Open reads maxmemory-policy to warn about eviction, and does
		// without when refused: CONFIG GET would also show a least
		// privileged user the server's settings.
		if m, ok := e.(map[any]any); ok && m["object"] == "config|get" {
			continue
		}
		t.Errorf("refused: %v", e)
	}

	// What only the other needs.
	node := goredis.NewClient(&goredis.Options{Addr: srv.Addr(), Username: "pidbox-node", Password: "node-pw", Protocol: 2})
	defer node.Close()
	ctl := goredis.NewClient(&goredis.Options{Addr: srv.Addr(), Username: "pidbox-controller", Password: "controller-pw", Protocol: 2})
	defer ctl.Close()
	denied := func(who string, err error) {
		t.Helper()
		if assert.Error(t, err, who) {
			assert.True(t, strings.HasPrefix(err.Error(), "NOPERM"), "%s: %v", who, err)
		}
	}
	denied("node publishes a command", node.Publish(ctx, "/0.celery.pidbox", "shutdown").Err())
	denied("node reads a reply queue", node.BLMPop(ctx, time.Second, "right", 1, oid+".reply.celery.pidbox").Err())
	denied("node reads a reply queue with LRANGE", node.LRange(ctx, oid+".reply.celery.pidbox", 0, -1).Err())
	denied("node lists the controllers", node.SMembers(ctx, "_kombu.binding.reply.celery.pidbox").Err())
	denied("node touches other keys", node.Set(ctx, "celery-task-meta-1", "x", 0).Err())
	denied("node flushes", node.FlushAll(ctx).Err())
	denied("node writes another node's queue", node.LPush(ctx, "n2@h.celery.pidbox", "x").Err())
	denied("node takes another node's name", node.Set(ctx, "_pidbox.owner.n2@h.celery.pidbox", "x", 0).Err())
	denied("node subscribes to every channel", node.Do(ctx, "PSUBSCRIBE", "*").Err())
	ps := ctl.PSubscribe(ctx, "/0.celery.pidbox")
	_, err = ps.Receive(ctx)
	ps.Close()
	denied("controller listens to commands", err)
	denied("controller subscribes to every channel", ctl.Do(ctx, "PSUBSCRIBE", "*").Err())
	denied("controller writes a node's queue", ctl.LPush(ctx, "n1@h.celery.pidbox", "x").Err())
	denied("controller takes a node's name", ctl.Set(ctx, "_pidbox.owner.n1@h.celery.pidbox", "x", 0).Err())
	denied("controller touches other keys", ctl.Get(ctx, "celery-task-meta-1").Err())
	denied("controller publishes elsewhere", ctl.Publish(ctx, "/0.other.pidbox", "x").Err())
	denied("controller configures", ctl.ConfigSet(ctx, "requirepass", "x").Err())
}
