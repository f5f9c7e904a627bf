package redis_test

import (
	"context"
	"log"
	"time"

	"github.com/gopidbox/pidbox"
	"github.com/gopidbox/pidbox/transport/redis"
)

// Open a Redis broker as Celery's broker_url names it. This example needs a
// running Redis, so it is compiled but not run.
func ExampleOpen() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// Other forms: rediss://host:6380/0?ssl_ca_certs=/etc/ca.pem (TLS),
	// unix:///run/redis.sock?db=0, redis+socket:///run/redis.sock.
	// Kombu's transport options go on the URL (they override Options):
	// ?global_keyprefix=p:&fanout_prefix=false&fanout_patterns=false.
	tr, err := redis.Open(ctx, "redis://:secret@127.0.0.1:6379/0", redis.Options{
		QueueTTL:            5 * time.Minute,  // TTL of every list pidbox pushes to
		LeaseTTL:            15 * time.Second, // how long a dead process's binding lingers
		HealthCheckInterval: 5 * time.Second,  // PING on an idle subscription
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
