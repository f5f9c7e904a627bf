package security

import "errors"

// Errors, for errors.Is. Every refusal of a message wraps one of them.
var (
	// ErrUnsigned: the message is not sealed by the auth serializer, and
	// signatures are required.
	ErrUnsigned = errors.New("security: unsigned message")
	// ErrMalformed: the auth payload cannot be unpacked (not base64, a
	// missing field, a truncated signature).
	ErrMalformed = errors.New("security: malformed auth payload")
	// ErrUnknownSigner: the signer id names no certificate in the store.
	ErrUnknownSigner = errors.New("security: unknown signer")
	// ErrBadSignature: the signature does not verify over the body.
	ErrBadSignature = errors.New("security: bad signature")
	// ErrExpired: a certificate is past its expiry.
	ErrExpired = errors.New("security: certificate expired")
	// ErrBadCertificate: a certificate cannot be used.
	ErrBadCertificate = errors.New("security: bad certificate")
	// ErrBadKey: a private key cannot be used.
	ErrBadKey = errors.New("security: bad private key")
	// ErrDigest: a digest name Celery's security_digest would not give,
	// or a weak one.
	ErrDigest = errors.New("security: unsupported digest")
	// ErrWrongNode: a reply's signer certificate does not name the node
	// the reply claims to come from.
	ErrWrongNode = errors.New("security: signer does not name the node")
	// ErrNotAuthorized: the signer may not run the command.
	ErrNotAuthorized = errors.New("not authorized")
	// ErrReplay: the command was served before, or its expiry makes it
	// replayable.
	ErrReplay = errors.New("security: replayed or unbounded command")
)
