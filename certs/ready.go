package certs

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
)

// ReadyCheck returns a readiness checker that passes only while dir holds
// tls.crt and tls.key forming a matching key pair whose certificate is
// valid now (clk; nil means the real clock). Combine it with the webhook
// server's StartedChecker: together they say the replica can serve.
func ReadyCheck(dir string, clk clock.PassiveClock) healthz.Checker {
	if clk == nil {
		clk = clock.RealClock{}
	}
	return func(*http.Request) error {
		leaf, err := readPair(dir)
		if err != nil {
			return err
		}
		if now := clk.Now(); !validAt(leaf, now) {
			return fmt.Errorf("serving certificate in %s (serial %s) is not valid now: valid %s to %s", dir,
				leaf.SerialNumber.Text(16), leaf.NotBefore.UTC().Format(time.RFC3339), leaf.NotAfter.UTC().Format(time.RFC3339))
		}
		return nil
	}
}

// readPair reads dir's key pair and returns its certificate.
func readPair(dir string) (*x509.Certificate, error) {
	crt, err := os.ReadFile(filepath.Join(dir, KeyCert))
	if err != nil {
		return nil, fmt.Errorf("serving certificate not written yet: %w", err)
	}
	key, err := os.ReadFile(filepath.Join(dir, KeyKey))
	if err != nil {
		return nil, fmt.Errorf("serving key not written yet: %w", err)
	}
	pair, err := tls.X509KeyPair(crt, key)
	if err != nil {
		return nil, fmt.Errorf("serving key pair in %s: %w", dir, err)
	}
	return leaf(pair)
}

// leaf returns the parsed first certificate of pair.
func leaf(pair tls.Certificate) (*x509.Certificate, error) {
	if pair.Leaf != nil {
		return pair.Leaf, nil
	}
	return x509.ParseCertificate(pair.Certificate[0])
}
