package certs

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"
)

// plan is the decision of one check of the Secret's data: the data it must
// hold and why it changed. It is a pure function of the data, the options,
// the clock and randomness (see planSecret).
type plan struct {
	// Data is the Secret's complete data after the check (unknown keys kept).
	Data map[string][]byte
	// Reasons say why anything was regenerated; empty when nothing was.
	Reasons []string
	// NewCA and NewServing say what was generated.
	NewCA, NewServing bool
	// CA signs new serving certificates (the newest CA); Serving is the
	// serving certificate of Data.
	CA      *x509.Certificate
	Serving *x509.Certificate
}

// Changed reports whether Data differs from the data the plan started from.
func (p *plan) Changed(old map[string][]byte) bool {
	return !maps.EqualFunc(old, p.Data, bytes.Equal)
}

// planSecret checks data (nil for a missing Secret) and regenerates what is
// missing, malformed, not matching, expired or due:
//
//   - ca.crt is a bundle, newest CA first; ca.key is the newest CA's key.
//     An unusable newest CA is replaced (and the bundle restarted); a due
//     one gets a successor prepended while it stays in the bundle until it
//     expires, so webhooks trust both during the roll.
//   - tls.crt/tls.key must match, chain to a CA of the bundle, cover every
//     DNS name and IP of o, and not be due; otherwise, or when force is set,
//     a new serving certificate is signed by the newest CA.
//
// o must be defaulted.
func planSecret(data map[string][]byte, o Options, force bool) (*plan, error) {
	now := o.Clock.Now()
	p := &plan{Data: maps.Clone(data)}
	if p.Data == nil {
		p.Data = map[string][]byte{}
	}

	cas, caKey, err := checkCA(data, now)
	switch {
	case err != nil:
		p.Reasons = append(p.Reasons, err.Error())
		ca, err := newCA(now, o.CAValidity, o.ServiceName+"-ca")
		if err != nil {
			return nil, err
		}
		cas, caKey, p.NewCA = []*x509.Certificate{ca.Cert}, ca.Key, true
		p.Data[KeyCA], p.Data[KeyCAKey] = ca.CertPEM, ca.KeyPEM
	case due(cas[0], now, o.RenewFraction):
		p.Reasons = append(p.Reasons, fmt.Sprintf("CA serial %s is due for renewal (notAfter %s); its successor joins the bundle",
			cas[0].SerialNumber.Text(16), cas[0].NotAfter.UTC().Format(time.RFC3339)))
		ca, err := newCA(now, o.CAValidity, o.ServiceName+"-ca")
		if err != nil {
			return nil, err
		}
		cas, caKey, p.NewCA = append([]*x509.Certificate{ca.Cert}, cas...), ca.Key, true
		p.Data[KeyCA], p.Data[KeyCAKey] = encodeCerts(cas), ca.KeyPEM
	}
	if kept := dropExpired(cas, now); len(kept) != len(cas) {
		p.Reasons = append(p.Reasons, fmt.Sprintf("%d expired CA(s) dropped from %s", len(cas)-len(kept), KeyCA))
		cas = kept
		p.Data[KeyCA] = encodeCerts(cas)
	}
	p.CA = cas[0]

	serving, err := checkServing(data, cas, now, o)
	if err == nil && force {
		err = errors.New("forced rotation")
	}
	if err != nil {
		p.Reasons = append(p.Reasons, err.Error())
		s, err := newServing(&issued{Cert: cas[0], Key: caKey}, now, o.CertValidity, o.DNSNamesFor(), o.IPs)
		if err != nil {
			return nil, err
		}
		serving, p.NewServing = s.Cert, true
		p.Data[KeyCert], p.Data[KeyKey] = s.CertPEM, s.KeyPEM
	}
	p.Serving = serving
	return p, nil
}

// checkCA returns the CA bundle of data (newest first) and the newest CA's
// key, or why they cannot be used.
func checkCA(data map[string][]byte, now time.Time) ([]*x509.Certificate, crypto.Signer, error) {
	if len(data[KeyCA]) == 0 || len(data[KeyCAKey]) == 0 {
		return nil, nil, fmt.Errorf("%s or %s missing", KeyCA, KeyCAKey)
	}
	cas, err := parseCerts(data[KeyCA])
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", KeyCA, err)
	}
	key, err := parseKey(data[KeyCAKey])
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", KeyCAKey, err)
	}
	ca := cas[0]
	switch {
	case !ca.IsCA || ca.KeyUsage&x509.KeyUsageCertSign == 0:
		return nil, nil, fmt.Errorf("the first certificate of %s (serial %s) is not a CA", KeyCA, ca.SerialNumber.Text(16))
	case !matches(ca, key):
		return nil, nil, fmt.Errorf("%s does not match the first certificate of %s", KeyCAKey, KeyCA)
	case !validAt(ca, now):
		return nil, nil, fmt.Errorf("CA serial %s is not valid at %s (valid %s to %s)", ca.SerialNumber.Text(16),
			now.UTC().Format(time.RFC3339), ca.NotBefore.UTC().Format(time.RFC3339), ca.NotAfter.UTC().Format(time.RFC3339))
	}
	return cas, key, nil
}

// checkServing returns the serving certificate of data, or why it must be
// replaced.
func checkServing(data map[string][]byte, cas []*x509.Certificate, now time.Time, o Options) (*x509.Certificate, error) {
	if len(data[KeyCert]) == 0 || len(data[KeyKey]) == 0 {
		return nil, fmt.Errorf("%s or %s missing", KeyCert, KeyKey)
	}
	chain, err := parseCerts(data[KeyCert])
	if err != nil {
		return nil, fmt.Errorf("%s: %w", KeyCert, err)
	}
	key, err := parseKey(data[KeyKey])
	if err != nil {
		return nil, fmt.Errorf("%s: %w", KeyKey, err)
	}
	cert := chain[0]
	if !matches(cert, key) {
		return nil, fmt.Errorf("%s does not match %s", KeyKey, KeyCert)
	}
	if !validAt(cert, now) {
		return nil, fmt.Errorf("%s serial %s is not valid at %s (valid %s to %s)", KeyCert, cert.SerialNumber.Text(16),
			now.UTC().Format(time.RFC3339), cert.NotBefore.UTC().Format(time.RFC3339), cert.NotAfter.UTC().Format(time.RFC3339))
	}
	roots := x509.NewCertPool()
	for _, ca := range cas {
		roots.AddCert(ca)
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		return nil, fmt.Errorf("%s is not signed by a CA of %s: %w", KeyCert, KeyCA, err)
	}
	for _, n := range o.DNSNamesFor() {
		if !slices.Contains(cert.DNSNames, n) {
			return nil, fmt.Errorf("%s does not cover DNS name %q", KeyCert, n)
		}
	}
	for _, ip := range o.IPs {
		if !slices.ContainsFunc(cert.IPAddresses, ip.Equal) {
			return nil, fmt.Errorf("%s does not cover IP %s", KeyCert, ip)
		}
	}
	if due(cert, now, o.RenewFraction) {
		return nil, fmt.Errorf("%s serial %s is due for renewal (notAfter %s)", KeyCert, cert.SerialNumber.Text(16),
			cert.NotAfter.UTC().Format(time.RFC3339))
	}
	return cert, nil
}

func validAt(c *x509.Certificate, now time.Time) bool {
	return !now.Before(c.NotBefore) && now.Before(c.NotAfter)
}

func dropExpired(cas []*x509.Certificate, now time.Time) []*x509.Certificate {
	return slices.DeleteFunc(slices.Clone(cas), func(c *x509.Certificate) bool { return !now.Before(c.NotAfter) })
}
