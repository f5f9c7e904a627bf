package security

import (
	"context"
	"fmt"
	"slices"

	"github.com/gopidbox/pidbox"
)

// DefaultReadOnly lists the commands that only report: the built-ins
// ping, clock and stats, and Celery's inspect commands that change
// nothing. hello is not among them (it merges revoked task ids into the
// receiver), nor are memsample and objgraph (they record or write).
func DefaultReadOnly() []string {
	return []string{
		"ping", "clock", "stats",
		"report", "conf", "dump_conf", "query_task",
		"scheduled", "dump_schedule", "reserved", "dump_reserved",
		"active", "dump_active", "revoked", "dump_revoked",
		"registered", "dump_tasks", "active_queues", "memdump",
	}
}

// Policy is a ready authorization policy for NodeOptions.Authorize: every
// trusted signer may run the read-only commands; shutdown and every other
// command (custom ones included) are for the listed admins only; unsigned
// commands are refused. With a ReplayGuard, signed commands are checked
// for replays first.
//
//	signer, _ := security.FromFiles(key, cert, store, security.Config{RequireSigned: true})
//	policy := &security.Policy{Store: signer.Store(), Admins: []string{"ops-controller"}, Replay: security.NewReplayGuard(security.ReplayOptions{})}
//	node := mb.NewNode(name, pidbox.NodeOptions{Authorize: policy.Authorize})
type Policy struct {
	// Admins may run every command. An entry is a signer id, or, when
	// Store is set, the subject common name of a certificate in it.
	Admins []string
	// ReadOnly lists the commands any trusted signer may run. Nil means
	// DefaultReadOnly().
	ReadOnly []string
	// Store resolves signer ids to certificates, so that Admins may name
	// common names. Usually Signer.Store().
	Store *Store
	// Replay, when set, refuses replayed and unbounded signed commands.
	Replay *ReplayGuard
}

// Authorize decides whether req may run; its signature fits
// pidbox.NodeOptions.Authorize. Refusals wrap ErrNotAuthorized or
// ErrReplay.
func (p *Policy) Authorize(_ context.Context, req *pidbox.Request) error {
	if req.Signer == "" {
		return fmt.Errorf("%w: %s is not signed", ErrNotAuthorized, req.Method)
	}
	if p.Replay != nil {
		if err := p.Replay.Check(req); err != nil {
			return err
		}
	}
	readOnly := p.ReadOnly
	if readOnly == nil {
		readOnly = defaultReadOnly
	}
	if slices.Contains(readOnly, req.Method) || p.isAdmin(req.Signer) {
		return nil
	}
	return fmt.Errorf("%w: %q may not run %s", ErrNotAuthorized, req.Signer, req.Method)
}

// defaultReadOnly is DefaultReadOnly's list, read only.
var defaultReadOnly = DefaultReadOnly()

func (p *Policy) isAdmin(signer string) bool {
	if slices.Contains(p.Admins, signer) {
		return true
	}
	if p.Store == nil {
		return false
	}
	c, ok := p.Store.Get(signer)
	return ok && slices.Contains(p.Admins, c.X509.Subject.CommonName)
}
