package manifests_test

import (
	"regexp"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/rds-fence/rds-fence/cmd/rds-fence/app"
	"github.com/rds-fence/rds-fence/test/manifests"
)

var envRef = regexp.MustCompile(`\$\(([A-Z_]+)\)`)

// TestShippedArgsParse feeds the args of every rds-fence container in the
// rendered overlays through the subcommand's own flag parser and
// validation (a server-side dry-run does not read container args), with
// $(VAR) references replaced by what the manifests give them.
func TestShippedArgsParse(t *testing.T) {
	values := map[string]string{"RDS_ADDRESS": "rds.example.internal:22", "RDS_USER": "rds-fence", "RDS_POOL": "storage-pool",
		"RDS_NVME_PORT": "4420", "POD_NAMESPACE": "rds-fence", "NODE_NAME": "node-1"}
	for _, overlay := range manifests.Overlays {
		objs, err := manifests.Render("overlays/" + overlay)
		if err != nil {
			t.Fatal(err)
		}
		seen := map[string]bool{}
		for _, kind := range []string{"Deployment", "DaemonSet"} {
			for _, o := range manifests.Select(objs, kind) {
				var spec corev1.PodTemplateSpec
				tmpl, _ := unstructuredMap(o.Object, "spec", "template")
				if err := runtime.DefaultUnstructuredConverter.FromUnstructured(tmpl, &spec); err != nil {
					t.Fatal(err)
				}
				for _, c := range spec.Spec.Containers {
					if !strings.Contains(c.Image, "rds-fence") || len(c.Args) == 0 {
						continue
					}
					args := make([]string, len(c.Args))
					for i, a := range c.Args {
						args[i] = envRef.ReplaceAllStringFunc(a, func(ref string) string {
							v, ok := values[envRef.FindStringSubmatch(ref)[1]]
							if !ok {
								t.Errorf("%s %s/%s: %s references %s, which the test does not know", overlay, o.GetName(), c.Name, a, ref)
							}
							return v
						})
					}
					var perr error
					switch args[0] {
					case "controller":
						_, _, perr = app.ParseControllerFlags(args[1:], "test")
					case "webhook":
						_, _, perr = app.ParseWebhookFlags(args[1:])
					case "node":
						_, _, perr = app.ParseNodeFlags(args[1:], "test")
					default:
						t.Errorf("%s %s/%s runs unknown subcommand %q", overlay, o.GetName(), c.Name, args[0])
						continue
					}
					if perr != nil {
						t.Errorf("%s %s/%s: %v\nargs: %q", overlay, o.GetName(), c.Name, perr, args)
					}
					seen[args[0]] = true
				}
			}
		}
		for _, sub := range []string{"controller", "webhook", "node"} {
			if !seen[sub] {
				t.Errorf("overlays/%s runs no %s", overlay, sub)
			}
		}
	}
}

func unstructuredMap(obj map[string]any, path ...string) (map[string]any, bool) {
	cur := obj
	for _, p := range path {
		next, ok := cur[p].(map[string]any)
		if !ok {
			return nil, false
		}
		cur = next
	}
	return cur, true
}
