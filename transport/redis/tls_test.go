package redis_test

import (
	"bytes"
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gopidbox/pidbox/internal/certtest"
	"github.com/gopidbox/pidbox/internal/redistest"
	"github.com/gopidbox/pidbox/internal/testlog"
	"github.com/gopidbox/pidbox/transport"
	pidredis "github.com/gopidbox/pidbox/transport/redis"
	"github.com/gopidbox/pidbox/transport/transporttest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// tlsFiles makes a CA, a server certificate with the given names and a
// client certificate, in a temporary directory.
func tlsFiles(t *testing.T, dns []string, ips []net.IP) (ca, server, client *certtest.Cert) {
	dir := t.TempDir()
	ca = certtest.NewCA(t, dir, "ca", certtest.Spec{CommonName: "redis test CA"})
	server = certtest.Issue(t, dir, "server", ca, certtest.Spec{CommonName: "redis", DNSNames: dns, IPs: ips, Server: true})
	client = certtest.Issue(t, dir, "client", ca, certtest.Spec{CommonName: "pidbox", Client: true})
	return ca, server, client
}

// openErr is the error of opening url and of the first round trip: on a
// single server, Open makes none.
func openErr(url string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	tr, err := pidredis.Open(ctx, url, pidredis.Options{Logger: quiet})
	if err == nil {
		err = tr.Ping(ctx)
		_ = tr.Close()
	}
	return err
}

// TestTLS runs the conformance suite over TLS with client certificates, on
// a real redis-server listening with --tls-port, through a rediss:// URL
// with Kombu's ssl_* parameters; and checks the refusals.
func TestTLS(t *testing.T) {
	ca, server, client := tlsFiles(t, []string{"localhost"}, []net.IP{net.ParseIP("127.0.0.1")})
	srv := redistest.StartTLS(t, redistest.TLS{CertFile: server.CertFile, KeyFile: server.KeyFile, CAFile: ca.CertFile,
		ClientCertFile: client.CertFile, ClientKeyFile: client.KeyFile})
	url := srv.URL(0)
	require.True(t, strings.HasPrefix(url, "rediss://"), url)

	transporttest.Run(t, func(t *testing.T) transport.Transport { return open(t, srv, url, pidredis.Options{}) })

	t.Run("a CA that did not sign the server", func(t *testing.T) {
		other := certtest.NewCA(t, t.TempDir(), "other", certtest.Spec{})
		bad := strings.Replace(url, "rediss://", "rediss://:s3cret-pw@", 1)
		bad = strings.Replace(bad, "ssl_ca_certs="+escape(ca.CertFile), "ssl_ca_certs="+escape(other.CertFile), 1)
		require.NotEqual(t, url, bad)
		err := openErr(bad)
		require.Error(t, err)
		msg := err.Error()
		assert.Contains(t, msg, srv.Addr(), "the error names the host")
		assert.Contains(t, msg, "certificate signed by unknown authority")
		assert.NotContains(t, msg, "s3cret-pw")
		keyPEM, _ := os.ReadFile(client.KeyFile)
		assert.False(t, bytes.Contains([]byte(msg), keyPEM[40:80]), "no key material")
	})
	t.Run("no client certificate", func(t *testing.T) {
		noClient := strings.Replace(url, "&ssl_certfile="+escape(client.CertFile), "", 1)
		noClient = strings.Replace(noClient, "&ssl_keyfile="+escape(client.KeyFile), "", 1)
		require.NotContains(t, noClient, "ssl_certfile")
		err := openErr(noClient)
		require.Error(t, err, "the server requires a client certificate")
		assert.Contains(t, err.Error(), srv.Addr())
	})
	t.Run("ssl_cert_reqs=none trusts any server, with a warning", func(t *testing.T) {
		var log testlog.Buffer
		other := certtest.NewCA(t, t.TempDir(), "other", certtest.Spec{})
		none := strings.Replace(url, "ssl_ca_certs="+escape(ca.CertFile), "ssl_ca_certs="+escape(other.CertFile), 1)
		none = strings.Replace(none, "ssl_cert_reqs=required", "ssl_cert_reqs=CERT_NONE", 1)
		tr := open(t, srv, none, pidredis.Options{Logger: log.Logger()})
		require.NoError(t, tr.Ping(context.Background()))
		assert.Contains(t, log.String(), "not verified")
	})
}

func escape(path string) string { return strings.ReplaceAll(path, "/", "%2F") }

// TestTLSHostname: the server's certificate must name the host unless
// ssl_check_hostname=false, which still verifies the chain.
func TestTLSHostname(t *testing.T) {
	ca, server, _ := tlsFiles(t, []string{"redis.internal"}, nil)
	srv := redistest.StartTLS(t, redistest.TLS{CertFile: server.CertFile, KeyFile: server.KeyFile, CAFile: ca.CertFile})
	url := srv.URL(0)
	err := openErr(url)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "127.0.0.1")
	tr := open(t, srv, url+"&ssl_check_hostname=false", pidredis.Options{})
	require.NoError(t, tr.Ping(context.Background()))

	other := certtest.NewCA(t, t.TempDir(), "other", certtest.Spec{})
	wrongCA := strings.Replace(url, escape(ca.CertFile), escape(other.CertFile), 1) + "&ssl_check_hostname=false"
	err = openErr(wrongCA)
	require.Error(t, err, "the chain is still verified")
	assert.Contains(t, err.Error(), "unknown authority")
}

func TestTLSURLErrors(t *testing.T) {
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "ca.pem")
	require.NoError(t, os.WriteFile(notPEM, []byte("not a certificate"), 0o644))
	for url, want := range map[string]string{
		"redis://:pw@h:6379/0?ssl_cert_reqs=required":               "need the rediss:// scheme",
		"rediss://:pw@h:6379/0?ssl_cert_reqs=maybe":                 `ssl_cert_reqs="maybe"`,
		"rediss://:pw@h:6379/0?ssl_ca_certs=" + dir + "/nosuch.pem": "nosuch.pem",
		"rediss://:pw@h:6379/0?ssl_ca_certs=" + notPEM:              "no PEM certificate in " + notPEM,
		"rediss://:pw@h:6379/0?ssl_certfile=" + notPEM:              "client certificate",
		"rediss://:pw@h:6379/0?ssl_check_hostname=perhaps":          "ssl_check_hostname",
	} {
		var o pidredis.Options
		_, err := pidredis.ParseURL(url, &o)
		if assert.Error(t, err, url) {
			assert.Contains(t, err.Error(), want, url)
			assert.NotContains(t, err.Error(), ":pw@", url)
		}
	}
}
