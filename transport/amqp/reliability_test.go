package amqp_test

import (
	"context"
	"testing"
	"time"

	"github.com/gopidbox/pidbox"
	"github.com/gopidbox/pidbox/internal/rabbittest"
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
			v := variant{kind, "json"}
			ns := v.namespace("outage")
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
