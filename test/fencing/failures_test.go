package fencing

import (
	"context"
	"testing"

	"google.golang.org/grpc/codes"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	"github.com/rds-fence/rds-fence/attachment/kube"
	"github.com/rds-fence/rds-fence/csi"
)

// A failed PV write rolls back memory and the RDS fence, and the publish
// fails with Unavailable: success is never returned before persistence.
func TestPersistFailureRollsBack(t *testing.T) {
	failPatch := true
	f := newFixture(t, func(c *kube.Cluster) {
		c.Writer = interceptor.NewClient(directWatch, interceptor.Funcs{
			Patch: func(ctx context.Context, cl client.WithWatch, obj client.Object, p client.Patch, opts ...client.PatchOption) error {
				if failPatch {
					return apierrors.NewServiceUnavailable("etcd is sad")
				}
				return cl.Patch(ctx, obj, p, opts...)
			},
		})
	})
	a := f.node("a")
	id := f.volume("data", false)
	_, err := f.publish(id, a, false)
	wantCode(t, err, codes.Unavailable, "recording the attachment on PV", "etcd is sad")
	if got := f.allowed(id); got != csi.NobodyNQN {
		t.Fatalf("fence after a failed publish = %q, want it rolled back to nobody", got)
	}
	if h := f.mgr.Holders(id); len(h) != 0 {
		t.Fatalf("memory after a failed publish holds %v", h)
	}
	if rec := f.persisted(id); rec.Held() {
		t.Fatalf("PV after a failed publish = %+v", rec)
	}
	failPatch = false
	f.mustPublish(id, a, false)
	// Unpublish with a failing write keeps all three at "held by a".
	failPatch = true
	wantCode(t, f.unpublish(id, a), codes.Unavailable)
	if got := f.allowed(id); got != hostNQN(a) {
		t.Fatalf("fence after a failed unpublish = %q, want node a's (rolled back)", got)
	}
	if h := f.mgr.Holders(id); len(h) != 1 || h[0] != a {
		t.Fatalf("memory after a failed unpublish = %v", h)
	}
}

// failingReader fails reads of one kind, like an API server that is down.
type failingReader struct {
	client.Reader
	kind string
}

func (r failingReader) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	if _, isNode := obj.(*corev1.Node); isNode && r.kind == "Node" {
		return apierrors.NewServiceUnavailable("apiserver down")
	}
	return r.Reader.Get(ctx, key, obj, opts...)
}

// An API error while checking the holder fails closed: Unavailable, nothing moves.
func TestAPIErrorsFailClosed(t *testing.T) {
	var reader *failingReader
	f := newFixture(t, func(c *kube.Cluster) {
		reader = &failingReader{Reader: c.Reader}
		c.Reader = reader
	})
	a, b := f.node("a"), f.node("b")
	id := f.volume("data", false)
	f.mustPublish(id, a, false)
	reader.kind = "Node"
	_, err := f.publish(id, b, false)
	wantCode(t, err, codes.Unavailable, "reading node")
	if got := f.allowed(id); got != hostNQN(a) {
		t.Fatalf("fence moved to %q on an API error", got)
	}
}

// An RDS failure while fencing fails the publish and leaves memory unchanged.
func TestRDSFailureFailsPublish(t *testing.T) {
	f := newFixture(t)
	a := f.node("a")
	id := f.volume("data", false)
	f.sim.Sim.FailCommands("nvme-tcp-server-allow-host-name", "failure: device is busy", 1)
	_, err := f.publish(id, a, false)
	wantCode(t, err, codes.Unavailable, "setting the storage fence", "device is busy")
	if h := f.mgr.Holders(id); len(h) != 0 {
		t.Fatalf("memory after a failed fence = %v", h)
	}
	if rec := f.persisted(id); rec.Held() {
		t.Fatalf("PV after a failed fence = %+v", rec)
	}
	f.mustPublish(id, a, false)
}
