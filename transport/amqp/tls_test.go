package amqp_test

import (
	"context"
	"crypto/tls"
	"net/url"
	"testing"
	"time"

	"github.com/gopidbox/pidbox/internal/certtest"
	"github.com/gopidbox/pidbox/internal/rabbittest"
	"github.com/gopidbox/pidbox/internal/testlog"
	"github.com/gopidbox/pidbox/transport"
	pidamqp "github.com/gopidbox/pidbox/transport/amqp"
	"github.com/gopidbox/pidbox/transport/transporttest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// tlsURL is an amqps:// URL of the broker's TLS listener, with a
// password that errors must not show, and the given ssl_* parameters.
func tlsURL(srv *rabbittest.Server, params url.Values) string {
	u := "amqps://guest:s3cret-pw@" + srv.TLSAddr() + "//"
	if len(params) > 0 {
		u += "?" + params.Encode()
	}
	return u
}

// trusted are the parameters of a client that trusts the test CA and
// presents its certificate, as the listener requires.
func trusted(srv *rabbittest.Server) url.Values {
	return url.Values{
		"ssl_ca_certs": {srv.CA().CertFile},
		"ssl_certfile": {srv.ClientCert().CertFile},
		"ssl_keyfile":  {srv.ClientCert().KeyFile},
	}
}

func tryOpen(url string, opts pidamqp.Options) (*pidamqp.Transport, error) {
	if opts.Logger == nil {
		opts.Logger = quiet
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return pidamqp.Open(ctx, url, opts)
}

func TestTLSConformance(t *testing.T) {
	srv := rabbittest.Get(t)
	u := "amqps://guest:guest@" + srv.TLSAddr() + "//?" + trusted(srv).Encode() + "&management=" + url.QueryEscape(srv.ManagementURL())
	transporttest.Run(t, func(t *testing.T) transport.Transport {
		return open(t, u, pidamqp.Options{})
	})
}

// amqps:// takes the rediss:// certificate parameters, with verification
// on by default; a refused certificate is one error naming the broker's
// host and port, and no secret.
func TestTLSParameters(t *testing.T) {
	srv := rabbittest.Get(t)
	good := "amqps://guest:guest@" + srv.TLSAddr() + "//"

	t.Run("verified with a client certificate", func(t *testing.T) {
		tr := open(t, good+"?"+trusted(srv).Encode(), pidamqp.Options{})
		roundTrip(t, tr)
	})

	refused := func(t *testing.T, u string, opts pidamqp.Options, want ...string) string {
		t.Helper()
		tr, err := tryOpen(u, opts)
		if tr != nil {
			_ = tr.Close()
		}
		require.Error(t, err)
		msg := err.Error()
		assert.Contains(t, msg, srv.TLSAddr(), "names the broker")
		for _, w := range want {
			assert.Contains(t, msg, w)
		}
		assert.NotContains(t, msg, "s3cret-pw")
		assert.NotContains(t, msg, "PRIVATE KEY")
		t.Log(msg)
		return msg
	}
	t.Run("system roots by default", func(t *testing.T) {
		p := trusted(srv)
		p.Del("ssl_ca_certs")
		refused(t, tlsURL(srv, p), pidamqp.Options{}, "certificate signed by unknown authority")
	})
	t.Run("bad CA", func(t *testing.T) {
		other := certtest.NewCA(t, t.TempDir(), "other", certtest.Spec{})
		p := trusted(srv)
		p.Set("ssl_ca_certs", other.CertFile)
		p.Set("ssl_cert_reqs", "required")
		refused(t, tlsURL(srv, p), pidamqp.Options{}, "TLS handshake", "certificate signed by unknown authority")
	})
	t.Run("no client certificate", func(t *testing.T) {
		p := trusted(srv)
		p.Del("ssl_certfile")
		p.Del("ssl_keyfile")
		// In TLS 1.3 the server judges the client's certificate once the
		// client's handshake is over. Its alert is read and named when
		// amqp091 reads first; when it writes first, the write meets the
		// closed connection.
		msg := refused(t, tlsURL(srv, p), pidamqp.Options{})
		assert.Regexp(t, "the broker refused the TLS connection: remote error: tls: certificate required|connection reset by peer|broken pipe|use of closed network connection", msg)
	})
	t.Run("host name checked", func(t *testing.T) {
		refused(t, tlsURL(srv, trusted(srv)), pidamqp.Options{TLS: &tls.Config{ServerName: "elsewhere.test"}}, "elsewhere.test")
	})
	t.Run("ssl_check_hostname=false verifies the chain only", func(t *testing.T) {
		p := trusted(srv)
		p.Set("ssl_check_hostname", "false")
		tr := open(t, good+"?"+p.Encode(), pidamqp.Options{TLS: &tls.Config{ServerName: "elsewhere.test"}})
		roundTrip(t, tr)
		p.Set("ssl_ca_certs", certtest.NewCA(t, t.TempDir(), "other", certtest.Spec{}).CertFile)
		refused(t, tlsURL(srv, p), pidamqp.Options{TLS: &tls.Config{ServerName: "elsewhere.test"}}, "unknown authority")
	})
	t.Run("ssl_cert_reqs=none verifies nothing, and says so", func(t *testing.T) {
		p := trusted(srv)
		p.Del("ssl_ca_certs")
		p.Set("ssl_cert_reqs", "none")
		var log testlog.Buffer
		tr := open(t, good+"?"+p.Encode(), pidamqp.Options{Logger: log.Logger()})
		roundTrip(t, tr)
		assert.Contains(t, log.String(), "ssl_cert_reqs=none")
	})
	t.Run("bad parameters", func(t *testing.T) {
		for _, c := range []struct{ url, want string }{
			{"amqp://guest:s3cret-pw@" + srv.Addr() + "//?ssl_ca_certs=/x", "need the amqps:// scheme"},
			{tlsURL(srv, url.Values{"ssl_cert_reqs": {"maybe"}}), `ssl_cert_reqs="maybe"`},
			{tlsURL(srv, url.Values{"ssl_ca_certs": {"/nonexistent/ca.pem"}}), "/nonexistent/ca.pem"},
			{tlsURL(srv, url.Values{"ssl_ca_certs": {srv.ClientCert().KeyFile}}), "no PEM certificate"},
			{tlsURL(srv, url.Values{"ssl_certfile": {srv.ClientCert().CertFile}, "ssl_keyfile": {srv.CA().KeyFile}}), "client certificate"},
		} {
			_, err := tryOpen(c.url, pidamqp.Options{})
			require.Error(t, err, c.url)
			assert.Contains(t, err.Error(), c.want)
			assert.NotContains(t, err.Error(), "s3cret-pw")
			assert.NotContains(t, err.Error(), "PRIVATE KEY")
		}
	})
}

// roundTrip publishes a message to a queue of tr's and receives it.
func roundTrip(t *testing.T, tr transport.Transport) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	got := make(chan []byte, 1)
	b := transport.Binding{Exchange: transport.Exchange{Name: "tls.pidbox", Kind: transport.Direct}, RoutingKey: "k", Queue: "tls-" + t.Name()}
	sub, err := tr.Subscribe(ctx, b, func(m []byte) { got <- append([]byte(nil), m...) })
	require.NoError(t, err)
	defer sub.Close()
	msg := []byte(`{"body": "e30=", "content-encoding": "utf-8", "content-type": "application/json", "headers": {"clock": 1}, "properties": {"body_encoding": "base64", "delivery_info": {"exchange": "tls.pidbox", "routing_key": "k"}, "delivery_mode": 1, "delivery_tag": "x", "priority": 0}}`)
	require.NoError(t, tr.Publish(ctx, b.Exchange, "k", msg))
	select {
	case <-got:
	case <-ctx.Done():
		t.Fatal("no message over TLS")
	}
}
