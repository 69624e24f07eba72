package app

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"

	"github.com/go-logr/logr"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/rds-fence/rds-fence/csi"
	"github.com/rds-fence/rds-fence/webhook"
)

// WebhookOptions are the webhook subcommand's settings.
type WebhookOptions struct {
	Kubeconfig string
	Driver     string
	Mode       string
	// KubeVirt: auto (watch VMIs and migrations when their CRDs exist), true, false.
	KubeVirt      string
	KubeVirtUsers stringList
	Host          string
	Port          int
	CertDir       string
	// CertMode: self-signed (this process keeps the Secret and caBundle) or
	// cert-manager (cert-manager does; this process only reads the Secret).
	CertMode          string
	Namespace         string
	SecretName        string
	ServiceName       string
	WebhookConfigName string
	ExtraIPs          stringList
	LeaderElect       bool
	MetricsAddress    string
	HealthAddress     string
}

type stringList []string

func (s *stringList) String() string     { return fmt.Sprint(*s) }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

// Cert modes.
const (
	CertModeSelfSigned  = "self-signed"
	CertModeCertManager = "cert-manager"
)

// ParseWebhookFlags parses args into options and validates them.
func ParseWebhookFlags(args []string) (*WebhookOptions, func() logr.Logger, error) {
	o := &WebhookOptions{}
	fs := flag.NewFlagSet("webhook", flag.ContinueOnError)
	newLog := logFlags(fs)
	fs.StringVar(&o.Kubeconfig, "kubeconfig", "", "kubeconfig file (default: in-cluster configuration)")
	fs.StringVar(&o.Driver, "driver-name", csi.DefaultDriverName, "CSI driver whose volumes are fenced")
	fs.StringVar(&o.Mode, "mode", string(webhook.ModeEnforce), "enforce (refuse), warn (admit with a warning) or dry-run (admit; events and metrics only)")
	fs.StringVar(&o.KubeVirt, "kubevirt", "auto", "watch KubeVirt VMIs and migrations: auto (when the CRDs exist at start), true or false")
	fs.Var(&o.KubeVirtUsers, "kubevirt-user", "user allowed to create migration target pods (repeatable; default "+webhook.DefaultKubeVirtUser+")")
	fs.StringVar(&o.Host, "host", "", "address to serve on (default all)")
	fs.IntVar(&o.Port, "port", 9443, "HTTPS port")
	fs.StringVar(&o.CertDir, "cert-dir", "/tmp/rds-fence-webhook-certs", "directory the serving certificate is written to and reloaded from")
	fs.StringVar(&o.CertMode, "cert-mode", CertModeSelfSigned, "self-signed (keep a CA and serving certificate in the Secret, inject the caBundle) or cert-manager")
	fs.StringVar(&o.Namespace, "namespace", "rds-fence", "namespace of the webhook Service, Secret and lease")
	fs.StringVar(&o.SecretName, "secret", "rds-fence-webhook-tls", "Secret holding the serving certificate")
	fs.StringVar(&o.ServiceName, "service", "rds-fence-webhook", "Service the API server calls (certificate DNS names)")
	fs.StringVar(&o.WebhookConfigName, "webhook-config", "rds-fence-webhook", "ValidatingWebhookConfiguration whose caBundle is kept (self-signed)")
	fs.Var(&o.ExtraIPs, "cert-ip", "extra IP SAN for the serving certificate (repeatable; local environments)")
	fs.BoolVar(&o.LeaderElect, "leader-elect", true, "one replica keeps the self-signed certificates (every replica serves)")
	fs.StringVar(&o.MetricsAddress, "metrics-address", ":9810", `Prometheus metrics address ("0" disables)`)
	fs.StringVar(&o.HealthAddress, "health-address", ":9811", `healthz/readyz address ("0" disables); ready once caches synced and a valid certificate is served`)
	if err := fs.Parse(args); err != nil {
		return nil, nil, err
	}
	return o, newLog, o.Validate()
}

// Validate checks the options.
func (o *WebhookOptions) Validate() error {
	var errs []error
	if _, err := webhook.ParseMode(o.Mode); err != nil {
		errs = append(errs, err)
	}
	switch o.KubeVirt {
	case "auto", "true", "false":
	default:
		errs = append(errs, fmt.Errorf("--kubevirt must be auto, true or false, got %q", o.KubeVirt))
	}
	switch o.CertMode {
	case CertModeSelfSigned, CertModeCertManager:
	default:
		errs = append(errs, fmt.Errorf("--cert-mode must be %s or %s, got %q", CertModeSelfSigned, CertModeCertManager, o.CertMode))
	}
	for _, ip := range o.ExtraIPs {
		if net.ParseIP(ip) == nil {
			errs = append(errs, fmt.Errorf("--cert-ip %q is not an IP address", ip))
		}
	}
	if o.Port <= 0 || o.Port > 65535 {
		errs = append(errs, fmt.Errorf("--port %d out of range", o.Port))
	}
	if o.Driver == "" || o.Namespace == "" || o.SecretName == "" || o.ServiceName == "" || o.WebhookConfigName == "" || o.CertDir == "" {
		errs = append(errs, errors.New("--driver-name, --namespace, --secret, --service, --webhook-config and --cert-dir must not be empty"))
	}
	return errors.Join(errs...)
}

// RunWebhook runs the admission webhook until ctx is done.
func RunWebhook(ctx context.Context, args []string) error {
	o, newLog, err := ParseWebhookFlags(args)
	if err != nil {
		return err
	}
	log := newLog()
	ctrllog.SetLogger(log) // controller-runtime's own components (certwatcher, caches) log through it
	cfg, err := restConfig(o.Kubeconfig)
	if err != nil {
		return fmt.Errorf("kubernetes configuration: %w", err)
	}
	parts, err := NewWebhookManager(cfg, o, nil, log)
	if err != nil {
		return err
	}
	return parts.Manager.Start(ctx)
}
