package certs

import (
	"errors"
	"fmt"
	"net"
	"slices"
	"time"

	"k8s.io/utils/clock"
)

// Defaults of Options. The names are fixed: the manifests and the
// cert-manager overlay use them.
const (
	DefaultNamespace         = "rds-fence"
	DefaultSecretName        = "rds-fence-webhook-tls"
	DefaultServiceName       = "rds-fence-webhook"
	DefaultWebhookConfigName = "rds-fence-webhook"
	// DefaultCertificateName is the cert-manager Certificate of the overlay.
	DefaultCertificateName = "rds-fence-webhook"

	DefaultCAValidity    = 10 * 365 * 24 * time.Hour
	DefaultCertValidity  = 365 * 24 * time.Hour
	DefaultRenewFraction = 1.0 / 3
	DefaultInterval      = time.Hour
)

// Keys of the Secret. cert-manager writes the first three; the Rotator
// also keeps the CA's private key.
const (
	KeyCert   = "tls.crt"
	KeyKey    = "tls.key"
	KeyCA     = "ca.crt"
	KeyCAKey  = "ca.key"
	clockSkew = 5 * time.Minute // certificates are backdated by this much
)

// Log keys, defined once.
const (
	logSecret        = "secret"
	logWebhookConfig = "validatingWebhookConfiguration"
	logReason        = "reason"
	logSerial        = "serial"
	logNotAfter      = "notAfter"
	logDir           = "dir"
	logForced        = "forced"
	logNewCA         = "newCA"
	logNewServing    = "newServingCertificate"
	logRV            = "resourceVersion"
	logWebhooks      = "webhooks"
	logRetryIn       = "retryIn"
)

// Options names the objects the package manages and the certificates'
// lifetimes. The zero value is usable: Defaulted fills every unset field.
type Options struct {
	// Namespace of the Secret and of the Service (default rds-fence).
	Namespace string
	// SecretName holds tls.crt, tls.key, ca.crt (and ca.key in self-signed
	// mode); default rds-fence-webhook-tls.
	SecretName string
	// ServiceName fronts the webhook (default rds-fence-webhook); it names
	// the serving certificate's DNS names.
	ServiceName string
	// WebhookConfigName is the ValidatingWebhookConfiguration whose every
	// webhook gets the CA bundle (default rds-fence-webhook).
	WebhookConfigName string
	// DNSNames are added to svc, svc.ns, svc.ns.svc, svc.ns.svc.cluster.local.
	DNSNames []string
	// IPs are added to the serving certificate (e.g. 127.0.0.1 in tests).
	IPs []net.IP
	// CAValidity (default 10 years) and CertValidity (default 1 year) are
	// the lifetimes of newly issued certificates. A serving certificate
	// never outlives the CA that signs it.
	CAValidity, CertValidity time.Duration
	// RenewFraction: a certificate is renewed once less than this fraction
	// of its lifetime remains (default 1/3). Must be in (0, 1).
	RenewFraction float64
	// Interval between two checks of the Rotator (default 1h).
	Interval time.Duration
	// Clock is the time source (default the real clock).
	Clock clock.PassiveClock
}

// Defaulted returns a copy with every unset field set to its default.
func (o Options) Defaulted() Options {
	set := func(s *string, d string) {
		if *s == "" {
			*s = d
		}
	}
	set(&o.Namespace, DefaultNamespace)
	set(&o.SecretName, DefaultSecretName)
	set(&o.ServiceName, DefaultServiceName)
	set(&o.WebhookConfigName, DefaultWebhookConfigName)
	if o.CAValidity == 0 {
		o.CAValidity = DefaultCAValidity
	}
	if o.CertValidity == 0 {
		o.CertValidity = DefaultCertValidity
	}
	if o.RenewFraction == 0 {
		o.RenewFraction = DefaultRenewFraction
	}
	if o.Interval == 0 {
		o.Interval = DefaultInterval
	}
	if o.Clock == nil {
		o.Clock = clock.RealClock{}
	}
	return o
}

// Validate reports every invalid field of the defaulted options.
func (o Options) Validate() error {
	o = o.Defaulted()
	var errs []error
	if o.CAValidity < 0 || o.CertValidity < 0 || o.Interval < 0 {
		errs = append(errs, fmt.Errorf("CAValidity %s, CertValidity %s and Interval %s must be positive", o.CAValidity, o.CertValidity, o.Interval))
	}
	if o.RenewFraction <= 0 || o.RenewFraction >= 1 {
		errs = append(errs, fmt.Errorf("RenewFraction %v must be in (0, 1)", o.RenewFraction))
	}
	for _, ip := range o.IPs {
		if ip == nil {
			errs = append(errs, errors.New("IPs holds a nil address"))
		}
	}
	return errors.Join(errs...)
}

// DNSNamesFor returns the serving certificate's DNS names: the Service's
// four in-cluster names followed by the extra DNSNames, without duplicates.
func (o Options) DNSNamesFor() []string {
	o = o.Defaulted()
	svc, ns := o.ServiceName, o.Namespace
	names := []string{svc, svc + "." + ns, svc + "." + ns + ".svc", svc + "." + ns + ".svc.cluster.local"}
	for _, n := range o.DNSNames {
		if !slices.Contains(names, n) {
			names = append(names, n)
		}
	}
	return names
}

func (o Options) secretRef() string { return o.Namespace + "/" + o.SecretName }
