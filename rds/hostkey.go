package rds

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"os"

	"github.com/go-logr/logr"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// HostKeyOptions says how the RDS host key is verified.
type HostKeyOptions struct {
	// KnownHostsFile is an OpenSSH known_hosts file listing the RDS key.
	KnownHostsFile string
	// PinnedKey is one public key in authorized_keys format
	// ("ssh-ed25519 AAAA..."), an alternative to KnownHostsFile.
	PinnedKey string
	// InsecureIgnoreHostKey accepts any host key. Never use it in
	// production: anyone on the path can impersonate the RDS and learn every
	// command, or answer them falsely.
	InsecureIgnoreHostKey bool
}

// HostKeyCallback builds the callback that pins the RDS host key. Without a
// known_hosts file or pinned key it refuses to build one unless
// InsecureIgnoreHostKey is set, in which case it logs a loud warning.
func HostKeyCallback(o HostKeyOptions, log logr.Logger) (ssh.HostKeyCallback, error) {
	switch {
	case o.KnownHostsFile != "" && o.PinnedKey != "":
		return nil, invalidf("set either a known_hosts file or a pinned host key, not both")
	case o.KnownHostsFile != "":
		if _, err := os.Stat(o.KnownHostsFile); err != nil {
			return nil, invalidf("known_hosts file: %v", err)
		}
		cb, err := knownhosts.New(o.KnownHostsFile)
		if err != nil {
			return nil, invalidf("known_hosts file %s: %v", o.KnownHostsFile, err)
		}
		return cb, nil
	case o.PinnedKey != "":
		want, _, _, _, err := ssh.ParseAuthorizedKey([]byte(o.PinnedKey))
		if err != nil {
			return nil, invalidf("pinned host key: %v", err)
		}
		return pinned(want), nil
	case o.InsecureIgnoreHostKey:
		log.Info("WARNING: RDS host key verification is DISABLED; anyone on the network path can impersonate the RDS. Set a known_hosts file or a pinned host key.")
		return ssh.InsecureIgnoreHostKey(), nil //nolint:gosec // explicit operator opt-in, logged above
	default:
		return nil, invalidf("no RDS host key configured: set a known_hosts file or a pinned host key (or, for throwaway test setups only, the insecure ignore-host-key flag)")
	}
}

func pinned(want ssh.PublicKey) ssh.HostKeyCallback {
	wantFP := ssh.FingerprintSHA256(want)
	return func(host string, _ net.Addr, got ssh.PublicKey) error {
		if gotFP := ssh.FingerprintSHA256(got); gotFP != wantFP {
			// A KeyError lets hostKeyAlgorithms learn the pinned key's type.
			return &pinMismatch{KeyError: knownhosts.KeyError{Want: []knownhosts.KnownKey{{Key: want}}},
				msg: fmt.Sprintf("host key mismatch for %s: got %s %s, pinned %s %s", host, got.Type(), gotFP, want.Type(), wantFP)}
		}
		return nil
	}
}

type pinMismatch struct {
	knownhosts.KeyError
	msg string
}

func (p *pinMismatch) Error() string { return p.msg }

// hostKeyAlgorithms asks cb which key types it expects for address, by
// offering it a throwaway key: known_hosts and pinned callbacks answer with
// the keys they want. Negotiating only those types matters because Go's
// SSH client otherwise prefers an RSA host key, and a server that also has
// one would fail the check of a pinned ed25519 key. Nil means "no
// preference" (the callback did not say).
func hostKeyAlgorithms(cb ssh.HostKeyCallback, address string) []string {
	_, probe, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil
	}
	signer, err := ssh.NewSignerFromKey(probe)
	if err != nil {
		return nil
	}
	tcp, _ := net.ResolveTCPAddr("tcp", address)
	var ke *knownhosts.KeyError
	var pm *pinMismatch
	var want []knownhosts.KnownKey
	switch err := cb(knownhosts.Normalize(address), tcp, signer.PublicKey()); {
	case errors.As(err, &pm):
		want = pm.Want
	case errors.As(err, &ke):
		want = ke.Want
	}
	var algos []string
	for _, k := range want {
		switch t := k.Key.Type(); t {
		case ssh.KeyAlgoRSA:
			algos = append(algos, ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256, ssh.KeyAlgoRSA)
		default:
			algos = append(algos, t)
		}
	}
	return algos
}
