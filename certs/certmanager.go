package certs

import (
	"context"
	"fmt"

	certmanagerv1 "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	cmmeta "github.com/cert-manager/cert-manager/pkg/apis/meta/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// AddCertManagerToScheme registers cert-manager's v1 types, which the
// reader given to CheckCertificate must know.
var AddCertManagerToScheme = certmanagerv1.AddToScheme

// CheckCertificate reports whether cert-manager's Certificate
// namespace/name is Ready. It returns nil only when its Ready condition is
// True for the Certificate's current generation; otherwise an error an
// operator can act on: the Certificate or its kind missing (cert-manager
// not installed, overlay not applied), not processed yet, or not Ready with
// cert-manager's reason and message. RBAC: get on certificates.cert-manager.io.
func CheckCertificate(ctx context.Context, r client.Reader, namespace, name string) error {
	ref := namespace + "/" + name
	var crt certmanagerv1.Certificate
	if err := r.Get(ctx, types.NamespacedName{Namespace: namespace, Name: name}, &crt); err != nil {
		switch {
		case apierrors.IsNotFound(err):
			return fmt.Errorf("cert-manager Certificate %s not found: install cert-manager and apply the cert-manager overlay, or run with --cert-mode=self-signed", ref)
		case meta.IsNoMatchError(err):
			return fmt.Errorf("cert-manager Certificate %s: the API does not serve certificates.cert-manager.io/v1: install cert-manager and apply the cert-manager overlay, or run with --cert-mode=self-signed: %w", ref, err)
		default:
			return fmt.Errorf("reading cert-manager Certificate %s: %w", ref, err)
		}
	}
	var ready *certmanagerv1.CertificateCondition
	for i, c := range crt.Status.Conditions {
		if c.Type == certmanagerv1.CertificateConditionReady {
			ready = &crt.Status.Conditions[i]
		}
	}
	switch {
	case ready == nil:
		return fmt.Errorf("cert-manager Certificate %s has no Ready condition yet: is cert-manager running?", ref)
	case ready.Status != cmmeta.ConditionTrue:
		return fmt.Errorf("cert-manager Certificate %s is not Ready (status %s, reason %s): %s", ref, ready.Status, ready.Reason, ready.Message)
	case ready.ObservedGeneration != 0 && ready.ObservedGeneration < crt.Generation:
		return fmt.Errorf("cert-manager Certificate %s was Ready at generation %d but its spec is at generation %d: cert-manager has not processed the change yet",
			ref, ready.ObservedGeneration, crt.Generation)
	}
	return nil
}
