package demo

import (
	"context"
	"errors"
	"fmt"

	"github.com/gopidbox/pidbox"
	"github.com/gopidbox/pidbox/security"
)

// ErrSecurityFlags: some of the --security-* flags were given, not all.
var ErrSecurityFlags = errors.New("--security-key, --security-certificate and --security-cert-store go together: give all three or none")

// Security applies the --security-key, --security-certificate and
// --security-cert-store flags, named after Celery's settings, to opts:
// given all three, every message is signed with Celery's auth serializer
// and unsigned or badly signed ones are refused. It returns the signer,
// nil when no flag is given.
func Security(key, cert, store string, opts *pidbox.Options) (*security.Signer, error) {
	if key == "" && cert == "" && store == "" {
		return nil, nil
	}
	if key == "" || cert == "" || store == "" {
		return nil, ErrSecurityFlags
	}
	s, err := security.FromFiles(key, cert, store, security.Config{RequireSigned: true})
	if err != nil {
		return nil, fmt.Errorf("message signing: %w", err)
	}
	opts.Sealer = s
	return s, nil
}

// ReplayCheck is a node's Authorize with replay protection only: signed
// commands without an expiry, expiring more than a minute ahead, or
// already served are refused.
func ReplayCheck() func(context.Context, *pidbox.Request) error {
	g := security.NewReplayGuard(security.ReplayOptions{})
	return func(_ context.Context, r *pidbox.Request) error { return g.Check(r) }
}
