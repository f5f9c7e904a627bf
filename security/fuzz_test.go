package security

import (
	"bytes"
	"encoding/base64"
	"testing"
)

// FuzzUnpack feeds arbitrary sealed bodies to the unpacker and to Verify.
// Neither may panic; whatever unpacks must repack to the same bytes, with
// a signature exactly as long as the signer's key; and nothing verifies
// that the trusted controller did not sign. The seed corpus is in
// testdata/fuzz/FuzzUnpack.
func FuzzUnpack(f *testing.F) {
	a := newSigner(f, ctl, Config{})
	b := newSigner(f, node, Config{})
	good, err := a.Sign("application/json", "utf-8", []byte(`{"method": "ping"}`))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add([]byte("not base64"))
	f.Add(pack([]byte(a.ID()), bytes.Repeat([]byte{1}, 256), []byte("application/json"), []byte("utf-8"), []byte("{}")))
	f.Add(pack([]byte(a.ID()), bytes.Repeat([]byte{0, 1}, 128), []byte("a"), []byte("b"), []byte("c")))
	f.Add(pack([]byte(a.ID()), []byte("short")))
	f.Fuzz(func(t *testing.T, sealed []byte) {
		o, err := unpack(sealed, b.Store())
		if err != nil {
			if o != nil {
				t.Fatal("an error with a result")
			}
			return
		}
		if len(o.Signature) != o.Cert.pub.Size() {
			t.Fatalf("signature of %d bytes for a %d-byte key", len(o.Signature), o.Cert.pub.Size())
		}
		raw, _ := base64.StdEncoding.DecodeString(string(sealed))
		again := bytes.Join([][]byte{[]byte(o.Signer), o.Signature, []byte(o.ContentType), []byte(o.ContentEncoding), o.Body}, sep)
		if !bytes.Equal(raw, again) {
			t.Fatalf("repacked %q, was %q", again, raw)
		}
		if v, err := b.Verify(sealed); err == nil && (v.Signer != a.ID() || string(v.Body) != `{"method": "ping"}`) {
			t.Fatalf("verified a body the controller did not sign: %+v", v)
		}
	})
}
