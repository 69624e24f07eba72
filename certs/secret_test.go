package certs

import (
	"bytes"
	"maps"
	"net"
	"strings"
	"testing"
	"time"

	testingclock "k8s.io/utils/clock/testing"
)

// testOptions issues a CA of 30h and serving certificates of 3h at t0.
func testOptions(now time.Time) Options {
	return Options{Namespace: "ns", ServiceName: "svc", CAValidity: 30 * time.Hour, CertValidity: 3 * time.Hour,
		IPs: []net.IP{net.ParseIP("127.0.0.1")}, Clock: testingclock.NewFakePassiveClock(now)}.Defaulted()
}

// validData is a Secret's data as the Rotator writes it at now.
func validData(t *testing.T, o Options) map[string][]byte {
	t.Helper()
	p, err := planSecret(nil, o, false)
	if err != nil {
		t.Fatal(err)
	}
	return p.Data
}

func at(o Options, now time.Time) Options {
	o.Clock = testingclock.NewFakePassiveClock(now)
	return o
}

func TestPlanSecret(t *testing.T) {
	o := testOptions(t0)
	good := validData(t, o)
	otherCA := validData(t, o)                         // another CA and serving pair
	early := validData(t, at(o, t0.Add(-4*time.Hour))) // same options, issued 4h earlier: expired by t0
	type want struct {
		newCA, newServing bool
		reason            string // substring of one reason; "" means no reason at all
		cas               int    // certificates in ca.crt
	}
	tests := []struct {
		name  string
		data  func() map[string][]byte
		o     Options
		force bool
		want  want
	}{
		{"missing Secret", func() map[string][]byte { return nil }, o, false,
			want{true, true, "ca.crt or ca.key missing", 1}},
		{"valid", func() map[string][]byte { return good }, o, false, want{false, false, "", 1}},
		{"forced", func() map[string][]byte { return good }, o, true, want{false, true, "forced rotation", 1}},
		{"garbage tls.crt", with(good, KeyCert, "garbage"), o, false, want{false, true, "tls.crt: no PEM certificate", 1}},
		{"garbage tls.key", with(good, KeyKey, "-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n"), o, false,
			want{false, true, "tls.key: PEM block", 1}},
		{"tls.key does not match tls.crt", with(good, KeyKey, string(otherCA[KeyKey])), o, false,
			want{false, true, "tls.key does not match tls.crt", 1}},
		{"expired serving certificate", func() map[string][]byte {
			d := maps.Clone(good)
			d[KeyCert], d[KeyKey] = early[KeyCert], early[KeyKey]
			d[KeyCA] = append(append([]byte{}, good[KeyCA]...), early[KeyCA]...) // trust its CA too
			return d
		}, o, false, want{false, true, "is not valid at 2030-01-01T00:00:00Z", 2}}, // its CA is still valid
		{"serving certificate of another CA", func() map[string][]byte {
			d := maps.Clone(good)
			d[KeyCert], d[KeyKey] = otherCA[KeyCert], otherCA[KeyKey]
			return d
		}, o, false, want{false, true, "tls.crt is not signed by a CA of ca.crt", 1}},
		{"serving certificate lacks a DNS name", func() map[string][]byte { return good },
			func() Options { o := o; o.DNSNames = []string{"webhook.example"}; return o }(), false,
			want{false, true, `tls.crt does not cover DNS name "webhook.example"`, 1}},
		{"serving certificate lacks an IP", func() map[string][]byte { return good },
			func() Options { o := o; o.IPs = []net.IP{net.ParseIP("::1")}; return o }(), false,
			want{false, true, "tls.crt does not cover IP ::1", 1}},
		{"serving certificate due", func() map[string][]byte { return good }, at(o, t0.Add(2*time.Hour)), false,
			want{false, true, "is due for renewal", 1}},
		{"garbage ca.crt", with(good, KeyCA, "garbage"), o, false, want{true, true, "ca.crt: no PEM certificate", 1}},
		{"ca.key does not match", with(good, KeyCAKey, string(otherCA[KeyCAKey])), o, false,
			want{true, true, "ca.key does not match the first certificate of ca.crt", 1}},
		{"ca.crt is not a CA", with(good, KeyCA, string(good[KeyCert])), o, false,
			want{true, true, "is not a CA", 1}},
		{"expired CA", func() map[string][]byte { return good }, at(o, t0.Add(31*time.Hour)), false,
			want{true, true, "is not valid at 2030-01-02T07:00:00Z", 1}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			data := tc.data()
			before := maps.Clone(data)
			p, err := planSecret(data, tc.o, tc.force)
			if err != nil {
				t.Fatal(err)
			}
			if !maps.EqualFunc(before, data, bytes.Equal) {
				t.Fatal("planSecret modified its input")
			}
			if p.NewCA != tc.want.newCA || p.NewServing != tc.want.newServing {
				t.Fatalf("newCA %v newServing %v, want %v %v (reasons %q)", p.NewCA, p.NewServing, tc.want.newCA, tc.want.newServing, p.Reasons)
			}
			if tc.want.reason == "" && len(p.Reasons) > 0 || tc.want.reason != "" && !strings.Contains(strings.Join(p.Reasons, "\n"), tc.want.reason) {
				t.Fatalf("reasons %q, want one containing %q", p.Reasons, tc.want.reason)
			}
			if changed := p.Changed(data); changed != (p.NewCA || p.NewServing) {
				t.Fatalf("Changed = %v with newCA %v newServing %v", changed, p.NewCA, p.NewServing)
			}
			if !p.NewCA && (!bytes.Equal(p.Data[KeyCA], data[KeyCA]) || !bytes.Equal(p.Data[KeyCAKey], data[KeyCAKey])) {
				t.Fatal("the CA changed without a new CA")
			}
			assertConsistent(t, p.Data, tc.o, tc.want.cas)
		})
	}
}

// with returns a fixture: data with key set to value.
func with(data map[string][]byte, key, value string) func() map[string][]byte {
	return func() map[string][]byte {
		d := maps.Clone(data)
		d[key] = []byte(value)
		return d
	}
}

// assertConsistent checks that data is what the Rotator accepts unchanged.
func assertConsistent(t *testing.T, data map[string][]byte, o Options, cas int) {
	t.Helper()
	p, err := planSecret(data, o, false)
	if err != nil {
		t.Fatal(err)
	}
	if p.Changed(data) {
		t.Fatalf("result is not stable: %q", p.Reasons)
	}
	if got, _ := parseCerts(data[KeyCA]); len(got) != cas {
		t.Fatalf("ca.crt holds %d certificates, want %d", len(got), cas)
	}
}

// TestCARoll walks a CA through its renewal: the successor joins the bundle
// while the old CA still signs the serving certificate, the serving
// certificate moves to the new CA at its own renewal, and the old CA leaves
// the bundle once expired.
func TestCARoll(t *testing.T) {
	o := testOptions(t0)
	data := validData(t, o)
	first, _ := parseCerts(data[KeyCA])
	caRenewal := renewalTime(first[0], o.RenewFraction) // t0+19h58m20s
	steps := []struct {
		name              string
		now               time.Time
		newCA, newServing bool
		cas               int
		signer            int // index in ca.crt of the serving certificate's issuer
	}{
		{"before the CA is due: expired serving certificate reissued", caRenewal.Add(-time.Hour), false, true, 1, 0},
		{"CA due: successor joins, serving certificate kept", caRenewal, true, false, 2, 1},
		{"serving certificate due: signed by the new CA", caRenewal.Add(time.Hour), false, true, 2, 0},
		{"old CA expired: dropped", first[0].NotAfter, false, true, 1, 0},
	}
	for _, st := range steps {
		p, err := planSecret(data, at(o, st.now), false)
		if err != nil {
			t.Fatal(err)
		}
		if p.NewCA != st.newCA || p.NewServing != st.newServing {
			t.Fatalf("%s: newCA %v newServing %v (reasons %q)", st.name, p.NewCA, p.NewServing, p.Reasons)
		}
		cas, err := parseCerts(p.Data[KeyCA])
		if err != nil || len(cas) != st.cas {
			t.Fatalf("%s: ca.crt holds %d certificates (%v), want %d", st.name, len(cas), err, st.cas)
		}
		if err := p.Serving.CheckSignatureFrom(cas[st.signer]); err != nil {
			t.Fatalf("%s: serving certificate not signed by CA %d of the bundle: %v", st.name, st.signer, err)
		}
		key, _ := parseKey(p.Data[KeyCAKey])
		if !matches(cas[0], key) {
			t.Fatalf("%s: ca.key is not the newest CA's key", st.name)
		}
		data = p.Data
	}
}
