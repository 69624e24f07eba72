package app

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"os"

	"golang.org/x/crypto/ssh"
)

// loadSigner reads an OpenSSH or PEM private key.
func loadSigner(path string) (ssh.Signer, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	s, err := ssh.ParsePrivateKey(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return s, nil
}

// loadOrCreateSigner loads path, or creates an ed25519 key there (mode
// 0600) when it does not exist and create is set.
func loadOrCreateSigner(path string, create bool) (ssh.Signer, error) {
	s, err := loadSigner(path)
	if err == nil || !create || !errors.Is(err, os.ErrNotExist) {
		return s, err
	}
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	block, err := ssh.MarshalPrivateKey(priv, "rds-fence")
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(path, pem.EncodeToMemory(block), 0o600); err != nil {
		return nil, err
	}
	return loadSigner(path)
}

// loadAuthorizedKeys reads an authorized_keys file.
func loadAuthorizedKeys(path string) ([]ssh.PublicKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var keys []ssh.PublicKey
	for len(b) > 0 {
		k, _, _, rest, err := ssh.ParseAuthorizedKey(b)
		if err != nil {
			if len(keys) > 0 {
				break // trailing blank lines or comments
			}
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		keys = append(keys, k)
		b = rest
	}
	return keys, nil
}
