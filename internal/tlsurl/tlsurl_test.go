package tlsurl

import (
	"crypto/tls"
	"net/url"
	"strings"
	"testing"

	"github.com/gopidbox/pidbox/internal/certtest"
)

func TestConfigure(t *testing.T) {
	dir := t.TempDir()
	ca := certtest.NewCA(t, dir, "ca", certtest.Spec{})
	client := certtest.Issue(t, dir, "client", ca, certtest.Spec{Client: true})

	q := url.Values{"ssl_ca_certs": {ca.CertFile}, "ssl_certfile": {client.CertFile}, "ssl_keyfile": {client.KeyFile}, "x": {"kept"}}
	taken := Take(q)
	if len(taken) != 3 || q.Get("x") != "kept" || q.Has("ssl_ca_certs") {
		t.Fatalf("Take: %v left %v", taken, q)
	}
	var cfg tls.Config
	if err := Configure(&cfg, taken); err != nil {
		t.Fatal(err)
	}
	if cfg.RootCAs == nil || len(cfg.Certificates) != 1 || cfg.InsecureSkipVerify || Unverified(&cfg) {
		t.Errorf("verified with a client certificate: roots %v, %d certificates, skip %t", cfg.RootCAs != nil, len(cfg.Certificates), cfg.InsecureSkipVerify)
	}

	cfg = tls.Config{}
	if err := Configure(&cfg, url.Values{"ssl_cert_reqs": {"CERT_NONE"}}); err != nil || !Unverified(&cfg) {
		t.Errorf("ssl_cert_reqs=CERT_NONE: %v, unverified %t", err, Unverified(&cfg))
	}
	cfg = tls.Config{}
	if err := Configure(&cfg, url.Values{"ssl_check_hostname": {"false"}}); err != nil || Unverified(&cfg) || cfg.VerifyConnection == nil {
		t.Errorf("ssl_check_hostname=false must still verify the chain: %v", err)
	}
	for _, c := range []struct {
		q    url.Values
		want string
	}{
		{url.Values{"ssl_cert_reqs": {"maybe"}}, `ssl_cert_reqs="maybe"`},
		{url.Values{"ssl_check_hostname": {"perhaps"}}, `ssl_check_hostname="perhaps"`},
		{url.Values{"ssl_ca_certs": {dir + "/none.pem"}}, "none.pem"},
		{url.Values{"ssl_ca_certs": {client.KeyFile}}, "no PEM certificate"},
		{url.Values{"ssl_keyfile": {client.KeyFile}}, "ssl_keyfile without ssl_certfile"},
		{url.Values{"ssl_certfile": {client.CertFile}, "ssl_keyfile": {ca.KeyFile}}, "client certificate"},
	} {
		err := Configure(&tls.Config{}, c.q)
		if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "PRIVATE KEY") {
			t.Errorf("%v: %v, want an error with %q and no key", c.q, err, c.want)
		}
	}
}
