package amqp_test

import (
	"context"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/gopidbox/pidbox"
	"github.com/gopidbox/pidbox/internal/rabbittest"
	"github.com/gopidbox/pidbox/transport"
	pidamqp "github.com/gopidbox/pidbox/transport/amqp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A broker that accepts but does not answer: under a memory alarm
// RabbitMQ blocks every connection that publishes (connection.blocked)
// and stops reading it. A call returns at its deadline with an error
// wrapping pidbox.ErrBrokerSilent, to one node and to all, and the node
// answers again once the alarm is cleared.
func TestMemoryAlarm(t *testing.T) {
	srv := rabbittest.Get(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	t.Cleanup(func() { _ = srv.MemoryAlarm(context.Background(), false) })
	for _, kind := range []transport.Kind{transport.Fanout, transport.Direct} {
		t.Run(string(kind), func(t *testing.T) {
			v := variant{Kind: kind, Serializer: "json"}
			ns := namespace(v, "alarm")
			goNode(t, mailbox(t, open(t, withManagement(srv), pidamqp.Options{Heartbeat: 2 * time.Second}), v, ns), "a@h")
			ctl := mailbox(t, open(t, withManagement(srv), pidamqp.Options{}), v, ns)
			require.NoError(t, ping(ctl, "a@h", 5*time.Second))

			require.NoError(t, srv.MemoryAlarm(ctx, true))
			for _, opts := range [][]pidbox.CallOption{{pidbox.To("a@h")}, nil} {
				start := time.Now()
				_, err := ctl.Call(ctx, "ping", nil, append(opts, pidbox.Timeout(400*time.Millisecond))...)
				elapsed := time.Since(start)
				require.ErrorIs(t, err, pidbox.ErrBrokerSilent)
				assert.ErrorContains(t, err, "the broker did not answer")
				assert.Less(t, elapsed, 3*time.Second, "returns at its deadline, not when the alarm clears")
				t.Logf("%s after %s", err, elapsed.Round(time.Millisecond))
			}
			require.NoError(t, srv.MemoryAlarm(ctx, false))
			back := time.Now()
			require.Eventually(t, func() bool { return ping(ctl, "a@h", 300*time.Millisecond) == nil },
				10*time.Second, 10*time.Millisecond)
			t.Logf("%s: ping answered %s after the alarm cleared", kind, time.Since(back).Round(time.Millisecond))
		})
	}
}

// A node's health on AMQP: healthy while it consumes, with the broker's
// last word recent; unhealthy from the moment the broker closes its
// connection until it consumes again, however long that takes; healthy,
// and answering, once it has.
func TestHealthAcrossClosedConnection(t *testing.T) {
	srv := rabbittest.Get(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	vhostURL, err := srv.AddVhost(ctx, "health", false)
	require.NoError(t, err)
	mgmt := "?management=" + url.QueryEscape(srv.ManagementURL())
	v := variant{Kind: transport.Fanout, Serializer: "json"}
	n := goNode(t, mailbox(t, open(t, vhostURL+mgmt, pidamqp.Options{Heartbeat: 2 * time.Second, ReconnectMax: 100 * time.Millisecond}), v, "health"), "a@h")

	h := n.Health()
	require.True(t, h.Healthy(), "%+v", h)
	require.WithinDuration(t, time.Now(), h.LastSeen, 5*time.Second)

	// Refuse guest on the vhost, then close its connections: the node
	// cannot reconnect until the permission is back.
	_, err = srv.API(ctx, http.MethodDelete, "/api/permissions/health/guest", "")
	require.NoError(t, err)
	require.Eventually(t, func() bool { return closeConnections(t, srv, "health") == 0 && !n.Health().Healthy() },
		10*time.Second, 20*time.Millisecond, "a closed connection makes the node unhealthy")
	for range 20 { // the node keeps trying, and stays unhealthy meanwhile
		h := n.Health()
		require.True(t, h.Serving, "Serve keeps running")
		require.False(t, h.Subscribed, "%+v", h)
		time.Sleep(50 * time.Millisecond)
	}
	_, err = srv.AddVhost(ctx, "health", false) // gives guest its permissions back
	require.NoError(t, err)
	require.Eventually(t, func() bool { return n.Health().Healthy() }, 10*time.Second, 10*time.Millisecond)
	require.WithinDuration(t, time.Now(), n.Health().LastSeen, 5*time.Second)

	// Healthy means consuming: a call on the vhost reaches the node at once.
	vctl := mailbox(t, open(t, vhostURL+mgmt, pidamqp.Options{}), v, "health")
	require.NoError(t, ping(vctl, "a@h", 5*time.Second))
}

// closeConnections closes every client connection on a vhost through the
// management API and returns how many there were.
func closeConnections(t *testing.T, srv *rabbittest.Server, vhost string) int {
	t.Helper()
	var conns []struct {
		Name string `json:"name"`
	}
	mgmtGet(t, srv, "/api/vhosts/"+url.PathEscape(vhost)+"/connections", &conns)
	for _, c := range conns {
		_, _ = srv.API(context.Background(), http.MethodDelete, "/api/connections/"+url.PathEscape(c.Name), "")
	}
	return len(conns)
}
