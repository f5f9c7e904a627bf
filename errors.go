package pidbox

import (
	"errors"

	"github.com/gopidbox/pidbox/internal/demux"
)

// Sentinel errors. Errors pidbox returns wrap one of these (or a wire or
// transport error), so callers can test them with errors.Is.
var (
	// ErrNoReply, returned by a handler, tells the node to send no reply,
	// as Celery's shutdown command does. It is not an error reply.
	ErrNoReply = errors.New("pidbox: no reply")
	// ErrUnknownMethod is the error reply for a method no handler serves.
	ErrUnknownMethod = errors.New("unknown method")
	// ErrBadArguments is the error reply for arguments that do not decode
	// into the handler's argument type.
	ErrBadArguments = errors.New("bad arguments")
	// ErrBadPattern means a glob or pcre node pattern cannot be used.
	ErrBadPattern = errors.New("bad node pattern")
	// ErrBadCall means a call's options or arguments are unusable; it is
	// returned before anything is sent.
	ErrBadCall = errors.New("pidbox: bad call")
	// ErrClosed is returned by a closed mailbox, and ends the calls it
	// was gathering.
	ErrClosed = demux.ErrClosed
	// ErrIncomplete means a call reached its deadline with expected nodes
	// missing; the call's Result or Outcomes say which.
	ErrIncomplete = errors.New("expected nodes did not reply")
	// ErrBrokerSilent means the broker accepted the connection but did
	// not answer before the call's deadline: paused (Redis CLIENT PAUSE),
	// blocked (a RabbitMQ resource alarm), or frozen.
	ErrBrokerSilent = errors.New("pidbox: broker did not answer")
	// ErrHandlerTimeout is the error reply for a handler that overran its
	// deadline.
	ErrHandlerTimeout = errors.New("handler timed out")
	// ErrHandlerPanic is the error reply for a handler that panicked.
	ErrHandlerPanic = errors.New("handler panicked")
)
