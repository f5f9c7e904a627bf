package security

import (
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
)

// ParsePrivateKey reads the first PEM private key in data: PKCS #1
// ("RSA PRIVATE KEY") or PKCS #8 ("PRIVATE KEY") holding an RSA key.
// Encrypted keys are not supported, as in Celery, which loads keys
// without a password.
func ParsePrivateKey(data []byte) (*rsa.PrivateKey, error) {
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			return nil, fmt.Errorf("%w: no PEM private key found", ErrBadKey)
		}
		switch block.Type {
		case "RSA PRIVATE KEY":
			k, err := x509.ParsePKCS1PrivateKey(block.Bytes)
			if err != nil {
				return nil, fmt.Errorf("%w: %w", ErrBadKey, err)
			}
			return k, nil
		case "PRIVATE KEY":
			k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
			if err != nil {
				return nil, fmt.Errorf("%w: %w", ErrBadKey, err)
			}
			rk, ok := k.(*rsa.PrivateKey)
			if !ok {
				return nil, fmt.Errorf("%w: key is %T, not RSA", ErrBadKey, k)
			}
			return rk, nil
		case "ENCRYPTED PRIVATE KEY":
			return nil, fmt.Errorf("%w: encrypted keys are not supported", ErrBadKey)
		}
	}
}

// LoadPrivateKey reads a PEM private key file (see ParsePrivateKey). Its
// errors name the file, never its contents.
func LoadPrivateKey(path string) (*rsa.PrivateKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("security: private key: %w", err)
	}
	k, err := ParsePrivateKey(b)
	if err != nil {
		return nil, fmt.Errorf("security: private key %s: %w", path, err)
	}
	return k, nil
}
