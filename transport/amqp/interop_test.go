package amqp_test

// Interop with real Kombu (py-amqp) and Celery processes (Debian's
// python3-kombu and python3-celery under /usr/bin/python3) on a real
// rabbitmq-server.

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/gopidbox/pidbox"
	"github.com/gopidbox/pidbox/internal/rabbittest"
	"github.com/gopidbox/pidbox/internal/redistest"
	"github.com/gopidbox/pidbox/reply"
	pidamqp "github.com/gopidbox/pidbox/transport/amqp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestInteropGoControllerKombuNodes(t *testing.T) {
	redistest.RequirePython(t, "kombu", "amqp", "msgpack")
	srv := rabbittest.Get(t)
	for _, v := range variants {
		t.Run(v.String(), func(t *testing.T) {
			ns := v.namespace("ctl")
			kombuNode(t, srv.URL(), "py1@h", v, ns)
			kombuNode(t, srv.URL(), "py2@x", v, ns)
			tr := open(t, withManagement(srv), pidamqp.Options{})
			ctl := mailbox(t, tr, v, ns)
			ctx := context.Background()

			start := time.Now()
			rs, err := replies(ctl.Call(ctx, "ping", nil, pidbox.Timeout(5*time.Second)))
			require.NoError(t, err)
			assert.Equal(t, []string{"py1@h", "py2@x"}, names(rs))
			assert.Less(t, time.Since(start), 3*time.Second, "returns once the known nodes replied")
			for _, r := range rs {
				ok, err := reply.As[pidbox.OK](r)
				require.NoError(t, err)
				assert.Equal(t, "pong", ok.OK)
			}

			rs, err = replies(ctl.Call(ctx, "echo", echoArgs{A: 1, B: "x"}, pidbox.To("py1@h")))
			require.NoError(t, err)
			require.Len(t, rs, 1)
			got, err := reply.As[echoArgs](rs[0])
			require.NoError(t, err)
			assert.Equal(t, echoArgs{A: 1, B: "x"}, got)

			rs, err = replies(ctl.Call(ctx, "fail", nil, pidbox.To("py1@h")))
			require.NoError(t, err)
			require.Len(t, rs, 1)
			var re *reply.RemoteError
			require.ErrorAs(t, rs[0].Err, &re)
			assert.Equal(t, "ValueError('bad thing')", re.Message)

			rs, err = replies(ctl.Call(ctx, "nosuch", nil, pidbox.To("py2@x")))
			require.NoError(t, err)
			require.Len(t, rs, 1)
			assert.EqualError(t, rs[0].Err, "py2@x: KeyError('nosuch')")

			rs, err = replies(ctl.Call(ctx, "ping", nil, pidbox.Glob("py1*"), pidbox.Timeout(5*time.Second)))
			require.NoError(t, err)
			assert.Equal(t, []string{"py1@h"}, names(rs))
			rs, err = replies(ctl.Call(ctx, "ping", nil, pidbox.PCRE(`py.@x`), pidbox.Timeout(5*time.Second)))
			require.NoError(t, err)
			assert.Equal(t, []string{"py2@x"}, names(rs))

			// The Kombu node adjusts its clock from ours.
			ctl.Clock().Adjust(1000)
			rs, err = replies(ctl.Call(ctx, "clock", nil, pidbox.To("py1@h")))
			require.NoError(t, err)
			require.Len(t, rs, 1)
			c, err := reply.As[pidbox.ClockReply](rs[0])
			require.NoError(t, err)
			assert.Greater(t, c.Clock, uint64(1000))
		})
	}
}

func TestInteropKombuClientGoNodes(t *testing.T) {
	redistest.RequirePython(t, "kombu", "amqp", "msgpack")
	srv := rabbittest.Get(t)
	for _, v := range variants {
		t.Run(v.String(), func(t *testing.T) {
			ns := v.namespace("node")
			url := srv.URL()
			tr := open(t, url, pidamqp.Options{})
			mb := mailbox(t, tr, v, ns)
			goNode(t, mb, "go1@h")
			goNode(t, mb, "go2@x")
			call := func(req map[string]any) kombuResult {
				req["namespace"] = ns
				return kombuCall(t, url, v, req)
			}

			res := call(map[string]any{"method": "ping", "timeout": 1})
			assert.Equal(t, map[string]string{"go1@h": `{"ok": "pong"}`, "go2@x": `{"ok": "pong"}`}, res.byNode())

			res = call(map[string]any{"method": "echo", "arguments": map[string]any{"a": 7, "b": "y"}, "destination": []string{"go1@h"}})
			assert.Equal(t, map[string]string{"go1@h": `{"a": 7, "b": "y"}`}, res.byNode())

			res = call(map[string]any{"method": "fail", "destination": []string{"go2@x"}})
			assert.Equal(t, map[string]string{"go2@x": `{"error": "bad thing"}`}, res.byNode())
			res = call(map[string]any{"method": "nosuch", "destination": []string{"go2@x"}})
			assert.Equal(t, map[string]string{"go2@x": `{"error": "unknown method \"nosuch\""}`}, res.byNode())

			res = call(map[string]any{"method": "ping", "pattern": "go2*", "matcher": "glob", "timeout": 1})
			assert.Equal(t, []string{"go2@x"}, keys(res.byNode()))
			res = call(map[string]any{"method": "ping", "pattern": "go1", "matcher": "pcre", "timeout": 1})
			assert.Equal(t, []string{"go1@h"}, keys(res.byNode()))

			// The Go node adjusts its clock from the Kombu client's.
			res = call(map[string]any{"method": "clock", "destination": []string{"go1@h"}, "clock": 5000})
			var c pidbox.ClockReply
			require.NoError(t, json.Unmarshal([]byte(res.byNode()["go1@h"]), &c))
			assert.Greater(t, c.Clock, uint64(5000))
			assert.Greater(t, res.Clock, c.Clock, "the Kombu client adjusted past the reply's clock")
		})
	}
}
