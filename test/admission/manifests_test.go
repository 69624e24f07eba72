package admission

import (
	"slices"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/rds-fence/rds-fence/test/manifests"
)

// TestRenderedOverlaysAccepted renders every overlay with kustomize and
// sends each object to the real API server as a server-side apply with
// dryRun=All: schemas (the cert-manager, KubeVirt and ServiceMonitor CRDs
// from test/crds included), enums, CEL matchConditions and RBAC
// references are validated by the server itself, nothing is stored.
func TestRenderedOverlaysAccepted(t *testing.T) {
	want := []string{"Namespace", "CSIDriver", "StorageClass", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding",
		"ConfigMap", "Deployment", "DaemonSet", "Service", "PodDisruptionBudget", "ValidatingWebhookConfiguration", "ServiceMonitor"}
	for _, overlay := range manifests.Overlays {
		t.Run(overlay, func(t *testing.T) {
			objs, err := manifests.Render("overlays/" + overlay)
			if err != nil {
				t.Fatal(err)
			}
			kinds := map[string]bool{}
			for _, o := range objs {
				if o.GetKind() == "ValidatingWebhookConfiguration" {
					o = o.DeepCopy()
					o.SetName(o.GetName() + "-dry-run") // the test's own, pointing at the test's webhook, is registered under the name
				}
				err := direct.Apply(t.Context(), client.ApplyConfigurationFromUnstructured(o), client.DryRunAll,
					client.FieldOwner("rds-fence-manifest-test"), client.ForceOwnership)
				if err != nil {
					t.Errorf("%s %s/%s rejected: %v", o.GetKind(), o.GetNamespace(), o.GetName(), err)
				}
				kinds[o.GetKind()] = true
			}
			for _, k := range want {
				if !kinds[k] {
					t.Errorf("no %s in overlays/%s", k, overlay)
				}
			}
			if overlay == "cert-manager" && !kinds["Certificate"] {
				t.Error("the cert-manager overlay has no Certificate")
			}
			// fencing is silently off without attachRequired
			drv := manifests.Select(objs, "CSIDriver")
			if len(drv) != 1 {
				t.Fatalf("%d CSIDrivers", len(drv))
			}
			if req, _, _ := unstructured.NestedBool(drv[0].Object, "spec", "attachRequired"); !req {
				t.Error("the CSIDriver does not require attach: Kubernetes would never call ControllerPublish and fencing would be off")
			}
			var scs []string
			for _, sc := range manifests.Select(objs, "StorageClass") {
				scs = append(scs, sc.GetName())
			}
			slices.Sort(scs)
			if !slices.Equal(scs, []string{"rds-fence", "rds-fence-block", "rds-fence-block-rwx"}) {
				t.Errorf("storage classes %v", scs)
			}
		})
	}
	// the credentials template is valid too (it is not part of the base)
	raw, err := manifests.RenderFile("examples/rds-secret.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range raw {
		if err := direct.Apply(t.Context(), client.ApplyConfigurationFromUnstructured(o), client.DryRunAll, client.FieldOwner("rds-fence-manifest-test")); err != nil {
			t.Errorf("examples/rds-secret.yaml: %v", err)
		}
	}
}
