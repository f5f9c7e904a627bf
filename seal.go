package pidbox

// Body is a serialized message body with the content type and encoding
// that name its serializer, such as "application/json" and "utf-8".
type Body struct {
	ContentType     string
	ContentEncoding string
	Data            []byte
}

// Sealer seals the bodies a mailbox and its nodes send, and opens the
// bodies they receive: the hook for message signing. Package security
// implements it with Celery's auth serializer. A Sealer must be safe for
// concurrent use.
type Sealer interface {
	// Seal returns the body to send in place of b.
	Seal(b Body) (Body, error)
	// Open returns the inner body of a received one, with the verified
	// signer's identity ("" for a body that was not signed). An error
	// refuses the message: it is dropped with a rate-limited log line.
	Open(b Body) (inner Body, signer string, err error)
}

// NodeVerifier is implemented by Sealers that can tell whether a signer
// may speak for a node. When the mailbox's Sealer implements it, a reply
// whose signer may not speak for the node the reply names is dropped, so
// one compromised node cannot answer for another.
type NodeVerifier interface {
	VerifyNode(signer, node string) error
}
