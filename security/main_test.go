package security

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/gopidbox/pidbox/internal/certtest"
)

// Fixtures made once per test binary: RSA key generation is slow.
var (
	fixDir   string // temporary directory holding every file below
	storeDir string // the trusted store: ctl.pem and node.pem
	ca       *certtest.Cert
	ctl      *certtest.Cert // the controller, trusted
	node     *certtest.Cert // a node, trusted; CN "node1@host", SAN "node1.example"
	outsider *certtest.Cert // signed by another CA, not in the store
)

func TestMain(m *testing.M) {
	var err error
	fixDir, err = os.MkdirTemp("", "security-test-")
	if err != nil {
		panic(err)
	}
	storeDir = filepath.Join(fixDir, "store")
	if err := os.Mkdir(storeDir, 0o755); err != nil {
		panic(err)
	}
	ca = certtest.NewCA(nil, fixDir, "ca", certtest.Spec{Organization: "pidbox tests", CommonName: "test CA"})
	ctl = certtest.Issue(nil, storeDir, "ctl", ca, certtest.Spec{CommonName: "controller", Serial: 1001})
	node = certtest.Issue(nil, storeDir, "node", ca, certtest.Spec{CommonName: "node1@host", DNSNames: []string{"node1.example"}, Serial: 1002})
	other := certtest.NewCA(nil, fixDir, "other-ca", certtest.Spec{Organization: "pidbox tests", CommonName: "other CA"})
	outsider = certtest.Issue(nil, fixDir, "outsider", other, certtest.Spec{CommonName: "controller", Serial: 1001})
	// Private keys do not belong in a store directory.
	for _, c := range []*certtest.Cert{ctl, node} {
		if err := os.Rename(c.KeyFile, filepath.Join(fixDir, filepath.Base(c.KeyFile))); err != nil {
			panic(err)
		}
		c.KeyFile = filepath.Join(fixDir, filepath.Base(c.KeyFile))
	}
	code := m.Run()
	os.RemoveAll(fixDir)
	os.Exit(code)
}

// newSigner returns a signer for c over the trusted store.
func newSigner(t testing.TB, c *certtest.Cert, cfg Config) *Signer {
	t.Helper()
	s, err := FromFiles(c.KeyFile, c.CertFile, storeDir, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}
