package wire

import "errors"

// Errors returned by the decoders. Each decode error wraps one of them, so
// callers can tell them apart with errors.Is.
var (
	// ErrMalformed means the bytes are not a well-formed envelope or payload.
	ErrMalformed = errors.New("malformed message")
	// ErrTooLarge means the message is above the configured size limit.
	ErrTooLarge = errors.New("message too large")
	// ErrUnsupported means the message uses a content type or body
	// encoding this process does not accept.
	ErrUnsupported = errors.New("unsupported encoding")
)
