package certs

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	certmanagerv1 "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	"sigs.k8s.io/yaml"
)

const overlay = "../manifests/overlays/cert-manager"

// decodeDocs strictly decodes each YAML document of file into a new T.
func decodeDocs[T any](t *testing.T, file string) []*T {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(overlay, file))
	if err != nil {
		t.Fatal(err)
	}
	var out []*T
	for _, doc := range bytes.Split(b, []byte("\n---\n")) {
		v := new(T)
		if err := yaml.UnmarshalStrict(doc, v); err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		out = append(out, v)
	}
	return out
}

// TestCertManagerOverlayMatchesDefaults keeps the overlay's names in step
// with the package's defaults and checks the issuer chain is closed.
func TestCertManagerOverlayMatchesDefaults(t *testing.T) {
	o := Options{}.Defaulted()
	crts := decodeDocs[certmanagerv1.Certificate](t, "certificate.yaml")
	if len(crts) != 1 {
		t.Fatalf("certificate.yaml holds %d documents", len(crts))
	}
	crt := crts[0]
	if crt.Kind != "Certificate" || crt.Namespace != o.Namespace || crt.Name != DefaultCertificateName ||
		crt.Spec.SecretName != o.SecretName || !slices.Equal(crt.Spec.DNSNames, o.DNSNamesFor()) {
		t.Fatalf("serving Certificate %s %s/%s secret %s DNS names %v; want %s/%s secret %s DNS names %v", crt.Kind,
			crt.Namespace, crt.Name, crt.Spec.SecretName, crt.Spec.DNSNames, o.Namespace, DefaultCertificateName, o.SecretName, o.DNSNamesFor())
	}
	if crt.Spec.PrivateKey == nil || crt.Spec.PrivateKey.RotationPolicy != certmanagerv1.RotationPolicyAlways {
		t.Fatal("serving Certificate: privateKey.rotationPolicy is not Always")
	}
	if crt.Spec.Duration == nil || crt.Spec.RenewBefore == nil || crt.Spec.RenewBefore.Duration >= crt.Spec.Duration.Duration {
		t.Fatal("serving Certificate: duration and a shorter renewBefore required")
	}

	// issuer.yaml: selfSigned Issuer -> CA Certificate -> CA Issuer.
	b, err := os.ReadFile(filepath.Join(overlay, "issuer.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	docs := bytes.Split(b, []byte("\n---\n"))
	if len(docs) != 3 {
		t.Fatalf("issuer.yaml holds %d documents, want 3", len(docs))
	}
	var selfSigned, caIssuer certmanagerv1.Issuer
	var ca certmanagerv1.Certificate
	for i, v := range []any{&selfSigned, &ca, &caIssuer} {
		if err := yaml.UnmarshalStrict(docs[i], v); err != nil {
			t.Fatalf("issuer.yaml document %d: %v", i, err)
		}
	}
	switch {
	case selfSigned.Spec.SelfSigned == nil:
		t.Fatal("first Issuer is not selfSigned")
	case !ca.Spec.IsCA || ca.Spec.IssuerRef.Name != selfSigned.Name:
		t.Fatal("CA Certificate is not a CA issued by the selfSigned Issuer")
	case caIssuer.Spec.CA == nil || caIssuer.Spec.CA.SecretName != ca.Spec.SecretName:
		t.Fatal("CA Issuer does not use the CA Certificate's Secret")
	case crt.Spec.IssuerRef.Name != caIssuer.Name || crt.Spec.IssuerRef.Kind != "Issuer":
		t.Fatal("serving Certificate is not issued by the CA Issuer")
	}
	for _, obj := range []string{selfSigned.Namespace, ca.Namespace, caIssuer.Namespace} {
		if obj != o.Namespace {
			t.Fatalf("issuer.yaml object in namespace %q, want %q", obj, o.Namespace)
		}
	}

	var k struct {
		Resources []string `json:"resources"`
		Patches   []struct {
			Patch string `json:"patch"`
		} `json:"patches"`
	}
	kb, err := os.ReadFile(filepath.Join(overlay, "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(kb, &k); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(k.Resources, []string{"../../base", "issuer.yaml", "certificate.yaml"}) {
		t.Fatalf("resources %v", k.Resources)
	}
	var patches strings.Builder
	for _, p := range k.Patches {
		patches.WriteString(p.Patch)
	}
	for _, want := range []string{"cert-manager.io/inject-ca-from: " + o.Namespace + "/" + DefaultCertificateName,
		"name: " + o.WebhookConfigName, "value: --cert-mode=cert-manager"} {
		if !strings.Contains(patches.String(), want) {
			t.Errorf("kustomization.yaml patches lack %q", want)
		}
	}
}
