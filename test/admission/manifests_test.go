package admission

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// TestBaseManifestsAccepted sends every object of the webhook's base
// manifests to the real API server as a server-side dry-run create: schema,
// enums and CEL matchConditions are validated by the server itself.
func TestBaseManifestsAccepted(t *testing.T) {
	kinds := map[string]bool{}
	for _, file := range []string{"webhook.yaml", "webhook-rbac.yaml", "webhook-configuration.yaml"} {
		raw, err := os.ReadFile(filepath.Join(root, "manifests", "base", file))
		if err != nil {
			t.Fatal(err)
		}
		dec := yaml.NewYAMLOrJSONDecoder(bytes.NewReader(raw), 4096)
		for {
			var u unstructured.Unstructured
			if err := dec.Decode(&u.Object); err == io.EOF {
				break
			} else if err != nil {
				t.Fatalf("%s: %v", file, err)
			}
			if len(u.Object) == 0 {
				continue
			}
			if u.GetNamespace() == "" && u.GetKind() != "ClusterRole" && u.GetKind() != "ClusterRoleBinding" && u.GetKind() != "ValidatingWebhookConfiguration" {
				u.SetNamespace(webhookNamespace) // kustomize's namespace: field
			}
			if u.GetKind() == "ValidatingWebhookConfiguration" {
				u.SetName(u.GetName() + "-dry-run") // the real one is registered
			}
			if err := direct.Create(t.Context(), &u, client.DryRunAll); err != nil {
				t.Errorf("%s: %s %s rejected: %v", file, u.GetKind(), u.GetName(), err)
			}
			kinds[u.GetKind()] = true
		}
	}
	for _, k := range []string{"Deployment", "Service", "PodDisruptionBudget", "ServiceAccount", "ClusterRole", "Role", "ValidatingWebhookConfiguration"} {
		if !kinds[k] {
			t.Errorf("no %s in the base manifests", k)
		}
	}
}
