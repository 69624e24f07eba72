package certs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/go-logr/logr"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/manager"
)

// certManagerAnnotation marks a Secret that cert-manager issues.
const certManagerAnnotation = "cert-manager.io/certificate-name"

// retryAfterError bounds the wait after a failed check.
const retryAfterError = 30 * time.Second

// Rotator keeps, in self-signed mode, the Secret's CA and serving
// certificate valid (see planSecret for what it regenerates and why) and
// the CA bundle in every webhook of the ValidatingWebhookConfiguration.
// It runs on the leader only. Safe for concurrent use, also by several
// processes: writes carry the resourceVersion they read and are retried on
// conflict.
type Rotator struct {
	c   client.Client
	o   Options
	log logr.Logger
	mu  sync.Mutex // one rotation at a time in this process
}

var _ manager.LeaderElectionRunnable = (*Rotator)(nil)
var _ manager.Runnable = (*Rotator)(nil)

// NewRotator returns a Rotator writing with c, which should not be the
// manager's cached client (that would cache every Secret): use
// client.New(mgr.GetConfig(), ...). RBAC: get, create, update on the
// Secret; get, patch on the ValidatingWebhookConfiguration.
func NewRotator(c client.Client, o Options, log logr.Logger) (*Rotator, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	o = o.Defaulted()
	return &Rotator{c: c, o: o, log: log.WithValues(logSecret, o.secretRef(), logWebhookConfig, o.WebhookConfigName)}, nil
}

// NeedLeaderElection is true: one replica rotates.
func (r *Rotator) NeedLeaderElection() bool { return true }

// Start checks at once, then every Interval (sooner when a certificate
// falls due, 30s after an error), until ctx ends. It returns nil then.
func (r *Rotator) Start(ctx context.Context) error {
	for {
		wait := r.o.Interval
		p, err := r.rotate(ctx, false)
		switch {
		case err != nil:
			wait = min(wait, retryAfterError)
			r.log.Error(err, "certificate check failed", logRetryIn, wait.String())
		default:
			now := r.o.Clock.Now()
			for _, c := range []time.Time{renewalTime(p.CA, r.o.RenewFraction), renewalTime(p.Serving, r.o.RenewFraction)} {
				wait = min(wait, max(c.Sub(now), time.Second))
			}
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// Rotate makes the Secret hold a valid CA and serving certificate, then
// puts the CA bundle into every webhook of the configuration. With force,
// it also issues a new serving certificate signed by the current CA (the
// CA bundle does not change). A missing configuration is an error, but the
// Secret is written first.
func (r *Rotator) Rotate(ctx context.Context, force bool) error {
	_, err := r.rotate(ctx, force)
	return err
}

func (r *Rotator) rotate(ctx context.Context, force bool) (*plan, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	p, err := r.ensureSecret(ctx, force)
	if err != nil {
		return nil, err
	}
	return p, r.ensureBundle(ctx, p.Data[KeyCA])
}

func (r *Rotator) ensureSecret(ctx context.Context, force bool) (*plan, error) {
	key := types.NamespacedName{Namespace: r.o.Namespace, Name: r.o.SecretName}
	var p *plan
	retriable := func(err error) bool { return apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err) }
	err := retry.OnError(retry.DefaultRetry, retriable, func() error {
		var s corev1.Secret
		err := r.c.Get(ctx, key, &s)
		exists := err == nil
		if err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("reading: %w", err)
		}
		if owner := s.Annotations[certManagerAnnotation]; owner != "" {
			return fmt.Errorf("issued by cert-manager Certificate %q: run with --cert-mode=cert-manager, or delete the Certificate and the Secret", owner)
		}
		if p, err = planSecret(s.Data, r.o, force); err != nil {
			return err
		}
		if !p.Changed(s.Data) {
			return nil
		}
		if !exists {
			s = corev1.Secret{
				ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name, Labels: map[string]string{
					"app.kubernetes.io/name": "rds-fence", "app.kubernetes.io/component": "webhook-certificates",
					"app.kubernetes.io/managed-by": "rds-fence"}},
				Type: corev1.SecretTypeTLS,
				Data: p.Data,
			}
			if err := r.c.Create(ctx, &s); err != nil {
				return fmt.Errorf("creating: %w", err)
			}
		} else {
			s.Data = p.Data
			if err := r.c.Update(ctx, &s); err != nil {
				return fmt.Errorf("updating: %w", err)
			}
		}
		r.log.Info("webhook certificates rotated", logReason, p.Reasons, logForced, force, logNewCA, p.NewCA,
			logNewServing, p.NewServing, logSerial, p.Serving.SerialNumber.Text(16),
			logNotAfter, p.Serving.NotAfter.UTC().Format(time.RFC3339), logRV, s.ResourceVersion)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("secret %s: %w", r.o.secretRef(), err)
	}
	return p, nil
}

// ensureBundle sets caBundle in every webhook of the configuration that
// does not hold it yet, with a strategic merge patch (only caBundle) that
// carries the resourceVersion it read.
func (r *Rotator) ensureBundle(ctx context.Context, bundle []byte) error {
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		var vwc admissionregistrationv1.ValidatingWebhookConfiguration
		if err := r.c.Get(ctx, types.NamespacedName{Name: r.o.WebhookConfigName}, &vwc); err != nil {
			if apierrors.IsNotFound(err) {
				return errors.New("not found: apply the manifests; its CA bundle is set once it exists")
			}
			return fmt.Errorf("reading: %w", err)
		}
		orig := vwc.DeepCopy()
		var patched []string
		for i := range vwc.Webhooks {
			if !bytes.Equal(vwc.Webhooks[i].ClientConfig.CABundle, bundle) {
				vwc.Webhooks[i].ClientConfig.CABundle = bundle
				patched = append(patched, vwc.Webhooks[i].Name)
			}
		}
		if len(patched) == 0 {
			return nil
		}
		if err := r.c.Patch(ctx, &vwc, client.StrategicMergeFrom(orig, client.MergeFromWithOptimisticLock{})); err != nil {
			return fmt.Errorf("patching caBundle: %w", err)
		}
		r.log.Info("webhook CA bundle patched", logWebhooks, patched)
		return nil
	})
	if err != nil {
		return fmt.Errorf("ValidatingWebhookConfiguration %s: %w", r.o.WebhookConfigName, err)
	}
	return nil
}
