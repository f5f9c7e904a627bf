package redis

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync/atomic"

	"github.com/gopidbox/pidbox/transport"
	goredis "github.com/redis/go-redis/v9"
)

// checkHook carries the server check in the first pipelines of a
// transport that Open made on a single server, so that Open costs no
// round trip and a first call's set-up costs one: the check rides with the
// reply binding, the node lookup or the declaration, whichever goes first.
//
// The check is a CONFIG GET of maxmemory-policy, put in front of the
// pipeline. Any answer, a refusal included (ACLs, managed Redis), shows
// the server is there; when no connection could be made, the pipeline's
// error says that the server cannot be reached, and why (the last failed
// dial). Once a check
// is answered, pipelines go through untouched. The transport uses no
// go-redis transaction (TxPipeline) on this client, whose commands the
// check would land inside: a reply's MULTI and EXEC go as plain commands
// of a pipeline, after the check (queuePush).
type checkHook struct {
	t       *Transport
	checked atomic.Bool
	dialErr atomic.Pointer[error] // the last failed dial, until one succeeds
}

// DialHook implements goredis.Hook: it remembers why the last dial
// failed, for the check's error.
func (h *checkHook) DialHook(next goredis.DialHook) goredis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := next(ctx, network, addr)
		if err != nil {
			h.dialErr.Store(&err)
		} else {
			h.dialErr.Store(nil)
		}
		return c, err
	}
}

// ProcessHook implements goredis.Hook: a single command carries no
// check (it may be a connection's own handshake, which must not wait for
// another connection), but until a check is answered its failure to get
// a connection says that the server cannot be reached, and why.
func (h *checkHook) ProcessHook(next goredis.ProcessHook) goredis.ProcessHook {
	return func(ctx context.Context, cmd goredis.Cmder) error {
		err := next(ctx, cmd)
		if _, reply := err.(goredis.Error); err != nil && !reply && !h.checked.Load() {
			err = h.unreachable(err)
			cmd.SetErr(err)
		}
		return err
	}
}

// ProcessPipelineHook implements goredis.Hook: until a check is answered,
// every pipeline carries one.
func (h *checkHook) ProcessPipelineHook(next goredis.ProcessPipelineHook) goredis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []goredis.Cmder) error {
		if h.checked.Load() {
			return next(ctx, cmds)
		}
		policy := goredis.NewMapStringStringCmd(ctx, "config", "get", "maxmemory-policy")
		err := next(ctx, append([]goredis.Cmder{policy}, cmds...))
		perr := policy.Err()
		_, refused := perr.(goredis.Error)
		// A pipeline that found no connection sets no command's error:
		// only a reply (a map, or a refusal) shows that the server answered.
		if answered := refused || perr == nil && (err == nil || policy.Val() != nil); !answered {
			if err == nil {
				err = perr
			}
			// Callers read the commands' own errors as often as the
			// pipeline's: every one says so.
			err = h.unreachable(err)
			for _, c := range cmds {
				if _, reply := c.Err().(goredis.Error); !reply {
					c.SetErr(err)
				}
			}
			return err
		}
		if h.checked.CompareAndSwap(false, true) {
			h.t.checkEviction(policy)
		}
		if err != nil && err == perr {
			// The check's own refusal is not the pipeline's error: the
			// first of the others is, a nil reply counting, as go-redis's
			// Exec has it (firstErr, for our own callers, skips those).
			err = nil
			for _, c := range cmds {
				if err = c.Err(); err != nil {
					break
				}
			}
		}
		return err
	}
}

// unreachable says, when the last dial failed, that the server cannot be
// reached, and why: go-redis retries failed dials until the deadline,
// which hides their cause. A server that was dialled but does not answer
// (paused, frozen) is not unreachable: its error is its deadline's.
func (h *checkHook) unreachable(err error) error {
	d := h.dialErr.Load()
	if d == nil || errors.Is(err, context.Canceled) || errors.Is(err, transport.ErrUnreachable) {
		return err // connected, or the caller gave up, or it is said already
	}
	if !errors.Is(err, *d) && err.Error() != (*d).Error() {
		return fmt.Errorf("%w: %w: %w", transport.ErrUnreachable, err, *d)
	}
	return fmt.Errorf("%w: %w", transport.ErrUnreachable, err)
}
