package amqp_test

import (
	"context"
	"log"
	"time"

	"github.com/gopidbox/pidbox"
	"github.com/gopidbox/pidbox/transport/amqp"
)

// Open a RabbitMQ broker as Celery's broker_url names it. This example needs
// a running RabbitMQ, so it is compiled but not run.
func ExampleOpen() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// Other forms: amqps://host:5671/vhost?ssl_ca_certs=/etc/ca.pem (TLS),
	// pyamqp://... and librabbitmq://... (Kombu's spellings). "//" and "/"
	// both name the vhost "/". management=15672 (a port on the broker's
	// host) or management=<escaped URL> enables Bindings through the
	// management plugin, so a broadcast knows which nodes to wait for.
	tr, err := amqp.Open(ctx, "amqp://guest:guest@127.0.0.1:5672//?management=15672", amqp.Options{
		QueueExpires: 10 * time.Second,  // x-expires, Celery's control_queue_expires
		QueueTTL:     300 * time.Second, // x-message-ttl, Celery's control_queue_ttl
		Heartbeat:    10 * time.Second,
	})
	if err != nil {
		log.Fatal(err) // names the URL without its password
	}
	defer tr.Close()

	mb, err := pidbox.New(tr, pidbox.Options{}) // namespace "celery", fanout, json: Celery's defaults
	if err != nil {
		log.Fatal(err)
	}
	defer mb.Close()
	res, err := mb.Call(ctx, "ping", nil, pidbox.Timeout(time.Second))
	if err != nil {
		log.Print(err)
	}
	for _, r := range res.Replies {
		log.Println(r.Node, string(r.Value))
	}
}
