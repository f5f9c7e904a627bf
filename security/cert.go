package security

import (
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Certificate is an X.509 certificate with an RSA public key, known by
// its Celery signer id.
type Certificate struct {
	// X509 is the parsed certificate.
	X509 *x509.Certificate
	id   string
	pub  *rsa.PublicKey
}

// ParseCertificate reads the first PEM certificate in data, as Celery's
// Certificate does. Its public key must be RSA: the auth serializer signs
// with RSA-PSS.
func ParseCertificate(data []byte) (*Certificate, error) {
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			return nil, fmt.Errorf("%w: no PEM certificate found", ErrBadCertificate)
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrBadCertificate, err)
		}
		return NewCertificate(c)
	}
}

// NewCertificate wraps a parsed certificate.
func NewCertificate(c *x509.Certificate) (*Certificate, error) {
	pub, ok := c.PublicKey.(*rsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("%w: public key is %T, not RSA", ErrBadCertificate, c.PublicKey)
	}
	return &Certificate{X509: c, id: SignerID(c), pub: pub}, nil
}

// LoadCertificate reads a PEM certificate file.
func LoadCertificate(path string) (*Certificate, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("security: certificate: %w", err)
	}
	c, err := ParseCertificate(b)
	if err != nil {
		return nil, fmt.Errorf("security: certificate %s: %w", path, err)
	}
	return c, nil
}

// SignerID is Celery's id for a certificate: the values of the issuer's
// attributes in the order the certificate lists them, joined by spaces,
// then a space and the serial number in decimal
// (celery/security/certificate.py, Certificate.get_id).
func SignerID(c *x509.Certificate) string {
	var b strings.Builder
	for _, atv := range c.Issuer.Names {
		b.WriteString(fmt.Sprint(atv.Value))
		b.WriteByte(' ')
	}
	b.WriteString(c.SerialNumber.String())
	return b.String()
}

// ID returns the certificate's signer id (see SignerID).
func (c *Certificate) ID() string { return c.id }

// Expired reports whether the certificate is past its NotAfter time at
// now, as Celery's has_expired does.
func (c *Certificate) Expired(now time.Time) bool { return !now.Before(c.X509.NotAfter) }

// Names reports whether the certificate names node: its subject common
// name, or one of its DNS, email or URI subject alternative names, equals
// the node name exactly.
func (c *Certificate) Names(node string) bool {
	x := c.X509
	if x.Subject.CommonName == node || slices.Contains(x.DNSNames, node) || slices.Contains(x.EmailAddresses, node) {
		return true
	}
	for _, u := range x.URIs {
		if u.String() == node {
			return true
		}
	}
	return false
}

// Store holds the certificates whose signatures are trusted, by signer id.
// It is read-only once made, and safe for concurrent use.
type Store struct {
	certs map[string]*Certificate
}

// NewStore returns a store of certs. It refuses expired certificates and
// two certificates with one signer id, as Celery's CertStore does.
func NewStore(certs ...*Certificate) (*Store, error) {
	s := &Store{certs: make(map[string]*Certificate, len(certs))}
	now := time.Now()
	for _, c := range certs {
		if err := s.add(c, now); err != nil {
			return nil, err
		}
	}
	return s, nil
}

func (s *Store) add(c *Certificate, now time.Time) error {
	if c.Expired(now) {
		return fmt.Errorf("%w: %q expired at %s", ErrExpired, c.id, c.X509.NotAfter.UTC().Format(time.RFC3339))
	}
	if _, dup := s.certs[c.id]; dup {
		return fmt.Errorf("%w: duplicate certificate %q", ErrBadCertificate, c.id)
	}
	s.certs[c.id] = c
	return nil
}

// LoadStore reads a certificate store as Celery's FSCertStore does: path
// is a directory, whose every file (not starting with a dot) holds one PEM
// certificate, or a glob pattern of such files. An expired certificate,
// a file that is not a certificate or two certificates with one signer id
// fail the whole load. Subdirectories are skipped.
func LoadStore(path string) (*Store, error) {
	pattern := path
	if fi, err := os.Stat(path); err == nil && fi.IsDir() {
		pattern = filepath.Join(path, "*")
	}
	files, err := filepath.Glob(pattern)
	if err != nil {
		return nil, fmt.Errorf("security: certificate store %s: %w", path, err)
	}
	s := &Store{certs: map[string]*Certificate{}}
	now := time.Now()
	for _, f := range files {
		if strings.HasPrefix(filepath.Base(f), ".") { // Python's glob skips them
			continue
		}
		if fi, err := os.Stat(f); err == nil && fi.IsDir() {
			continue
		}
		c, err := LoadCertificate(f)
		if err != nil {
			return nil, fmt.Errorf("security: certificate store %s: %w", path, err)
		}
		if err := s.add(c, now); err != nil {
			return nil, fmt.Errorf("security: certificate store %s: %s: %w", path, f, err)
		}
	}
	return s, nil
}

// Get returns the certificate with a signer id.
func (s *Store) Get(id string) (*Certificate, bool) {
	c, ok := s.certs[id]
	return c, ok
}

// IDs lists the signer ids in the store, sorted.
func (s *Store) IDs() []string {
	ids := make([]string, 0, len(s.certs))
	for id := range s.certs {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// Len is the number of certificates in the store.
func (s *Store) Len() int { return len(s.certs) }
