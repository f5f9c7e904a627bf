package pidbox

import (
	"time"

	"github.com/gopidbox/pidbox/wire"
)

// CallOption selects the nodes a command goes to and says when to stop
// gathering replies.
type CallOption func(*callConfig)

type callConfig struct {
	destination []string
	pattern     string
	matcher     string
	limit       int
	timeout     time.Duration
}

// To sends the command to the named nodes only. Unless Limit says
// otherwise, gathering stops once every one of them has replied.
func To(nodes ...string) CallOption {
	return func(c *callConfig) { c.destination = append(c.destination, nodes...) }
}

// Glob sends the command to the nodes whose names match a shell pattern,
// with Python's fnmatch semantics (see Match).
func Glob(pattern string) CallOption {
	return func(c *callConfig) { c.pattern, c.matcher = pattern, wire.MatchGlob }
}

// PCRE sends the command to the nodes whose names match a regular
// expression anchored at the start, like Python's re.match (see Match).
func PCRE(pattern string) CallOption {
	return func(c *callConfig) { c.pattern, c.matcher = pattern, wire.MatchPCRE }
}

// Limit stops gathering after n replies. By default a call stops when the
// nodes it addressed have all replied, or at its deadline.
func Limit(n int) CallOption {
	return func(c *callConfig) { c.limit = n }
}

// Timeout bounds the whole call: publishing, and gathering every reply. It
// also becomes the request's expiry, after which nodes ignore it. Without
// it a call uses its context's deadline, or the mailbox's default timeout.
func Timeout(d time.Duration) CallOption {
	return func(c *callConfig) { c.timeout = d }
}
