package security

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"os/exec"
	"strings"
	"testing"

	"github.com/gopidbox/pidbox/internal/redistest"
)

// celeryAuth runs Celery's own SecureSerializer (celery/security) as
// installed by python3-celery: "sign" serializes the JSON on stdin, "verify"
// deserializes the sealed body on stdin and prints it as JSON, "id" prints
// the certificate's signer id.
const celeryAuth = `
import json, sys
from celery.security.serialization import SecureSerializer
from celery.security.key import PrivateKey
from celery.security.certificate import Certificate, FSCertStore
mode, key, cert, store, digest = sys.argv[1:6]
c = Certificate(open(cert).read())
if mode == "id":
    sys.stdout.write(c.get_id())
    sys.exit(0)
s = SecureSerializer(PrivateKey(open(key).read()), c, FSCertStore(store), digest, serializer="json")
if mode == "sign":
    sys.stdout.write(s.serialize(json.loads(sys.stdin.read())))
else:
    sys.stdout.write(json.dumps(s.deserialize(sys.stdin.read()), sort_keys=True))
`

func runCelery(t *testing.T, stdin []byte, mode, key, cert, digest string) ([]byte, error) {
	t.Helper()
	cmd := exec.Command(redistest.Python, "-c", celeryAuth, mode, key, cert, storeDir, digest)
	cmd.Stdin = bytes.NewReader(stdin)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
		t.Logf("python %s: %v: %s", mode, err, lines[len(lines)-1])
	}
	return out, err
}

// TestCeleryInterop checks the serializer against Celery's own, both ways:
// Python signs and Go verifies, Go signs and Python verifies, with the
// default digest and another one, and both agree on signer ids.
func TestCeleryInterop(t *testing.T) {
	redistest.RequirePython(t, "celery.security.serialization", "cryptography")
	id, err := runCelery(t, nil, "id", ctl.KeyFile, ctl.CertFile, "sha256")
	if err != nil {
		t.Fatal(err)
	}
	if got := newSigner(t, ctl, Config{}).ID(); got != string(id) {
		t.Fatalf("Go signer id %q, Celery's %q", got, id)
	}
	for _, digest := range []string{"sha256", "sha512"} {
		t.Run(digest, func(t *testing.T) {
			goNode := newSigner(t, node, Config{Digest: digest})
			msg := map[string]any{"method": "shutdown", "arguments": map[string]any{"n": 1.5}, "destination": []any{"node1@host"}, "ticket": "t-1"}
			in, _ := json.Marshal(msg)

			sealed, err := runCelery(t, in, "sign", ctl.KeyFile, ctl.CertFile, digest)
			if err != nil {
				t.Fatal(err)
			}
			o, err := goNode.Verify(sealed)
			if err != nil {
				t.Fatalf("Go cannot verify Celery's signature: %v", err)
			}
			var got map[string]any
			if o.ContentType != "application/json" || o.ContentEncoding != "utf-8" || json.Unmarshal(o.Body, &got) != nil || got["ticket"] != "t-1" || got["method"] != "shutdown" {
				t.Fatalf("opened %q %q %s", o.ContentType, o.ContentEncoding, o.Body)
			}

			body := []byte(`{"node1@host": {"ok": "pong"}}`)
			goSealed, err := goNode.Sign("application/json", "utf-8", body)
			if err != nil {
				t.Fatal(err)
			}
			out, err := runCelery(t, goSealed, "verify", ctl.KeyFile, ctl.CertFile, digest)
			if err != nil {
				t.Fatalf("Celery cannot verify Go's signature: %v", err)
			}
			if string(out) != `{"node1@host": {"ok": "pong"}}` {
				t.Fatalf("Celery opened %s", out)
			}

			// The same check must fail on a body that was changed.
			raw, _ := base64.StdEncoding.DecodeString(string(goSealed))
			raw = bytes.Replace(raw, []byte("pong"), []byte("pwnd"), 1)
			if _, err := runCelery(t, []byte(base64.StdEncoding.EncodeToString(raw)), "verify", ctl.KeyFile, ctl.CertFile, digest); err == nil {
				t.Fatal("Celery verified a changed body")
			}
		})
	}
}
