package redis_test

import (
	"context"
	"os/exec"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/gopidbox/pidbox/internal/redistest"
	"github.com/gopidbox/pidbox/internal/wire"
	"github.com/gopidbox/pidbox/transport"
	pidredis "github.com/gopidbox/pidbox/transport/redis"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const kombuTopicConsumer = `
import sys
from kombu import Connection, Exchange, Queue
ex = Exchange("tx", type="topic", durable=False)
q = Queue("pyq", exchange=ex, routing_key="worker.#", durable=False, auto_delete=True)
with Connection(sys.argv[1]) as conn:
    got = []
    with conn.Consumer([q], callbacks=[lambda body, msg: got.append(body)], accept=["json"], no_ack=True):
        print("READY", flush=True)
        conn.drain_events(timeout=10)
    print("GOT", got[0]["a"], flush=True)
`

const kombuTopicProducer = `
import sys
from kombu import Connection, Exchange
ex = Exchange("tx", type="topic", durable=False)
with Connection(sys.argv[1]) as conn:
    conn.Producer().publish({"a": 2}, exchange=ex, routing_key=sys.argv[2], declare=[ex], serializer="json")
`

// Go and Kombu share a topic exchange on Redis both ways: Kombu routes to
// a Go queue by the pattern Go stored in the binding table, and Go routes
// to a Kombu queue by Kombu's binding.
func TestTopicInteropWithKombu(t *testing.T) {
	redistest.RequirePython(t, "kombu", "redis")
	srv := redistest.Start(t)
	srv.AllowNoTTL("_kombu.") // bindings the Python processes made
	url := srv.URL(0)
	tr := open(t, srv, url, pidredis.Options{})
	ex := transport.Exchange{Name: "tx", Kind: transport.Topic}

	// Kombu publishes, Go receives.
	got := make(chan []byte, 4)
	sub, err := tr.Subscribe(context.Background(), transport.Binding{Exchange: ex, RoutingKey: "task.*", Queue: "goq"}, func(m []byte) { got <- append([]byte(nil), m...) })
	require.NoError(t, err)
	defer sub.Close()
	for _, key := range []string{"worker.x", "task.x"} {
		out, err := exec.Command(redistest.Python, "-c", kombuTopicProducer, url, key).CombinedOutput()
		require.NoError(t, err, "%s", out)
	}
	select {
	case m := <-got:
		env, err := wire.Decode(m, 0)
		require.NoError(t, err)
		assert.JSONEq(t, `{"a": 2}`, string(env.Body))
		assert.Equal(t, "task.x", env.Properties.RoutingKey)
	case <-time.After(10 * time.Second):
		t.Fatal("Kombu's message did not reach the Go queue")
	}
	select {
	case m := <-got:
		t.Fatalf("worker.x reached a queue bound to task.*: %s", m)
	case <-time.After(200 * time.Millisecond):
	}

	// Go publishes, Kombu receives.
	py := redistest.StartProcess(t, ".", nil, redistest.Python, "-c", kombuTopicConsumer, url)
	py.WaitFor("READY", 20*time.Second)
	msg := wire.Encode(&wire.Envelope{
		Body: []byte(`{"a": 1}`), ContentType: "application/json", ContentEncoding: "utf-8",
		Properties: wire.Properties{DeliveryMode: wire.Persistent, Exchange: "tx", RoutingKey: "worker.heartbeat", DeliveryTag: uuid.NewString()},
	})
	require.NoError(t, tr.Publish(context.Background(), ex, "task.nomatch.here", msg))
	require.NoError(t, tr.Publish(context.Background(), ex, "worker.heartbeat", msg))
	py.WaitFor("GOT 1", 15*time.Second)
	require.NoError(t, py.Wait(10*time.Second), py.Output())
}
