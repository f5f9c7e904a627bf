package amqp_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gopidbox/pidbox"
	"github.com/gopidbox/pidbox/internal/rabbittest"
	"github.com/gopidbox/pidbox/internal/testlog"
	"github.com/gopidbox/pidbox/internal/wire"
	"github.com/gopidbox/pidbox/transport"
	pidamqp "github.com/gopidbox/pidbox/transport/amqp"
	amqp091 "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Malformed frames and bodies, and a message above MaxMessageSize, are
// dropped and logged (rate-limited); the node keeps serving.
func TestBadInputDropped(t *testing.T) {
	srv := rabbittest.Get(t)
	var log testlog.Buffer
	const limit = 64 << 10
	ntr := open(t, srv.URL(), pidamqp.Options{Logger: log.Logger(), MaxMessageSize: limit})
	v := variant{Kind: transport.Fanout, Serializer: "json"}
	ns := namespace(v, "bad")
	node := goNode(t, mailbox(t, ntr, v, ns), "n1@h")
	ctl := mailbox(t, open(t, srv.URL(), pidamqp.Options{}), v, ns)
	require.NoError(t, ping(ctl, "n1@h", 5*time.Second))

	conn, err := amqp091.Dial(srv.URL())
	require.NoError(t, err)
	defer conn.Close()
	ch, err := conn.Channel()
	require.NoError(t, err)
	pub := func(p amqp091.Publishing) {
		require.NoError(t, ch.PublishWithContext(context.Background(), ns+".pidbox", "", false, false, p))
	}
	req := []byte(`{"method": "ping", "arguments": {}, "destination": null}`)
	json := func(body []byte, h amqp091.Table) amqp091.Publishing {
		return amqp091.Publishing{ContentType: "application/json", ContentEncoding: "utf-8", Headers: h, Body: body}
	}
	big := []byte(`{"method": "ping", "arguments": {"pad": "` + strings.Repeat("x", 4*limit) + `"}}`)
	for range 20 {
		pub(json(big, amqp091.Table{"clock": int64(1)}))
	}
	for range 50 {
		pub(json(req, amqp091.Table{"clock": "not a number"}))
		pub(json(req, amqp091.Table{"clock": int64(1), "expires": "tomorrow"}))
		pub(json(req, amqp091.Table{"clock": int64(1), "ticket": int64(3)}))
		pub(json(nil, amqp091.Table{"clock": int64(1)}))
		pub(json([]byte("{{{ not json"), amqp091.Table{"clock": int64(1)}))
	}
	require.NoError(t, ping(ctl, "n1@h", 5*time.Second), "the node still serves")
	time.Sleep(1100 * time.Millisecond) // the next line reports how many were suppressed
	pub(json(req, amqp091.Table{"clock": "not a number"}))
	require.Eventually(t, func() bool { return strings.Contains(log.String(), "suppressed") }, 5*time.Second, 10*time.Millisecond)
	require.NoError(t, ping(ctl, "n1@h", 5*time.Second), "the node still serves")
	out := log.String()
	assert.Contains(t, out, "above MaxMessageSize")
	assert.Contains(t, out, "dropped malformed message")
	assert.Contains(t, out, "header clock")
	assert.Contains(t, out, "skipped unread")
	assert.Contains(t, out, "suppressed", "rate-limited")
	assert.Less(t, strings.Count(out, "\n"), 60, "one line per dropped message is not rate-limited:\n%s", out)
	// Frames the transport rejects never reach the node; the bodies that
	// are not json do, and the node drops them.
	st := node.Stats()
	assert.Equal(t, uint64(50), st.Dropped, "stats %+v", st)
}

// A broker's refusal is one clear error naming what it refused, never the
// password.
func TestBrokerRefusals(t *testing.T) {
	srv := rabbittest.Get(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	_, err := pidamqp.Open(ctx, strings.TrimSuffix(srv.URL(), "/")+"nosuch", pidamqp.Options{Logger: quiet})
	require.Error(t, err)
	assert.Contains(t, err.Error(), `vhost "nosuch"`)
	assert.NotContains(t, err.Error(), "guest:guest")

	// A vhost that exists but that guest may not use.
	require.Less(t, mgmtDo(t, srv, http.MethodPut, "/api/vhosts/locked", ""), 300)
	mgmtDo(t, srv, http.MethodDelete, "/api/permissions/locked/guest", "")
	_, err = pidamqp.Open(ctx, strings.TrimSuffix(srv.URL(), "/")+"locked", pidamqp.Options{Logger: quiet})
	require.Error(t, err)
	assert.Contains(t, err.Error(), `vhost "locked"`)
	assert.Contains(t, err.Error(), "refused for user 'guest'")
	assert.NotContains(t, err.Error(), "guest:guest")

	// A vhost where guest may not declare: ACCESS_REFUSED, naming the
	// exchange.
	require.Less(t, mgmtDo(t, srv, http.MethodPut, "/api/vhosts/limited", ""), 300)
	require.Less(t, mgmtDo(t, srv, http.MethodPut, "/api/permissions/limited/guest", `{"configure": "^$", "write": ".*", "read": ".*"}`), 300)
	ltr := open(t, strings.TrimSuffix(srv.URL(), "/")+"limited", pidamqp.Options{})
	_, err = ltr.Subscribe(ctx, transport.Binding{Exchange: transport.Exchange{Name: "celery.pidbox", Kind: transport.Fanout}, Queue: "n.celery.pidbox"}, func([]byte) {})
	require.Error(t, err)
	assert.Contains(t, err.Error(), `exchange "celery.pidbox"`)
	assert.Contains(t, err.Error(), "ACCESS_REFUSED")
	assert.NotContains(t, err.Error(), "guest:guest")

	_, err = pidamqp.Open(ctx, strings.Replace(srv.URL(), "guest:guest", "guest:s3cret", 1), pidamqp.Options{Logger: quiet})
	require.Error(t, err)
	assert.NotContains(t, err.Error(), "s3cret")

	// An exchange declared by someone else with another type.
	conn, err := amqp091.Dial(srv.URL())
	require.NoError(t, err)
	defer conn.Close()
	ch, err := conn.Channel()
	require.NoError(t, err)
	require.NoError(t, ch.ExchangeDeclare("refused.pidbox", "topic", false, false, false, false, nil))
	tr := open(t, srv.URL(), pidamqp.Options{})
	_, err = tr.Subscribe(ctx, transport.Binding{Exchange: transport.Exchange{Name: "refused.pidbox", Kind: transport.Fanout}, Queue: "n.refused.pidbox"}, func([]byte) {})
	require.Error(t, err)
	assert.Contains(t, err.Error(), `exchange "refused.pidbox"`)
	assert.Contains(t, err.Error(), "PRECONDITION_FAILED")
	assert.NotContains(t, err.Error(), "guest:guest")
	err = tr.Publish(ctx, transport.Exchange{Name: "refused.pidbox", Kind: transport.Fanout}, "", wire.Encode(&wire.Envelope{Body: []byte("{}"), ContentType: "application/json", ContentEncoding: "utf-8"}))
	require.Error(t, err)
	assert.Contains(t, err.Error(), `exchange "refused.pidbox"`)

	// The transport still works after the refusals.
	mb, err := pidbox.New(tr, pidbox.Options{Namespace: "refusals", Logger: quiet})
	require.NoError(t, err)
	defer mb.Close()
	goNode(t, mb, "ok@h")
	require.NoError(t, ping(mb, "ok@h", 5*time.Second))
}
