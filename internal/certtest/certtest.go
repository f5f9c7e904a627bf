// Package certtest makes X.509 certificates and RSA keys for tests: a CA,
// and leaf certificates it signs, written as PEM files to a test's
// temporary directory. It uses Go's crypto/x509 only.
package certtest

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// Cert is a certificate with its private key and the paths of their PEM
// files.
type Cert struct {
	Cert     *x509.Certificate
	Key      *rsa.PrivateKey
	CertPEM  []byte
	KeyPEM   []byte
	CertFile string
	KeyFile  string
}

// Spec describes a certificate to make. The zero value is a one-hour
// 2048-bit leaf named "test".
type Spec struct {
	CommonName   string
	Organization string
	DNSNames     []string
	IPs          []net.IP
	Serial       int64 // default: random
	Bits         int   // default 2048
	NotBefore    time.Time
	NotAfter     time.Time // default: one hour from now
	CA           bool
	// Server and Client set the extended key usages for TLS.
	Server, Client bool
}

// A nil t is allowed (in TestMain): errors then panic.

// NewCA makes a self-signed CA and writes it to dir as <name>.pem and
// <name>.key.
func NewCA(t TB, dir, name string, s Spec) *Cert {
	if t != nil {
		t.Helper()
	}
	s.CA = true
	if s.CommonName == "" {
		s.CommonName = name
	}
	return make1(t, dir, name, s, nil)
}

// Issue makes a certificate signed by ca (self-signed when ca is nil) and
// writes it to dir as <name>.pem and <name>.key.
func Issue(t TB, dir, name string, ca *Cert, s Spec) *Cert {
	if t != nil {
		t.Helper()
	}
	if s.CommonName == "" {
		s.CommonName = name
	}
	return make1(t, dir, name, s, ca)
}

// fail ends the test, or panics when there is none (TestMain).
func fail(t TB, err error) {
	if t == nil {
		panic(err)
	}
	t.Helper()
	t.Fatal(err)
}

func make1(t TB, dir, name string, s Spec, ca *Cert) *Cert {
	if s.Bits == 0 {
		s.Bits = 2048
	}
	key, err := rsa.GenerateKey(rand.Reader, s.Bits)
	if err != nil {
		fail(t, err)
	}
	serial := big.NewInt(s.Serial)
	if s.Serial == 0 {
		serial, err = rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
		if err != nil {
			fail(t, err)
		}
	}
	if s.NotBefore.IsZero() {
		s.NotBefore = time.Now().Add(-time.Hour)
	}
	if s.NotAfter.IsZero() {
		s.NotAfter = time.Now().Add(time.Hour)
	}
	subject := pkix.Name{CommonName: s.CommonName}
	if s.Organization != "" {
		subject.Organization = []string{s.Organization}
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               subject,
		DNSNames:              s.DNSNames,
		IPAddresses:           s.IPs,
		NotBefore:             s.NotBefore,
		NotAfter:              s.NotAfter,
		BasicConstraintsValid: true,
		IsCA:                  s.CA,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
	}
	if s.CA {
		tmpl.KeyUsage |= x509.KeyUsageCertSign
	}
	if s.Server {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageServerAuth)
	}
	if s.Client {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageClientAuth)
	}
	parent, signer := tmpl, key
	if ca != nil {
		parent, signer = ca.Cert, ca.Key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, signer)
	if err != nil {
		fail(t, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		fail(t, err)
	}
	c := &Cert{
		Cert:    cert,
		Key:     key,
		CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		KeyPEM:  pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}),
	}
	if dir != "" {
		c.CertFile = filepath.Join(dir, name+".pem")
		c.KeyFile = filepath.Join(dir, name+".key")
		if err := os.WriteFile(c.CertFile, c.CertPEM, 0o644); err != nil {
			fail(t, err)
		}
		if err := os.WriteFile(c.KeyFile, c.KeyPEM, 0o600); err != nil {
			fail(t, err)
		}
	}
	return c
}

// TB is the part of testing.TB these helpers use; taking it keeps package
// testing out of programs that make certificates outside tests.
type TB interface {
	Helper()
	Fatal(args ...any)
}
