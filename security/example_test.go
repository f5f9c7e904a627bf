package security_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"time"

	"github.com/gopidbox/pidbox"
	"github.com/gopidbox/pidbox/security"
	"github.com/gopidbox/pidbox/transport/memory"
)

// selfSigned makes a key and a self-signed certificate naming name. A real
// fleet loads them from files (FromFiles), as Celery's security_key,
// security_certificate and security_cert_store.
func selfSigned(name string, serial int64) (*rsa.PrivateKey, *security.Certificate) {
	key, _ := rsa.GenerateKey(rand.Reader, 2048)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		Subject:      pkix.Name{CommonName: name},
		DNSNames:     []string{name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	der, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	c, _ := x509.ParseCertificate(der)
	cert, _ := security.NewCertificate(c)
	return key, cert
}

// A node and two controllers signing with Celery's auth serializer. The
// node's Policy lets every trusted signer ping, and only the admin run other
// commands; the node refuses unsigned commands.
func ExampleNew() {
	opsKey, opsCert := selfSigned("ops", 1)
	dashKey, dashCert := selfSigned("dashboard", 2)
	nodeKey, nodeCert := selfSigned("w1@host", 3)
	store, _ := security.NewStore(opsCert, dashCert, nodeCert)

	tr := memory.New(memory.Options{})
	defer tr.Close()
	ctx, cancel := context.WithCancel(context.Background())

	nodeSigner, _ := security.New(security.Config{Key: nodeKey, Certificate: nodeCert, Store: store, RequireSigned: true})
	// Admins names the common name of a certificate in Store. In production,
	// add Replay: security.NewReplayGuard(security.ReplayOptions{}).
	policy := &security.Policy{Store: store, Admins: []string{"ops"}}
	workers, _ := pidbox.New(tr, pidbox.Options{Sealer: nodeSigner})
	defer workers.Close()
	node := workers.NewNode("w1@host", pidbox.NodeOptions{Authorize: policy.Authorize})
	node.RegisterFunc("whoami", func(_ context.Context, r *pidbox.Request) (any, error) {
		return r.Signer, nil // the verified signer's id
	})
	done := make(chan struct{})
	go func() { defer close(done); _ = node.Serve(ctx) }()
	defer func() { cancel(); <-done }()
	<-node.Ready()

	signer := func(key *rsa.PrivateKey, cert *security.Certificate) pidbox.Sealer {
		// BindReplies: a reply must be signed by the node it comes from.
		s, _ := security.New(security.Config{Key: key, Certificate: cert, Store: store, RequireSigned: true, BindReplies: true})
		return s
	}
	call := func(who string, sealer pidbox.Sealer, method string) {
		mb, _ := pidbox.New(tr, pidbox.Options{Sealer: sealer})
		defer mb.Close()
		res, _ := mb.Call(ctx, method, nil, pidbox.To("w1@host"), pidbox.Timeout(300*time.Millisecond))
		fmt.Printf("%s %s: %s\n", who, method, res.Outcomes["w1@host"])
		for _, r := range res.Replies {
			fmt.Printf("  %s\n", r.Value)
		}
	}
	call("dashboard", signer(dashKey, dashCert), "ping")
	call("dashboard", signer(dashKey, dashCert), "whoami")
	call("ops", signer(opsKey, opsCert), "whoami")
	call("anonymous", nil, "ping") // unsigned: dropped, never answered
	// Output:
	// dashboard ping: replied
	//   {"ok":"pong"}
	// dashboard whoami: failed
	//   {"error":"not authorized"}
	// ops whoami: replied
	//   "ops 1"
	// anonymous ping: no reply
}
