package certs

import (
	"net"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestOptions(t *testing.T) {
	d := Options{}.Defaulted()
	if d.Namespace != "rds-fence" || d.SecretName != "rds-fence-webhook-tls" || d.ServiceName != "rds-fence-webhook" ||
		d.WebhookConfigName != "rds-fence-webhook" || d.CAValidity != 10*365*24*time.Hour ||
		d.CertValidity != 365*24*time.Hour || d.RenewFraction != 1.0/3 || d.Interval != time.Hour || d.Clock == nil {
		t.Fatalf("defaults: %+v", d)
	}
	names := Options{Namespace: "ns", ServiceName: "svc", DNSNames: []string{"svc.ns.svc", "webhook.example"}}.DNSNamesFor()
	if want := []string{"svc", "svc.ns", "svc.ns.svc", "svc.ns.svc.cluster.local", "webhook.example"}; !slices.Equal(names, want) {
		t.Fatalf("DNSNamesFor = %v, want %v", names, want)
	}
	tests := []struct {
		name string
		o    Options
		want string // "" means valid
	}{
		{"zero value", Options{}, ""},
		{"negative validity", Options{CertValidity: -time.Hour}, "must be positive"},
		{"renew fraction 1", Options{RenewFraction: 1}, "RenewFraction 1 must be in (0, 1)"},
		{"nil IP", Options{IPs: []net.IP{nil}}, "IPs holds a nil address"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.o.Validate()
			if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
				t.Fatalf("Validate = %v, want %q", err, tc.want)
			}
		})
	}
}
