// Package security is Celery's message signing for pidbox: the `auth`
// serializer of celery/security, made with Go's standard crypto, plus what
// Celery lacks: per-command authorization, replay protection and replies
// bound to the node that sends them.
//
// A sealed body is
//
//	base64(signer \x00\x01 signature \x00\x01 content_type \x00\x01 content_encoding \x00\x01 body)
//
// where body is the message serialized by the inner serializer (json), the
// signature is RSA-PSS over body (MGF1 over the digest, maximum salt
// length, sha256 by default) made with the sender's private key, and
// signer is the sender certificate's Celery id (see SignerID). The
// receiver looks the signer up in its certificate store and, since the
// signature may itself contain \x00\x01, takes exactly as many signature
// bytes as the certificate's key is long. The sealed body travels with
// content type "application/data" and encoding "utf-8", as Celery
// registers the serializer.
//
// Only the body is signed: the envelope around it (expiry, clock, reply
// routing in Kombu's headers and properties), and the content type and
// encoding fields inside the packing, are not. See ReplayGuard for what
// that means for replays.
package security

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	_ "crypto/sha256" // digests a Celery security_digest may name
	_ "crypto/sha3"
	_ "crypto/sha512"
	"encoding/base64"
	"fmt"
	"os"
	"strings"
	"time"
)

// The auth serializer as Celery registers it (celery/security/serialization.py).
const (
	// Serializer is the serializer's name in Kombu's registry.
	Serializer = "auth"
	// ContentType is the content type of a sealed body.
	ContentType = "application/data"
	// ContentEncoding is the content encoding of a sealed body.
	ContentEncoding = "utf-8"
	// DefaultDigest is Celery's default security_digest.
	DefaultDigest = "sha256"
)

// sep separates the packed fields.
var sep = []byte("\x00\x01")

// digests maps Celery's security_digest names (cryptography's hash class
// names, lower case) to Go hashes. MD5 and SHA-1 are left out on purpose.
var digests = map[string]crypto.Hash{
	"sha224":     crypto.SHA224,
	"sha256":     crypto.SHA256,
	"sha384":     crypto.SHA384,
	"sha512":     crypto.SHA512,
	"sha512_224": crypto.SHA512_224,
	"sha512_256": crypto.SHA512_256,
	"sha3_224":   crypto.SHA3_224,
	"sha3_256":   crypto.SHA3_256,
	"sha3_384":   crypto.SHA3_384,
	"sha3_512":   crypto.SHA3_512,
}

// Digest returns the hash a Celery security_digest setting names
// ("sha256", "sha512", "sha3_256", ...; case does not matter).
func Digest(name string) (crypto.Hash, error) {
	if name == "" {
		name = DefaultDigest
	}
	h, ok := digests[strings.ToLower(name)]
	if !ok || !h.Available() {
		return 0, fmt.Errorf("%w: %q (use sha256, sha384, sha512 or sha3_256)", ErrDigest, name)
	}
	return h, nil
}

// Config configures a Signer. Key, Certificate and Store are required, as
// Celery's setup_security requires security_key, security_certificate and
// security_cert_store.
type Config struct {
	// Key signs outgoing messages. It must belong to Certificate.
	Key *rsa.PrivateKey
	// Certificate names the signer in outgoing messages.
	Certificate *Certificate
	// Store holds the certificates whose signatures are accepted.
	Store *Store
	// Digest is Celery's security_digest. Default "sha256".
	Digest string
	// RequireSigned refuses every message that is not sealed, in both
	// directions: commands at a node, replies at a mailbox. Without it,
	// unsigned messages pass with an empty signer (so a handler or an
	// authorization policy can tell), while a message that is sealed but
	// does not verify is always refused.
	RequireSigned bool
	// BindReplies makes VerifyNode require that a reply's signer
	// certificate names the node the reply comes from, by its subject
	// common name or a subject alternative name, so one compromised node
	// cannot answer for another.
	BindReplies bool
}

// Signer seals outgoing message bodies and opens incoming ones with
// Celery's auth serializer. It is safe for concurrent use.
type Signer struct {
	cfg  Config
	hash crypto.Hash
	now  func() time.Time
}

// New returns a signer.
func New(cfg Config) (*Signer, error) {
	if cfg.Key == nil || cfg.Certificate == nil || cfg.Store == nil {
		return nil, fmt.Errorf("%w: a private key, a certificate and a certificate store are all required", ErrBadKey)
	}
	h, err := Digest(cfg.Digest)
	if err != nil {
		return nil, err
	}
	if !cfg.Key.PublicKey.Equal(cfg.Certificate.pub) {
		return nil, fmt.Errorf("%w: the private key does not belong to the certificate %q", ErrBadKey, cfg.Certificate.ID())
	}
	if cfg.Certificate.Expired(time.Now()) {
		return nil, fmt.Errorf("%w: own certificate %q", ErrExpired, cfg.Certificate.ID())
	}
	if maxSalt(&cfg.Key.PublicKey, h) < 0 {
		return nil, fmt.Errorf("%w: a %d-bit key is too short for %s", ErrBadKey, cfg.Key.N.BitLen(), h)
	}
	return &Signer{cfg: cfg, hash: h, now: time.Now}, nil
}

// FromFiles returns a signer from PEM files, as Celery's setup_security
// reads its settings: security_key (keyFile), security_certificate
// (certFile) and security_cert_store (storePath, a directory or a glob).
// Key, Certificate and Store in cfg are replaced; the rest applies.
func FromFiles(keyFile, certFile, storePath string, cfg Config) (*Signer, error) {
	if keyFile == "" || certFile == "" || storePath == "" {
		return nil, fmt.Errorf("%w: a key file, a certificate file and a certificate store are all required", ErrBadKey)
	}
	if _, err := os.Stat(storePath); err != nil && !strings.ContainsAny(storePath, "*?[") {
		return nil, fmt.Errorf("security: certificate store: %w", err)
	}
	var err error
	if cfg.Key, err = LoadPrivateKey(keyFile); err != nil {
		return nil, err
	}
	if cfg.Certificate, err = LoadCertificate(certFile); err != nil {
		return nil, err
	}
	if cfg.Store, err = LoadStore(storePath); err != nil {
		return nil, err
	}
	return New(cfg)
}

// ID returns the signer id that outgoing messages carry.
func (s *Signer) ID() string { return s.cfg.Certificate.ID() }

// Store returns the store incoming signatures are checked against.
func (s *Signer) Store() *Store { return s.cfg.Store }

// RequireSigned reports whether unsigned messages are refused.
func (s *Signer) RequireSigned() bool { return s.cfg.RequireSigned }

// maxSalt is the PSS salt length that cryptography's PSS.MAX_LENGTH
// gives: the encoded message length minus the digest and two bytes.
func maxSalt(pub *rsa.PublicKey, h crypto.Hash) int {
	emLen := (pub.N.BitLen() - 1 + 7) / 8
	return emLen - h.Size() - 2
}

// Sign seals a serialized body with its content type and encoding, and
// returns the sealed body: base64 text, to be sent with ContentType and
// ContentEncoding. A body or field containing the separator \x00\x01 is
// refused, since Celery's unpacker would cut it there.
func (s *Signer) Sign(contentType, contentEncoding string, body []byte) ([]byte, error) {
	if bytes.Contains(body, sep) || strings.Contains(contentType, string(sep)) || strings.Contains(contentEncoding, string(sep)) {
		return nil, fmt.Errorf("%w: the body contains the separator \\x00\\x01, which Celery's unpacker cannot carry", ErrMalformed)
	}
	h := s.hash.New()
	h.Write(body)
	sig, err := rsa.SignPSS(rand.Reader, s.cfg.Key, s.hash, h.Sum(nil), &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthAuto})
	if err != nil {
		return nil, fmt.Errorf("security: sign: %w", err)
	}
	id := s.ID()
	packed := make([]byte, 0, len(id)+len(sig)+len(contentType)+len(contentEncoding)+len(body)+4*len(sep))
	packed = append(packed, id...)
	packed = append(packed, sep...)
	packed = append(packed, sig...)
	packed = append(packed, sep...)
	packed = append(packed, contentType...)
	packed = append(packed, sep...)
	packed = append(packed, contentEncoding...)
	packed = append(packed, sep...)
	packed = append(packed, body...)
	out := make([]byte, base64.StdEncoding.EncodedLen(len(packed)))
	base64.StdEncoding.Encode(out, packed)
	return out, nil
}

// Opened is a sealed body that verified.
type Opened struct {
	// Signer is the signer id, which names Cert in the store.
	Signer string
	// Cert is the signer's certificate.
	Cert *Certificate
	// ContentType and ContentEncoding name the inner serializer.
	ContentType, ContentEncoding string
	// Body is the inner serialized body the signature covers.
	Body []byte
	// Signature is the signature, unique to this sealing (PSS salts are
	// random), so it identifies a message for replay checks.
	Signature []byte
}

// Verify opens a sealed body: it unpacks it, finds the signer's
// certificate in the store and verifies the signature over the inner
// body. Errors wrap ErrMalformed, ErrUnknownSigner, ErrExpired or
// ErrBadSignature.
func (s *Signer) Verify(sealed []byte) (*Opened, error) {
	o, err := unpack(sealed, s.cfg.Store)
	if err != nil {
		return nil, err
	}
	if o.Cert.Expired(s.now()) {
		return nil, fmt.Errorf("%w: signer %q", ErrExpired, o.Signer)
	}
	h := s.hash.New()
	h.Write(o.Body)
	opts := &rsa.PSSOptions{SaltLength: maxSalt(o.Cert.pub, s.hash)}
	if err := rsa.VerifyPSS(o.Cert.pub, s.hash, h.Sum(nil), o.Signature, opts); err != nil {
		return nil, fmt.Errorf("%w from %q: %w", ErrBadSignature, o.Signer, err)
	}
	return o, nil
}

// unpack splits a sealed body as Celery's SecureSerializer._unpack does,
// taking the signature's length from the signer's key. It checks what
// Celery leaves unchecked: the separator after the signature, and that
// exactly three fields follow it.
func unpack(sealed []byte, store *Store) (*Opened, error) {
	raw := make([]byte, base64.StdEncoding.DecodedLen(len(sealed)))
	n, err := base64.StdEncoding.Decode(raw, sealed)
	if err != nil {
		return nil, fmt.Errorf("%w: not base64: %w", ErrMalformed, err)
	}
	raw = raw[:n]
	i := bytes.Index(raw, sep)
	if i < 0 {
		return nil, fmt.Errorf("%w: no separator after the signer", ErrMalformed)
	}
	signer := string(raw[:i])
	cert, ok := store.Get(signer)
	if !ok {
		return nil, fmt.Errorf("%w: %s", ErrUnknownSigner, quote(signer))
	}
	rest := raw[i+len(sep):]
	sigLen := cert.pub.Size()
	if len(rest) < sigLen+len(sep) {
		return nil, fmt.Errorf("%w: truncated signature from %s (%d bytes left, the key needs %d)", ErrMalformed, quote(signer), len(rest), sigLen)
	}
	sig := rest[:sigLen:sigLen]
	if !bytes.Equal(rest[sigLen:sigLen+len(sep)], sep) {
		return nil, fmt.Errorf("%w: no separator after the %d-byte signature from %s", ErrMalformed, sigLen, quote(signer))
	}
	fields := bytes.Split(rest[sigLen+len(sep):], sep)
	if len(fields) != 3 {
		return nil, fmt.Errorf("%w: %d fields after the signature, want 3 (content type, encoding, body)", ErrMalformed, len(fields))
	}
	return &Opened{
		Signer:          signer,
		Cert:            cert,
		ContentType:     string(fields[0]),
		ContentEncoding: string(fields[1]),
		Body:            fields[2],
		Signature:       sig,
	}, nil
}

// quote quotes an untrusted string for an error message, cut short.
func quote(s string) string {
	const max = 128
	if len(s) > max {
		return fmt.Sprintf("%q...", s[:max])
	}
	return fmt.Sprintf("%q", s)
}
