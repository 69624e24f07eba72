package certs

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"net"
	"slices"
	"testing"
	"time"
)

var t0 = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)

func TestNewCAAndServing(t *testing.T) {
	ca, err := newCA(t0, 30*time.Hour, "test-ca")
	if err != nil {
		t.Fatal(err)
	}
	if !ca.Cert.IsCA || ca.Cert.KeyUsage&x509.KeyUsageCertSign == 0 || !ca.Cert.NotAfter.Equal(t0.Add(30*time.Hour)) {
		t.Fatalf("CA: isCA %v, key usage %v, notAfter %s", ca.Cert.IsCA, ca.Cert.KeyUsage, ca.Cert.NotAfter)
	}
	if pub, ok := ca.Cert.PublicKey.(*ecdsa.PublicKey); !ok || pub.Curve != elliptic.P256() {
		t.Fatalf("CA key is %T, want P-256", ca.Cert.PublicKey)
	}
	names := []string{"svc", "svc.ns.svc"}
	ips := []net.IP{net.ParseIP("127.0.0.1")}

	tests := []struct {
		name         string
		validity     time.Duration
		wantNotAfter time.Time
	}{
		{"within the CA's lifetime", time.Hour, t0.Add(time.Hour)},
		{"clamped to the CA's notAfter", 100 * time.Hour, ca.Cert.NotAfter},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := newServing(ca, t0, tc.validity, names, ips)
			if err != nil {
				t.Fatal(err)
			}
			if !s.Cert.NotAfter.Equal(tc.wantNotAfter) || !s.Cert.NotBefore.Equal(t0.Add(-clockSkew)) {
				t.Fatalf("validity %s to %s, want %s to %s", s.Cert.NotBefore, s.Cert.NotAfter, t0.Add(-clockSkew), tc.wantNotAfter)
			}
			roots := x509.NewCertPool()
			roots.AddCert(ca.Cert)
			for _, host := range []string{"svc.ns.svc", "127.0.0.1"} {
				if _, err := s.Cert.Verify(x509.VerifyOptions{DNSName: host, Roots: roots, CurrentTime: t0,
					KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
					t.Errorf("verify for %s: %v", host, err)
				}
			}
			if s.Cert.IsCA || !slices.Equal(s.Cert.DNSNames, names) {
				t.Fatalf("serving: isCA %v, DNS names %v", s.Cert.IsCA, s.Cert.DNSNames)
			}
			key, err := parseKey(s.KeyPEM)
			if err != nil || !matches(s.Cert, key) {
				t.Fatalf("serving key does not round-trip: %v", err)
			}
			if s.Cert.SerialNumber.Cmp(ca.Cert.SerialNumber) == 0 {
				t.Fatal("serving certificate reuses the CA's serial")
			}
		})
	}
}

func TestDueAtBoundary(t *testing.T) {
	ca, err := newCA(t0, 3*time.Hour, "test-ca")
	if err != nil {
		t.Fatal(err)
	}
	// Lifetime 3h + clockSkew from t0-clockSkew; due once a third remains.
	lifetime := 3*time.Hour + clockSkew
	renew := ca.Cert.NotAfter.Add(-lifetime / 3)
	if got := renewalTime(ca.Cert, 1.0/3); !got.Equal(renew) {
		t.Fatalf("renewalTime = %s, want %s", got, renew)
	}
	tests := []struct {
		name string
		now  time.Time
		want bool
	}{
		{"fresh", t0, false},
		{"one second before", renew.Add(-time.Second), false},
		{"at the boundary", renew, true},
		{"after", renew.Add(time.Second), true},
		{"expired", ca.Cert.NotAfter.Add(time.Hour), true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := due(ca.Cert, tc.now, 1.0/3); got != tc.want {
				t.Fatalf("due at %s = %v, want %v (renewal at %s)", tc.now, got, tc.want, renew)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	ca, err := newCA(t0, time.Hour, "test-ca")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, data, want string
		key              bool
	}{
		{"garbage certificate", "garbage", "no PEM certificate", false},
		{"key where a certificate belongs", string(ca.KeyPEM), `PEM block "EC PRIVATE KEY" where a CERTIFICATE was expected`, false},
		{"trailing garbage", string(ca.CertPEM) + "garbage", "trailing data after the certificates is not PEM", false},
		{"garbage key", "garbage", "no PEM private key", true},
		{"certificate where a key belongs", string(ca.CertPEM), `PEM block "CERTIFICATE" is not a PKCS#8, EC or RSA private key`, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.key {
				_, err = parseKey([]byte(tc.data))
			} else {
				_, err = parseCerts([]byte(tc.data))
			}
			if err == nil || err.Error() != tc.want {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
		})
	}
}
