package security

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/gopidbox/pidbox/internal/certtest"
)

func TestSignerIDIsIssuerValuesAndSerial(t *testing.T) {
	s := newSigner(t, ctl, Config{})
	if got, want := s.ID(), "pidbox tests test CA 1001"; got != want {
		t.Fatalf("signer id %q, want %q", got, want)
	}
	if got := s.Store().IDs(); len(got) != 2 || got[0] != "pidbox tests test CA 1001" || got[1] != "pidbox tests test CA 1002" {
		t.Fatalf("store ids %q", got)
	}
}

func TestSignVerifyRoundTrip(t *testing.T) {
	for _, digest := range []string{"", "sha256", "SHA512", "sha3_256", "sha384"} {
		t.Run(digest, func(t *testing.T) {
			a := newSigner(t, ctl, Config{Digest: digest})
			b := newSigner(t, node, Config{Digest: digest})
			body := []byte(`{"method": "ping", "arguments": {}}`)
			sealed, err := a.Sign("application/json", "utf-8", body)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := base64.StdEncoding.DecodeString(string(sealed)); err != nil {
				t.Fatalf("sealed body is not base64: %v", err)
			}
			o, err := b.Verify(sealed)
			if err != nil {
				t.Fatal(err)
			}
			if o.Signer != a.ID() || o.ContentType != "application/json" || o.ContentEncoding != "utf-8" || !bytes.Equal(o.Body, body) {
				t.Fatalf("opened %+v", o)
			}
			again, _ := a.Sign("application/json", "utf-8", body)
			if bytes.Equal(again, sealed) {
				t.Fatal("two sealings of one body are identical; PSS salts should differ")
			}
		})
	}
}

func TestVerifyRefusesDigestMismatch(t *testing.T) {
	a := newSigner(t, ctl, Config{Digest: "sha512"})
	b := newSigner(t, node, Config{})
	sealed, err := a.Sign("application/json", "utf-8", []byte(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Verify(sealed); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("sha512 signature checked as sha256: %v", err)
	}
}

// pack builds a packed payload by hand, for hostile cases.
func pack(fields ...[]byte) []byte {
	raw := bytes.Join(fields, sep)
	return []byte(base64.StdEncoding.EncodeToString(raw))
}

func TestVerifyRefusesBadInput(t *testing.T) {
	a := newSigner(t, ctl, Config{})
	b := newSigner(t, node, Config{})
	evil := newSignerFor(t, outsider)
	body := []byte(`{"method": "shutdown", "arguments": {}}`)
	good, err := a.Sign("application/json", "utf-8", body)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := base64.StdEncoding.DecodeString(string(good))
	o, err := b.Verify(good)
	if err != nil {
		t.Fatal(err)
	}
	sig := o.Signature
	id := []byte(a.ID())
	ct, ce := []byte("application/json"), []byte("utf-8")

	evilSealed, err := evil.Sign("application/json", "utf-8", body)
	if err != nil {
		t.Fatal(err)
	}
	evilRaw, _ := base64.StdEncoding.DecodeString(string(evilSealed))
	evilSig := evilRaw[len(evil.ID())+2 : len(evil.ID())+2+256]

	cases := []struct {
		name   string
		sealed []byte
		want   error
	}{
		{"not base64", []byte("this is not base64!"), ErrMalformed},
		{"base64 with junk inside", append([]byte("AAAA*"), good...), ErrMalformed},
		{"empty", nil, ErrMalformed},
		{"no separator", []byte(base64.StdEncoding.EncodeToString([]byte("just a signer"))), ErrMalformed},
		{"truncated signature", pack(id, sig[:100]), ErrMalformed},
		{"truncated message", []byte(base64.StdEncoding.EncodeToString(raw[:len(id)+2+200])), ErrMalformed},
		{"signature cut by one byte", pack(id, sig[:255], ct, ce, body), ErrMalformed},
		{"unknown signer", []byte(evilSealed), ErrUnknownSigner},
		{"trusted id, outsider's signature", pack(id, evilSig, ct, ce, body), ErrBadSignature},
		{"valid signature over a different body", pack(id, sig, ct, ce, []byte(`{"method": "ping", "arguments": {}}`)), ErrBadSignature},
		{"valid signature, body with a byte appended", pack(id, sig, ct, ce, append(append([]byte{}, body...), ' ')), ErrBadSignature},
		{"missing fields", pack(id, sig, ct), ErrMalformed},
		{"extra field", pack(id, sig, ct, ce, body, []byte("more")), ErrMalformed},
		{"junk signature", pack(id, bytes.Repeat([]byte{0x42}, 256), ct, ce, body), ErrBadSignature},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			o, err := b.Verify(c.sealed)
			if !errors.Is(err, c.want) {
				t.Fatalf("got %v, %+v; want %v", err, o, c.want)
			}
			if o != nil {
				t.Fatal("a refused message was returned")
			}
		})
	}
}

func newSignerFor(t testing.TB, c *certtest.Cert) *Signer {
	t.Helper()
	cert, err := NewCertificate(c.Cert)
	if err != nil {
		t.Fatal(err)
	}
	st, err := NewStore(cert)
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(Config{Key: c.Key, Certificate: cert, Store: st})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestSignRefusesSeparatorInBody(t *testing.T) {
	a := newSigner(t, ctl, Config{})
	if _, err := a.Sign("application/x-msgpack", "binary", []byte{0x81, 0x00, 0x01}); !errors.Is(err, ErrMalformed) {
		t.Fatalf("got %v", err)
	}
}

// TestJunkFloodBoundedMemory verifies 100,000 junk sealed bodies of every
// kind: each is refused, and the heap does not grow with their number.
func TestJunkFloodBoundedMemory(t *testing.T) {
	a := newSigner(t, ctl, Config{})
	b := newSigner(t, node, Config{})
	id := []byte(a.ID())
	body := []byte(`{"method": "shutdown", "arguments": {}}`)
	ct, ce := []byte("application/json"), []byte("utf-8")
	junkSig := make([]byte, 256)
	var before, after runtime.MemStats
	const n = 100_000
	refused := 0
	for i := range n {
		var sealed []byte
		switch i % 5 {
		case 0:
			rand.Read(junkSig)
			sealed = pack(id, junkSig, ct, ce, body) // a junk signature from a trusted signer
		case 1:
			sealed = pack([]byte("CA "+strings.Repeat("x", i%300)), junkSig, ct, ce, body) // unknown signer
		case 2:
			sealed = pack(id, junkSig[:i%256]) // truncated
		case 3:
			sealed = []byte("%%%not base64%%%")
		case 4:
			sealed = make([]byte, 1+i%400)
			rand.Read(sealed)
		}
		if _, err := b.Verify(sealed); err != nil {
			refused++
		}
		if i == n/10 {
			runtime.GC()
			runtime.ReadMemStats(&before)
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	if refused != n {
		t.Fatalf("%d of %d junk messages verified", n-refused, n)
	}
	if grow := int64(after.HeapAlloc) - int64(before.HeapAlloc); grow > 8<<20 {
		t.Fatalf("heap grew by %d bytes over 90,000 junk messages", grow)
	}
}

func TestStore(t *testing.T) {
	t.Run("expired certificate refuses the load", func(t *testing.T) {
		dir := t.TempDir()
		certtest.Issue(t, dir, "old", ca, certtest.Spec{NotBefore: time.Now().Add(-2 * time.Hour), NotAfter: time.Now().Add(-time.Hour)})
		os.Remove(filepath.Join(dir, "old.key"))
		_, err := LoadStore(dir)
		if !errors.Is(err, ErrExpired) || !strings.Contains(err.Error(), "old.pem") {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("duplicate id", func(t *testing.T) {
		dir := t.TempDir()
		certtest.Issue(t, dir, "a", ca, certtest.Spec{Serial: 7})
		certtest.Issue(t, dir, "b", ca, certtest.Spec{Serial: 7})
		os.Remove(filepath.Join(dir, "a.key"))
		os.Remove(filepath.Join(dir, "b.key"))
		if _, err := LoadStore(dir); !errors.Is(err, ErrBadCertificate) || !strings.Contains(err.Error(), "duplicate") {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("a file that is not a certificate", func(t *testing.T) {
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("hello"), 0o644)
		if _, err := LoadStore(dir); !errors.Is(err, ErrBadCertificate) || !strings.Contains(err.Error(), "notes.txt") {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("glob, dot files and subdirectories", func(t *testing.T) {
		dir := t.TempDir()
		certtest.Issue(t, dir, "x", ca, certtest.Spec{Serial: 8})
		os.WriteFile(filepath.Join(dir, ".hidden"), []byte("junk"), 0o644)
		os.Mkdir(filepath.Join(dir, "sub"), 0o755)
		s, err := LoadStore(filepath.Join(dir, "*.pem"))
		if err != nil || s.Len() != 1 {
			t.Fatalf("glob: %v, %v", s, err)
		}
		os.Remove(filepath.Join(dir, "x.key"))
		if s, err = LoadStore(dir); err != nil || s.Len() != 1 {
			t.Fatalf("dir: %v, %v", s, err)
		}
	})
	t.Run("certificate expiring after the load", func(t *testing.T) {
		a := newSigner(t, ctl, Config{})
		b := newSigner(t, node, Config{})
		sealed, _ := a.Sign("application/json", "utf-8", []byte(`{}`))
		b.now = func() time.Time { return ctl.Cert.NotAfter.Add(time.Second) }
		if _, err := b.Verify(sealed); !errors.Is(err, ErrExpired) {
			t.Fatalf("got %v", err)
		}
	})
}

func TestNewRefusesBadConfig(t *testing.T) {
	if _, err := FromFiles(ctl.KeyFile, node.CertFile, storeDir, Config{}); !errors.Is(err, ErrBadKey) {
		t.Fatalf("key of another certificate: %v", err)
	}
	if _, err := FromFiles(ctl.KeyFile, ctl.CertFile, storeDir, Config{Digest: "md5"}); !errors.Is(err, ErrDigest) {
		t.Fatalf("md5: %v", err)
	}
	if _, err := FromFiles(ctl.KeyFile, ctl.CertFile, filepath.Join(fixDir, "nosuch"), Config{}); err == nil {
		t.Fatal("missing store accepted")
	}
	_, err := FromFiles(ctl.CertFile, ctl.CertFile, storeDir, Config{})
	if !errors.Is(err, ErrBadKey) || strings.Contains(err.Error(), "BEGIN") {
		t.Fatalf("certificate as key: %v", err)
	}
}

func TestCertificateNames(t *testing.T) {
	c, err := LoadCertificate(node.CertFile)
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]bool{"node1@host": true, "node1.example": true, "node2@host": false, "node1@host ": false, "": false} {
		if c.Names(name) != want {
			t.Errorf("Names(%q) = %v", name, !want)
		}
	}
}
