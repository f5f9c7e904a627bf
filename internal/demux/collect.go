package demux

import (
	"context"
	"errors"
	"iter"
	"time"

	"github.com/gopidbox/pidbox/reply"
)

// Rules say when a gather has all it asked for. The deadline and
// cancellation come from the context given to Collect.
type Rules struct {
	// Limit ends the gather after this many replies; 0 means no limit.
	Limit int
	// Expect ends the gather once every named node has replied. Nil means
	// no expectation; an empty, non-nil slice ends the gather at once.
	Expect []string
	// Quiet, when positive, ends the gather once this long has passed
	// after a reply with no further reply: for broadcasts whose nodes
	// cannot be known.
	Quiet time.Duration
}

// Collect streams the replies arriving in in until the rules are met, ctx
// reaches its deadline, or the consumer stops. Reaching the deadline is the
// normal end of a gather and yields no error; cancellation yields
// ctx.Err(). Collect closes in when it returns.
func Collect(ctx context.Context, in *Inbox, rules Rules) iter.Seq2[reply.Reply, error] {
	return func(yield func(reply.Reply, error) bool) {
		defer in.Close()
		var missing map[string]bool
		if rules.Expect != nil {
			missing = make(map[string]bool, len(rules.Expect))
			for _, n := range rules.Expect {
				missing[n] = true
			}
			if len(missing) == 0 {
				return
			}
		}
		seen := map[string]bool{}
		for n := 0; rules.Limit <= 0 || n < rules.Limit; n++ {
			r, err := next(ctx, in, rules.Quiet, n > 0)
			if err != nil {
				if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, errQuiet) {
					yield(reply.Reply{}, err)
				}
				return
			}
			r.Duplicate = seen[r.Node]
			seen[r.Node] = true
			if !yield(r, nil) {
				return
			}
			if missing != nil {
				delete(missing, r.Node)
				if len(missing) == 0 {
					return
				}
			}
		}
	}
}

// errQuiet ends a gather after a quiet gap.
var errQuiet = errors.New("quiet gap")

// next waits for the next reply; after a first reply, for at most quiet
// when it is positive.
func next(ctx context.Context, in *Inbox, quiet time.Duration, replied bool) (reply.Reply, error) {
	if quiet <= 0 || !replied {
		return in.Next(ctx)
	}
	qctx, cancel := context.WithTimeoutCause(ctx, quiet, errQuiet)
	defer cancel()
	r, err := in.Next(qctx)
	if err != nil && ctx.Err() == nil && errors.Is(context.Cause(qctx), errQuiet) {
		return r, errQuiet
	}
	return r, err
}
