package amqp_test

// Interop with real Kombu (py-amqp) and Celery processes (Debian's
// python3-kombu and python3-celery under /usr/bin/python3) on a real
// rabbitmq-server.

import (
	"testing"

	"github.com/gopidbox/pidbox/internal/interoptest"
	"github.com/gopidbox/pidbox/internal/rabbittest"
	"github.com/gopidbox/pidbox/internal/redistest"
	"github.com/gopidbox/pidbox/transport"
	pidamqp "github.com/gopidbox/pidbox/transport/amqp"
)

// rabbitPeer reaches the shared rabbitmq-server for the interop scenarios,
// in a namespace of the test's and variant's own.
func rabbitPeer(srv *rabbittest.Server, v variant, test string) interoptest.Peer {
	return interoptest.Peer{URL: srv.URL(), Namespace: namespace(v, test), Open: func(t *testing.T) transport.Transport {
		return open(t, withManagement(srv), pidamqp.Options{})
	}}
}

func TestInteropGoControllerKombuNodes(t *testing.T) {
	redistest.RequirePython(t, "kombu", "amqp", "msgpack")
	srv := rabbittest.Get(t)
	for _, v := range variants {
		t.Run(v.String(), func(t *testing.T) { interoptest.GoControllerKombuNodes(t, rabbitPeer(srv, v, "ctl"), v) })
	}
}

func TestInteropKombuClientGoNodes(t *testing.T) {
	redistest.RequirePython(t, "kombu", "amqp", "msgpack")
	srv := rabbittest.Get(t)
	for _, v := range variants {
		t.Run(v.String(), func(t *testing.T) { interoptest.KombuClientGoNodes(t, rabbitPeer(srv, v, "node"), v) })
	}
}
