package manifests

import (
	"context"
	"fmt"
	"net/http"
	"sync"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// ApplyRBAC creates, for real, the ServiceAccount named sa and the
// (Cluster)Roles and (Cluster)RoleBindings of that name from objs, in
// namespace ns (which must exist). It fails when any of them is missing,
// so a test cannot pass against RBAC that was never shipped.
func ApplyRBAC(ctx context.Context, c client.Client, objs []*unstructured.Unstructured, ns, sa string) error {
	for _, kind := range []string{"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"} {
		sel := Select(objs, kind, sa)
		if len(sel) == 0 && (kind == "ServiceAccount" || kind == "ClusterRole" || kind == "ClusterRoleBinding") {
			return fmt.Errorf("the manifests have no %s %s", kind, sa)
		}
		for _, o := range sel {
			o = o.DeepCopy()
			if kind == "ServiceAccount" || kind == "Role" || kind == "RoleBinding" {
				o.SetNamespace(ns)
			}
			if err := c.Apply(ctx, client.ApplyConfigurationFromUnstructured(o), client.FieldOwner("rds-fence-rbac-test"), client.ForceOwnership); err != nil {
				return fmt.Errorf("%s %s: %w", kind, sa, err)
			}
		}
	}
	return nil
}

// Denials records every request the API server refused with 403.
type Denials struct {
	mu   sync.Mutex
	reqs []string
}

// List returns "METHOD path" of every refused request.
func (d *Denials) List() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.reqs...)
}

type recordDenials struct {
	next http.RoundTripper
	d    *Denials
}

func (r recordDenials) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := r.next.RoundTrip(req)
	if err == nil && resp.StatusCode == http.StatusForbidden {
		r.d.mu.Lock()
		r.d.reqs = append(r.d.reqs, req.Method+" "+req.URL.RequestURI())
		r.d.mu.Unlock()
	}
	return resp, err
}

// AsServiceAccount is cfg impersonating ServiceAccount ns/sa (with the
// groups the API server gives a ServiceAccount token), recording every
// 403 in the returned Denials. With node, it is the token of a pod on that
// node (the node name the API server puts in a pod-bound token).
func AsServiceAccount(cfg *rest.Config, ns, sa string, node ...string) (*rest.Config, *Denials) {
	c := rest.CopyConfig(cfg)
	c.Impersonate = rest.ImpersonationConfig{UserName: "system:serviceaccount:" + ns + ":" + sa,
		Groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + ns, "system:authenticated"}}
	if len(node) == 1 {
		c.Impersonate.Extra = map[string][]string{"authentication.kubernetes.io/node-name": node}
	}
	d := &Denials{}
	prev := c.WrapTransport
	c.WrapTransport = func(rt http.RoundTripper) http.RoundTripper {
		if prev != nil {
			rt = prev(rt)
		}
		return recordDenials{next: rt, d: d}
	}
	return c, d
}
