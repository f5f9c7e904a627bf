// Package tlsurl reads the TLS parameters of Kombu's broker URLs (those
// of redis-py and py-amqp's ssl options), which the Redis transport takes
// on rediss:// and the AMQP transport on amqps://, with the same names and
// meaning:
//
//	ssl_cert_reqs=required|optional|none   (or CERT_REQUIRED, ...) verify the server's certificate; default required
//	ssl_ca_certs=/path/ca.pem              the CAs to verify it against; default the system's
//	ssl_certfile=/path/client.pem          a client certificate, with
//	ssl_keyfile=/path/client.key           its private key
//	ssl_check_hostname=true|false          whether the certificate must name the host; default true
package tlsurl

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strconv"
	"strings"
)

// Params are the TLS parameters of Kombu's URLs.
var Params = []string{"ssl_cert_reqs", "ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_check_hostname"}

// Take removes the TLS parameters from q and returns them.
func Take(q url.Values) url.Values {
	out := url.Values{}
	for _, k := range Params {
		if q.Has(k) {
			out.Set(k, q.Get(k))
			q.Del(k)
		}
	}
	return out
}

// Configure applies a URL's TLS parameters to cfg. Its errors name files,
// never their contents.
func Configure(cfg *tls.Config, q url.Values) error {
	verify := true
	switch v := q.Get("ssl_cert_reqs"); v {
	case "", "required", "CERT_REQUIRED", "optional", "CERT_OPTIONAL":
	case "none", "CERT_NONE":
		verify = false
	default:
		return fmt.Errorf("ssl_cert_reqs=%q (want required, optional or none)", v)
	}
	checkHost := true
	if v := q.Get("ssl_check_hostname"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return fmt.Errorf("ssl_check_hostname=%q is not true or false", v)
		}
		checkHost = b
	}
	if path := q.Get("ssl_ca_certs"); path != "" {
		pem, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("ssl_ca_certs: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return fmt.Errorf("ssl_ca_certs: no PEM certificate in %s", path)
		}
		cfg.RootCAs = pool
	}
	certFile, keyFile := q.Get("ssl_certfile"), q.Get("ssl_keyfile")
	if certFile != "" || keyFile != "" {
		if keyFile == "" {
			keyFile = certFile // one PEM file may hold both, as Python's load_cert_chain allows
		}
		if certFile == "" {
			return errors.New("ssl_keyfile without ssl_certfile")
		}
		pair, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return fmt.Errorf("client certificate %s, key %s: %w", certFile, keyFile, redactPEMError(err))
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	switch {
	case !verify:
		cfg.InsecureSkipVerify = true
	case !checkHost:
		// Verify the chain, not the name: redis-py's default.
		cfg.InsecureSkipVerify = true
		roots := cfg.RootCAs
		cfg.VerifyConnection = func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("the server sent no certificate")
			}
			inter := x509.NewCertPool()
			for _, c := range cs.PeerCertificates[1:] {
				inter.AddCert(c)
			}
			_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter})
			return err
		}
	}
	return nil
}

// Unverified reports whether cfg, as Configure left it, does not verify
// the server at all (ssl_cert_reqs=none).
func Unverified(cfg *tls.Config) bool {
	return cfg != nil && cfg.InsecureSkipVerify && cfg.VerifyConnection == nil
}

// redactPEMError keeps a key-loading error from quoting file contents.
func redactPEMError(err error) error {
	msg := err.Error()
	if strings.Contains(msg, "PRIVATE KEY") || strings.Contains(msg, "-----") {
		return errors.New("the files do not hold a matching PEM certificate and private key")
	}
	return err
}
