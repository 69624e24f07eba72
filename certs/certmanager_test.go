package certs

import (
	"context"
	"strings"
	"testing"

	certmanagerv1 "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	cmmeta "github.com/cert-manager/cert-manager/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
)

func TestCheckCertificate(t *testing.T) {
	c := newClient(t)
	ctx := t.Context()
	ns := newNamespace(t, c)
	crt := &certmanagerv1.Certificate{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: DefaultCertificateName},
		Spec: certmanagerv1.CertificateSpec{SecretName: DefaultSecretName, DNSNames: []string{"rds-fence-webhook.rds-fence.svc"},
			IssuerRef: cmmeta.IssuerReference{Name: "rds-fence-ca", Kind: "Issuer"}},
	}
	if err := c.Create(ctx, crt); err != nil {
		t.Fatal(err)
	}
	ref := ns + "/" + DefaultCertificateName
	setReady := func(status cmmeta.ConditionStatus, reason, message string, observed int64) {
		t.Helper()
		crt.Status.Conditions = []certmanagerv1.CertificateCondition{
			{Type: "Issuing", Status: cmmeta.ConditionFalse},
			{Type: certmanagerv1.CertificateConditionReady, Status: status, Reason: reason, Message: message, ObservedGeneration: observed},
		}
		if err := c.Status().Update(ctx, crt); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name  string
		setup func()
		cname string
		want  string // "" means nil
	}{
		{"not found", func() {}, "other", "cert-manager Certificate " + ns + "/other not found: install cert-manager and apply the cert-manager overlay, or run with --cert-mode=self-signed"},
		{"no Ready condition", func() {}, DefaultCertificateName, "cert-manager Certificate " + ref + " has no Ready condition yet: is cert-manager running?"},
		{"Ready=False", func() {
			setReady(cmmeta.ConditionFalse, "DoesNotExist", "Issuing certificate as Secret does not exist", crt.Generation)
		}, DefaultCertificateName, "cert-manager Certificate " + ref + " is not Ready (status False, reason DoesNotExist): Issuing certificate as Secret does not exist"},
		{"Ready=True", func() {
			setReady(cmmeta.ConditionTrue, "Ready", "Certificate is up to date and has not expired", crt.Generation)
		},
			DefaultCertificateName, ""},
		{"Ready=True for an older generation", func() {
			crt.Spec.DNSNames = append(crt.Spec.DNSNames, "extra.example")
			if err := c.Update(ctx, crt); err != nil {
				t.Fatal(err)
			}
		}, DefaultCertificateName, "was Ready at generation 1 but its spec is at generation 2"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.setup()
			err := CheckCertificate(ctx, c, ns, tc.cname)
			if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
				t.Fatalf("CheckCertificate = %v, want %q", err, tc.want)
			}
		})
	}
}

func TestCheckCertificateKindNotServed(t *testing.T) {
	c := interceptor.NewClient(newWatchClient(t), interceptor.Funcs{
		Get: func(context.Context, client.WithWatch, client.ObjectKey, client.Object, ...client.GetOption) error {
			return &meta.NoKindMatchError{GroupKind: schema.GroupKind{Group: "cert-manager.io", Kind: "Certificate"}, SearchedVersions: []string{"v1"}}
		},
	})
	err := CheckCertificate(t.Context(), c, "rds-fence", DefaultCertificateName)
	want := "cert-manager Certificate rds-fence/rds-fence-webhook: the API does not serve certificates.cert-manager.io/v1: install cert-manager"
	if err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Fatalf("CheckCertificate = %v, want %q...", err, want)
	}
}
