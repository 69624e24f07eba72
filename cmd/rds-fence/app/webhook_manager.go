package app

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	kubevirtv1 "kubevirt.io/api/core/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	crwebhook "sigs.k8s.io/controller-runtime/pkg/webhook"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/rds-fence/rds-fence/certs"
	"github.com/rds-fence/rds-fence/webhook"
)

// WebhookParts are the pieces of a running webhook that tests reach into.
type WebhookParts struct {
	Manager manager.Manager
	State   *webhook.CachedState
	Handler *webhook.Handler
	// Rotator is nil in cert-manager mode.
	Rotator *certs.Rotator
	Server  crwebhook.Server
}

// NewWebhookManager wires the admission webhook into a controller-runtime
// manager: informer caches (pods stripped to what the decisions read), the
// handler on three paths, and the certificates. Every replica serves;
// leader election only picks the replica that keeps self-signed
// certificates. The server starts once the certificate is on disk; the
// replica is ready once the caches synced, a valid certificate is on disk
// and the server answers TLS.
//
// reg receives the webhook metrics; nil means controller-runtime's
// registry, served on the metrics address.
func NewWebhookManager(cfg *rest.Config, o *WebhookOptions, reg prometheus.Registerer, log logr.Logger) (*WebhookParts, error) {
	if reg == nil {
		reg = metrics.Registry
	}
	scheme := newScheme()
	if err := certs.AddCertManagerToScheme(scheme); err != nil {
		return nil, err
	}
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                  scheme,
		Logger:                  log,
		LeaderElection:          o.LeaderElect,
		LeaderElectionID:        "rds-fence-webhook",
		LeaderElectionNamespace: o.Namespace,
		Metrics:                 metricsserver.Options{BindAddress: o.MetricsAddress},
		HealthProbeBindAddress:  o.HealthAddress,
		Cache: cache.Options{
			DefaultTransform: cache.TransformStripManagedFields(),
			ByObject:         map[client.Object]cache.ByObject{&corev1.Pod{}: {Transform: slimPod}},
		},
	})
	if err != nil {
		return nil, err
	}
	kubevirt, err := kubeVirtEnabled(mgr, o.KubeVirt)
	if err != nil {
		return nil, err
	}
	if err := webhook.AddIndexes(context.Background(), mgr.GetFieldIndexer(), kubevirt); err != nil {
		return nil, err
	}
	mode, _ := webhook.ParseMode(o.Mode)
	state := &webhook.CachedState{Reader: mgr.GetCache(), Live: mgr.GetAPIReader(), KubeVirt: kubevirt, PodWait: webhook.DefaultPodWait}
	h := &webhook.Handler{
		State:   state,
		Options: webhook.Options{Driver: o.Driver, KubeVirtUsers: o.KubeVirtUsers},
		Events:  &webhook.KubeEvents{Recorder: mgr.GetEventRecorder("rds-fence-webhook"), Reader: mgr.GetCache(), Log: log.WithName("events")},
		Metrics: webhook.NewMetrics(reg, state),
		Decoder: admission.NewDecoder(scheme),
		Log:     log.WithName("admission"),
	}
	srv := crwebhook.NewServer(crwebhook.Options{Host: o.Host, Port: o.Port, CertDir: o.CertDir,
		TLSOpts: []func(*tls.Config){func(c *tls.Config) { c.MinVersion = tls.VersionTLS12 }}})
	for _, p := range []string{webhook.PathPods, webhook.PathBindings, webhook.PathVMIs} {
		srv.Register(p, &admission.Webhook{Handler: h, RecoverPanic: ptrTo(true)})
	}
	h.SetMode(mode)
	parts := &WebhookParts{Manager: mgr, State: state, Handler: h, Server: srv}
	if err := addCerts(mgr, o, srv, parts, log); err != nil {
		return nil, err
	}
	if err := mgr.Add(everyReplica(func(ctx context.Context) error {
		if err := state.WaitForSync(ctx, mgr.GetCache()); err != nil {
			return err
		}
		log.Info("admission caches synced", "kubevirt", kubevirt, "mode", mode)
		<-ctx.Done()
		return nil
	})); err != nil {
		return nil, err
	}
	if o.HealthAddress != "" && o.HealthAddress != "0" {
		_ = mgr.AddHealthzCheck("ping", healthz.Ping)
		_ = mgr.AddReadyzCheck("caches", func(*http.Request) error {
			if !state.Synced() {
				return fmt.Errorf("informer caches not synced")
			}
			return nil
		})
		_ = mgr.AddReadyzCheck("certificate", certs.ReadyCheck(o.CertDir, nil))
		_ = mgr.AddReadyzCheck("webhook", srv.StartedChecker())
	}
	return parts, nil
}

// addCerts adds the Syncer (every replica), the server after the first
// sync, and in self-signed mode the Rotator (leader only).
func addCerts(mgr manager.Manager, o *WebhookOptions, srv crwebhook.Server, parts *WebhookParts, log logr.Logger) error {
	co := certs.Options{Namespace: o.Namespace, SecretName: o.SecretName, ServiceName: o.ServiceName, WebhookConfigName: o.WebhookConfigName}
	for _, ip := range o.ExtraIPs {
		co.IPs = append(co.IPs, net.ParseIP(ip))
	}
	if err := co.Validate(); err != nil {
		return err
	}
	cs, err := kubernetes.NewForConfig(mgr.GetConfig())
	if err != nil {
		return err
	}
	syncer, err := certs.NewSyncer(cs, co, o.CertDir, log.WithName("certs"))
	if err != nil {
		return err
	}
	if err := mgr.Add(syncer); err != nil {
		return err
	}
	if err := mgr.Add(everyReplica(func(ctx context.Context) error {
		if err := syncer.WaitForFirstSync(ctx); err != nil {
			return nil // stopping before the first certificate
		}
		return srv.Start(ctx)
	})); err != nil {
		return err
	}
	direct, err := client.New(mgr.GetConfig(), client.Options{Scheme: mgr.GetScheme()})
	if err != nil {
		return err
	}
	if o.CertMode == CertModeCertManager {
		if o.HealthAddress == "" || o.HealthAddress == "0" {
			return nil
		}
		// Ready only while cert-manager reports the Certificate Ready.
		return mgr.AddReadyzCheck("cert-manager", func(r *http.Request) error {
			return certs.CheckCertificate(r.Context(), direct, o.Namespace, certs.DefaultCertificateName)
		})
	}
	rot, err := certs.NewRotator(direct, co, log.WithName("certs"))
	if err != nil {
		return err
	}
	parts.Rotator = rot
	return mgr.Add(rot)
}

// kubeVirtEnabled resolves --kubevirt: auto watches VMIs when the API
// server serves them at start.
func kubeVirtEnabled(mgr manager.Manager, flag string) (bool, error) {
	switch flag {
	case "true":
		return true, nil
	case "false":
		return false, nil
	}
	gvk := kubevirtv1.SchemeGroupVersion.WithKind("VirtualMachineInstance")
	_, err := mgr.GetRESTMapper().RESTMapping(gvk.GroupKind(), gvk.Version)
	if err == nil {
		return true, nil
	}
	if meta.IsNoMatchError(err) {
		return false, nil
	}
	return false, fmt.Errorf("checking whether KubeVirt is installed: %w", err)
}

// slimPod keeps what the decisions read of a cached pod: identity, labels,
// node and volumes. A cluster's pods are the largest cache here.
func slimPod(obj any) (any, error) {
	p, ok := obj.(*corev1.Pod)
	if !ok {
		return obj, nil
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: p.Name, Namespace: p.Namespace, UID: p.UID, Labels: p.Labels,
			ResourceVersion: p.ResourceVersion, DeletionTimestamp: p.DeletionTimestamp},
		Spec:   corev1.PodSpec{NodeName: p.Spec.NodeName, Volumes: p.Spec.Volumes},
		Status: corev1.PodStatus{Phase: p.Status.Phase},
	}, nil
}

// everyReplica is a runnable that runs whether or not this replica leads.
type everyReplica func(ctx context.Context) error

func (f everyReplica) Start(ctx context.Context) error { return f(ctx) }
func (everyReplica) NeedLeaderElection() bool          { return false }

func ptrTo[T any](v T) *T { return &v }
