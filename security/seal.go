package security

import (
	"fmt"

	"github.com/gopidbox/pidbox"
)

// Signer is a pidbox.Sealer and a pidbox.NodeVerifier.
var (
	_ pidbox.Sealer       = (*Signer)(nil)
	_ pidbox.NodeVerifier = (*Signer)(nil)
)

// Seal implements pidbox.Sealer: it signs b and returns the sealed body,
// with the auth serializer's content type and encoding.
func (s *Signer) Seal(b pidbox.Body) (pidbox.Body, error) {
	sealed, err := s.Sign(b.ContentType, b.ContentEncoding, b.Data)
	if err != nil {
		return pidbox.Body{}, err
	}
	return pidbox.Body{ContentType: ContentType, ContentEncoding: ContentEncoding, Data: sealed}, nil
}

// Open implements pidbox.Sealer. A sealed body (content type
// "application/data") must verify; its inner body and signer id are
// returned. Any other body is unsigned: refused with ErrUnsigned when
// RequireSigned is set, passed through with an empty signer otherwise.
func (s *Signer) Open(b pidbox.Body) (pidbox.Body, string, error) {
	if b.ContentType != ContentType {
		if s.cfg.RequireSigned {
			return pidbox.Body{}, "", fmt.Errorf("%w: content type %s", ErrUnsigned, quote(b.ContentType))
		}
		return b, "", nil
	}
	o, err := s.Verify(b.Data)
	if err != nil {
		return pidbox.Body{}, "", err
	}
	return pidbox.Body{ContentType: o.ContentType, ContentEncoding: o.ContentEncoding, Data: o.Body}, o.Signer, nil
}

// VerifyNode implements pidbox.NodeVerifier. With BindReplies set, a
// reply must be signed by a certificate that names the replying node in
// its subject common name or a subject alternative name; otherwise every
// reply passes.
func (s *Signer) VerifyNode(signer, node string) error {
	if !s.cfg.BindReplies {
		return nil
	}
	if signer == "" {
		return fmt.Errorf("%w: the reply from %s is not signed", ErrWrongNode, quote(node))
	}
	c, ok := s.cfg.Store.Get(signer)
	if !ok {
		return fmt.Errorf("%w: %q", ErrUnknownSigner, signer)
	}
	if !c.Names(node) {
		return fmt.Errorf("%w: %s replied, signed by %q (CN %q)", ErrWrongNode, quote(node), signer, c.X509.Subject.CommonName)
	}
	return nil
}
