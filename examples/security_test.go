package examples_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/gopidbox/pidbox/internal/certtest"
	"github.com/gopidbox/pidbox/internal/redistest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// pki is a CA with the certificates of a signed fleet: the store trusts
// the controller, the Celery worker and the Go worker, not the outsider.
type pki struct {
	store                            string
	controller, celery, gw, outsider *certtest.Cert
}

func newPKI(t *testing.T) *pki {
	dir := t.TempDir()
	p := &pki{store: filepath.Join(dir, "store")}
	require.NoError(t, os.Mkdir(p.store, 0o755))
	ca := certtest.NewCA(t, dir, "ca", certtest.Spec{Organization: "pidbox", CommonName: "fleet CA"})
	p.controller = certtest.Issue(t, dir, "controller", ca, certtest.Spec{CommonName: "controller"})
	p.celery = certtest.Issue(t, dir, "celery", ca, certtest.Spec{CommonName: "celery@secure"})
	p.gw = certtest.Issue(t, dir, "go", ca, certtest.Spec{CommonName: "go@secure"})
	p.outsider = certtest.Issue(t, dir, "outsider", certtest.NewCA(t, dir, "other-ca", certtest.Spec{}), certtest.Spec{CommonName: "controller"})
	for _, c := range []*certtest.Cert{p.controller, p.celery, p.gw} {
		require.NoError(t, os.WriteFile(filepath.Join(p.store, filepath.Base(c.CertFile)), c.CertPEM, 0o644))
	}
	return p
}

// flags are the --security-* flags for a certificate.
func (p *pki) flags(c *certtest.Cert) []string {
	return []string{"--security-key", c.KeyFile, "--security-certificate", c.CertFile, "--security-cert-store", p.store}
}

// env configures celery_secure.py for a certificate.
func (p *pki) env(url string, c *certtest.Cert) []string {
	return []string{"PIDBOX_BROKER=" + url, "PIDBOX_SECURITY_KEY=" + c.KeyFile, "PIDBOX_SECURITY_CERTIFICATE=" + c.CertFile, "PIDBOX_SECURITY_CERT_STORE=" + p.store}
}

func secureCelery(t *testing.T, env []string, args ...string) string {
	t.Helper()
	cmd := exec.Command(redistest.Python, append([]string{"-m", "celery", "-A", "celery_secure"}, args...)...)
	cmd.Dir = "testdata"
	cmd.Env = append(os.Environ(), env...)
	out, _ := cmd.CombinedOutput() // celery's exit status says "no reply" for shutdown
	return string(out)
}

// TestSignedGoWorkerAndCelery: a Go worker that requires signatures
// answers `celery inspect ping` from a Celery app with setup_security, and
// stops on its signed `celery control shutdown`, but not on an unsigned
// shutdown nor on one signed by a certificate outside its store.
func TestSignedGoWorkerAndCelery(t *testing.T) {
	redistest.RequirePython(t, "kombu", "celery", "redis", "cryptography")
	srv := redistest.Start(t)
	srv.AllowNoTTL("_kombu.")
	url := srv.URL(0)
	p := newPKI(t)
	w := worker(t, url, "go@secure", p.flags(p.gw)...)
	w.WaitFor("message signing on", 5*time.Second)

	out := secureCelery(t, p.env(url, p.controller), "inspect", "ping", "-d", "go@secure")
	assert.Contains(t, out, "go@secure: OK", out)
	assert.Contains(t, out, "pong", out)

	// Unsigned: the Go controller without the flags.
	r := controller(t, "--broker", url, "shutdown", "-d", "go@secure")
	require.Equal(t, 0, r.code, r.stderr)
	w.WaitFor("unsigned message", 5*time.Second)
	// Signed, by a certificate the worker's store does not hold.
	secureCelery(t, p.env(url, p.outsider), "control", "shutdown", "-d", "go@secure")
	w.WaitFor("unknown signer", 5*time.Second)
	require.ErrorIs(t, w.Wait(500*time.Millisecond), context.DeadlineExceeded, "the worker still runs:\n%s", w.Output())
	r = controller(t, append([]string{"--broker", url, "ping", "-d", "go@secure", "--timeout", "5s"}, p.flags(p.controller)...)...)
	require.Equal(t, 0, r.code, r.stderr)
	assert.Contains(t, r.stdout, "->  go@secure: OK pong")

	secureCelery(t, p.env(url, p.controller), "control", "shutdown", "-d", "go@secure")
	require.NoError(t, w.Wait(15*time.Second), "the worker stops on a signed shutdown:\n%s", w.Output())
}

// TestSignedControllerAgainstCelery: the Go controller with the
// --security-* flags pings, inspects and shuts down a Celery worker that
// runs with setup_security; without them it gets no reply.
func TestSignedControllerAgainstCelery(t *testing.T) {
	redistest.RequirePython(t, "kombu", "celery", "redis", "cryptography")
	srv := redistest.Start(t)
	srv.AllowNoTTL("_kombu.")
	url := srv.URL(0)
	p := newPKI(t)
	cw := redistest.StartProcess(t, "testdata", p.env(url, p.celery), redistest.Python,
		"-m", "celery", "-A", "celery_secure", "worker", "--hostname", "celery@secure", "-P", "solo",
		"--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "info")
	cw.WaitFor("celery@secure ready", 60*time.Second)
	signed := func(args ...string) result {
		return controller(t, append(append([]string{"--broker", url}, p.flags(p.controller)...), args...)...)
	}

	r := signed("ping", "-d", "celery@secure", "--timeout", "5s")
	require.Equal(t, 0, r.code, r.stderr)
	assert.Contains(t, r.stdout, "->  celery@secure: OK pong")
	r = signed("--json", "inspect", "stats", "-d", "celery@secure", "--timeout", "5s")
	require.Equal(t, 0, r.code, r.stderr)
	assert.Contains(t, string(jsonObject(t, r.stdout)["celery@secure"]), `"pid"`)

	r = controller(t, "--broker", url, "ping", "-d", "celery@secure", "--timeout", "1s")
	assert.Equal(t, 1, r.code, "an unsigned ping gets no reply: %s", r.stdout)

	r = signed("shutdown", "-d", "celery@secure")
	require.Equal(t, 0, r.code, r.stderr)
	require.NoError(t, cw.Wait(30*time.Second), "the Celery worker stops on a signed shutdown:\n%s", cw.Output())
}

func TestSecurityFlagsGoTogether(t *testing.T) {
	r := controller(t, "--broker", "memory://", "--security-key", "k.pem", "ping")
	assert.Equal(t, 2, r.code)
	assert.Contains(t, r.stderr, "give all three or none")
	p := newPKI(t)
	r = controller(t, append([]string{"--broker", "memory://", "ping"}, p.flags(p.controller)...)...)
	assert.Equal(t, 0, r.code, "the in-process demo fleet signs too: %s", r.stderr)
	assert.Contains(t, r.stdout, "3 nodes replied.")
}
