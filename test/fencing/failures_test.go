package fencing

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	csipb "github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/rds-fence/rds-fence/attachment"
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

// staleNodeCache answers "no such node" for one node, like an informer that
// has not seen the node re-created.
type staleNodeCache struct {
	client.Reader
	missing string
}

func (r *staleNodeCache) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	if _, isNode := obj.(*corev1.Node); isNode && key.Name == r.missing {
		return apierrors.NewNotFound(corev1.Resource("nodes"), key.Name)
	}
	return r.Reader.Get(ctx, key, obj, opts...)
}

// A cache that lags (says the holder is gone) never releases a volume: the
// live API server is asked before a holder is cleared.
func TestStaleCacheNeverReleases(t *testing.T) {
	var reader *staleNodeCache
	f := newFixture(t, func(c *kube.Cluster) {
		reader = &staleNodeCache{Reader: c.Reader}
		c.Reader = reader
	})
	a, b := f.node("a"), f.node("b")
	id := f.volume("data", false)
	f.mustPublish(id, a, false)
	reader.missing = a
	_, err := f.publish(id, b, false)
	wantCode(t, err, codes.FailedPrecondition, "attached to node "+a)
	if got := f.allowed(id); got != hostNQN(a) {
		t.Fatalf("fence moved to %q on a stale cache", got)
	}
}

// A second writer (another controller instance) changed the PV: this
// controller's write is refused instead of overwriting it.
func TestSecondWriterIsDetected(t *testing.T) {
	f := newFixture(t)
	a := f.node("a")
	id := f.volume("data", false)
	f.mustPublish(id, a, false)
	var pv corev1.PersistentVolume
	if err := direct.Get(t.Context(), client.ObjectKey{Name: f.pvName(id)}, &pv); err != nil {
		t.Fatal(err)
	}
	pv.Annotations[attachment.AnnotationAttachment] = strings.ReplaceAll(pv.Annotations[attachment.AnnotationAttachment], a, f.ns+"-other")
	if err := direct.Update(t.Context(), &pv); err != nil {
		t.Fatal(err)
	}
	wantCode(t, f.unpublish(id, a), codes.Unavailable, "another writer")
	if got := f.allowed(id); got != hostNQN(a) {
		t.Fatalf("fence after a refused release = %q, want restored to node a's", got)
	}
}

// The undo of a publish runs even when the request's deadline has passed.
func TestUndoOutlivesTheRequest(t *testing.T) {
	f := newFixture(t)
	a := f.node("a")
	id := f.volume("data", false)
	f.sim.Sim.SetLatency(400 * time.Millisecond)
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	_, err := f.drv.ControllerPublishVolume(ctx, &csipb.ControllerPublishVolumeRequest{VolumeId: id, NodeId: a, VolumeCapability: capability(false)})
	wantCode(t, err, codes.Unavailable)
	f.sim.Sim.SetLatency(0)
	if rec := f.persisted(id); rec.Held() {
		t.Fatalf("PV still records %v after the publish failed", rec.Nodes())
	}
	waitFor(f, func(context.Context) bool { return f.allowed(id) == csi.NobodyNQN })
	if h := f.mgr.Holders(id); len(h) != 0 {
		t.Fatalf("memory holds %v", h)
	}
}

// The webhook's and reconciler's reader fails closed on a volume whose PV
// it cannot see.
func TestPVReaderFailsClosed(t *testing.T) {
	f := newFixture(t)
	r := &kube.PVReader{Cluster: f.cluster}
	if _, _, err := r.Get(t.Context(), "pvc-0000000000000000000000000000"); err == nil {
		t.Fatal("an unknown volume read as free")
	}
	id := f.volume("data", false)
	f.mustPublish(id, f.node("a"), false)
	waitFor(f, func(ctx context.Context) bool {
		rec, ok, err := r.Get(ctx, id)
		return err == nil && ok && len(rec.Holders) == 1
	})
}

// Another controller touching the PV (a label, the status) changes its
// resourceVersion but not the record: the write falls back to a live read
// and succeeds.
func TestUnrelatedPVChangeDoesNotBlock(t *testing.T) {
	f := newFixture(t)
	a := f.node("a")
	id := f.volume("data", false)
	f.mustPublish(id, a, false)
	var pv corev1.PersistentVolume
	if err := direct.Get(t.Context(), client.ObjectKey{Name: f.pvName(id)}, &pv); err != nil {
		t.Fatal(err)
	}
	pv.Labels = map[string]string{"team": "storage"}
	if err := direct.Update(t.Context(), &pv); err != nil {
		t.Fatal(err)
	}
	if err := f.unpublish(id, a); err != nil {
		t.Fatalf("unpublish after an unrelated PV change: %v", err)
	}
	if rec := f.persisted(id); rec.Held() {
		t.Fatalf("PV still records %v", rec.Nodes())
	}
}
