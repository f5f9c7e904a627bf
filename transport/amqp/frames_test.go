package amqp_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"sort"
	"testing"
	"time"

	"github.com/gopidbox/pidbox"
	"github.com/gopidbox/pidbox/internal/rabbittest"
	"github.com/gopidbox/pidbox/internal/redistest"
	"github.com/gopidbox/pidbox/internal/testlog"
	"github.com/gopidbox/pidbox/transport"
	pidamqp "github.com/gopidbox/pidbox/transport/amqp"
	amqp091 "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// frame is what a message carries besides its body and header values: the
// properties, and each header's name with the type it arrives as.
type frame struct {
	props   amqp091.Delivery // properties only: the delivery fields are cleared
	headers map[string]string
}

func frameOf(d amqp091.Delivery) frame {
	f := frame{headers: map[string]string{}}
	for k, v := range d.Headers {
		f.headers[k] = fmt.Sprintf("%T", v)
	}
	f.props = amqp091.Delivery{
		ContentType: d.ContentType, ContentEncoding: d.ContentEncoding, DeliveryMode: d.DeliveryMode,
		Priority: d.Priority, CorrelationId: d.CorrelationId, ReplyTo: d.ReplyTo, Expiration: d.Expiration,
		MessageId: d.MessageId, Timestamp: d.Timestamp, Type: d.Type, UserId: d.UserId, AppId: d.AppId,
		Exchange: d.Exchange,
	}
	return f
}

// spy consumes copies of what is published to an exchange under a key.
func spy(t *testing.T, ch *amqp091.Channel, exchange, key string) <-chan amqp091.Delivery {
	t.Helper()
	q, err := ch.QueueDeclare("", false, true, true, false, nil)
	require.NoError(t, err)
	require.NoError(t, ch.QueueBind(q.Name, key, exchange, false, nil))
	d, err := ch.Consume(q.Name, "", true, false, false, false, nil)
	require.NoError(t, err)
	return d
}

func next(t *testing.T, d <-chan amqp091.Delivery) amqp091.Delivery {
	t.Helper()
	select {
	case m := <-d:
		return m
	case <-time.After(10 * time.Second):
		t.Fatal("spy: no message within 10s")
		return amqp091.Delivery{}
	}
}

// Requests and replies carry the same AMQP properties and the same
// headers, with the same field types, whether Kombu on py-amqp or pidbox
// sends them.
func TestFramesMatchKombu(t *testing.T) {
	redistest.RequirePython(t, "kombu", "amqp", "msgpack")
	srv := rabbittest.Get(t)
	for _, v := range []variant{{Kind: transport.Fanout, Serializer: "json"}, {Kind: transport.Direct, Serializer: "msgpack"}} {
		t.Run(v.String(), func(t *testing.T) {
			ns := namespace(v, "frames")
			kombuNode(t, srv.URL(), "py@h", v, ns) // declares the exchanges, as Kombu does
			tr := open(t, withManagement(srv), pidamqp.Options{})
			ctl := mailbox(t, tr, v, ns)
			goNode(t, ctl, "go@h")
			require.NoError(t, ping(ctl, "go@h", 5*time.Second))

			conn, err := amqp091.Dial(srv.URL())
			require.NoError(t, err)
			defer conn.Close()
			ch, err := conn.Channel()
			require.NoError(t, err)
			requests := spy(t, ch, ns+".pidbox", "")
			// The controller's reply queue is bound under its oid.
			var bs []struct {
				RoutingKey string `json:"routing_key"`
			}
			mgmtGet(t, srv, "/api/exchanges/%2F/"+url.PathEscape("reply."+ns+".pidbox")+"/bindings/source", &bs)
			require.Len(t, bs, 1)
			replies := spy(t, ch, "reply."+ns+".pidbox", bs[0].RoutingKey)

			// Requests: a Kombu client's, then the Go controller's.
			kombuCall(t, srv.URL(), v, map[string]any{"method": "ping", "destination": []string{"py@h"}, "namespace": ns})
			kreq := next(t, requests)
			_, err = ctl.Call(context.Background(), "ping", nil, pidbox.To("py@h"), pidbox.Timeout(5*time.Second))
			require.NoError(t, err)
			greq := next(t, requests)
			// Replies to the Go controller: the Kombu node's (to the call
			// above), then the Go node's.
			krep := next(t, replies)
			_, err = ctl.Call(context.Background(), "ping", nil, pidbox.To("go@h"), pidbox.Timeout(5*time.Second))
			require.NoError(t, err)
			next(t, requests)
			grep := next(t, replies)

			assert.Equal(t, frameOf(kreq), frameOf(greq), "request: Kombu, then pidbox")
			assert.Equal(t, []string{"clock", "expires"}, sortedKeys(frameOf(greq).headers))
			// One deliberate difference (docs/FIDELITY.md): a pidbox reply
			// carries the request's expiry, which Kombu's collector honours
			// and Kombu's nodes never send.
			gr := frameOf(grep)
			assert.Equal(t, []string{"clock", "expires", "ticket"}, sortedKeys(gr.headers))
			assert.Equal(t, "float64", gr.headers["expires"])
			delete(gr.headers, "expires")
			assert.Equal(t, frameOf(krep), gr, "reply: Kombu, then pidbox")
		})
	}
}

func sortedKeys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// py-amqp writes an int above 2^31-1 as a field of type 'L', which
// amqp091-go cannot read. A Kombu peer's clock passes that after two
// billion messages, or at once after adjusting to a large clock: the Go
// node must read it, not drop its connection.
func TestKombuClockAbove32Bits(t *testing.T) {
	redistest.RequirePython(t, "kombu", "amqp", "msgpack")
	srv := rabbittest.Get(t)
	v := variant{Kind: transport.Fanout, Serializer: "json"}
	ns := namespace(v, "bigclock")
	var log testlog.Buffer
	n := goNode(t, mailbox(t, open(t, srv.URL(), pidamqp.Options{Logger: log.Logger()}), v, ns), "go@h")
	const big = 3_000_000_000
	res := kombuCall(t, srv.URL(), v, map[string]any{"method": "clock", "destination": []string{"go@h"}, "clock": big, "namespace": ns})
	var c pidbox.ClockReply
	require.NoError(t, json.Unmarshal([]byte(res.ByNode()["go@h"]), &c), "reply: %+v", res)
	assert.Greater(t, c.Clock, uint64(big))
	assert.Greater(t, n.Stats().Clock, uint64(big))
	assert.NotContains(t, log.String(), "connection lost")
}
