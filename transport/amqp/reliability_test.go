package amqp_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/gopidbox/pidbox"
	"github.com/gopidbox/pidbox/internal/rabbittest"
	"github.com/gopidbox/pidbox/internal/testlog"
	"github.com/gopidbox/pidbox/transport"
	pidamqp "github.com/gopidbox/pidbox/transport/amqp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The broker is stopped (its transient exchanges and queues are lost) and
// started again: calls during the outage fail within their deadline with
// an error naming the broker, and nodes answer again within 5 s of the
// broker coming back, having declared everything again.
func TestBrokerStoppedAndRestarted(t *testing.T) {
	srv := rabbittest.Get(t)
	for _, kind := range []transport.Kind{transport.Fanout, transport.Direct} {
		t.Run(string(kind), func(t *testing.T) {
			v := variant{Kind: kind, Serializer: "json"}
			ns := namespace(v, "outage")
			ntr := open(t, srv.URL(), pidamqp.Options{})
			goNode(t, mailbox(t, ntr, v, ns), "n1@h")
			ctl := mailbox(t, open(t, withManagement(srv), pidamqp.Options{}), v, ns)
			require.NoError(t, ping(ctl, "n1@h", 5*time.Second))

			srv.Stop()
			for range 3 {
				start := time.Now()
				rs, err := replies(ctl.Call(context.Background(), "ping", nil, pidbox.To("n1@h"), pidbox.Timeout(500*time.Millisecond)))
				elapsed := time.Since(start)
				assert.Empty(t, rs)
				assert.Less(t, elapsed, 2*time.Second, "a call during the outage overran its deadline (err %v)", err)
				require.Error(t, err)
				t.Logf("during the outage: %v", err)
				assert.Contains(t, err.Error(), srv.Addr(), "the error names the broker")
				assert.NotContains(t, err.Error(), "guest:guest", "the error shows no password")
			}
			srv.Start()
			back := time.Now()
			require.Eventually(t, func() bool { return ping(ctl, "n1@h", 300*time.Millisecond) == nil },
				15*time.Second, 10*time.Millisecond)
			t.Logf("%s: ping answered %s after the broker came back", kind, time.Since(back).Round(time.Millisecond))
			assert.Less(t, time.Since(back), 5*time.Second)
			names, err := ctl.Nodes(context.Background())
			require.NoError(t, err)
			assert.Contains(t, names, "n1@h", "binding declared again")
		})
	}
}

// A broker that stops answering without closing the connection is noticed
// by heartbeats; calls fail within their deadline meanwhile, and the node
// answers again soon after the broker resumes.
func TestBrokerFrozenAndResumed(t *testing.T) {
	srv := rabbittest.Get(t)
	v := variant{Kind: transport.Fanout, Serializer: "json"}
	ns := namespace(v, "frozen")
	var log testlog.Buffer
	goNode(t, mailbox(t, open(t, srv.URL(), pidamqp.Options{Heartbeat: time.Second, Logger: log.Logger()}), v, ns), "n1@h")
	ctlTr := open(t, srv.URL(), pidamqp.Options{Heartbeat: time.Second})
	ctl := mailbox(t, ctlTr, v, ns)
	require.NoError(t, ping(ctl, "n1@h", 5*time.Second))

	srv.Freeze()
	thawed := false
	defer func() {
		if !thawed {
			srv.Thaw()
		}
	}()
	// A new mailbox needs the broker to declare its reply queue, and its
	// first publish to declare the exchange: both end at the deadline too.
	start := time.Now()
	err := ping(mailbox(t, ctlTr, v, ns+"-new"), "n1@h", 500*time.Millisecond)
	assert.Error(t, err)
	assert.Less(t, time.Since(start), 2*time.Second, "a new caller while the broker is frozen overran its deadline (err %v)", err)
	t.Logf("new caller while frozen: %v", err)
	for range 3 {
		start := time.Now()
		err := ping(ctl, "n1@h", 500*time.Millisecond)
		assert.Error(t, err)
		assert.Less(t, time.Since(start), 2*time.Second, "a call while the broker is frozen overran its deadline (err %v)", err)
	}
	// Missed heartbeats, not a closed socket, tell the node's transport.
	require.Eventually(t, func() bool { return strings.Contains(log.String(), "connection lost") }, 10*time.Second, 50*time.Millisecond)
	srv.Thaw()
	thawed = true
	back := time.Now()
	require.Eventually(t, func() bool { return ping(ctl, "n1@h", 300*time.Millisecond) == nil },
		20*time.Second, 10*time.Millisecond)
	t.Logf("ping answered %s after the broker resumed", time.Since(back).Round(time.Millisecond))
	assert.Less(t, time.Since(back), 5*time.Second)
}
