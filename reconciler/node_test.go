package reconciler

import (
	"context"
	"testing"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/rds-fence/rds-fence/attachment"
)

// noHolds is a fencing core that holds nothing for the node (a publish
// that failed, or a node recreated under the same name).
type noHolds struct{}

func (noHolds) ReleaseNode(context.Context, string, int) ([]attachment.Record, error) {
	return nil, nil
}
func (noHolds) HeldBy(string) []attachment.Record { return nil }
func (noHolds) HolderNodes() []string             { return nil }

// TestVolumeAttachmentsNeedALiveConfirmation: the cache says the node is
// gone, the API server says it exists: its VolumeAttachment must stay
// (deleting it would make the external-attacher unpublish, and so fence,
// a running node). The envtest suite (test/fencing) covers the real path.
func TestVolumeAttachmentsNeedALiveConfirmation(t *testing.T) {
	pv := "pv-1"
	va := &storagev1.VolumeAttachment{ObjectMeta: metav1.ObjectMeta{Name: "va-1"},
		Spec: storagev1.VolumeAttachmentSpec{Attacher: "rds-fence.csi.dev", NodeName: "a",
			Source: storagev1.VolumeAttachmentSource{PersistentVolumeName: &pv}}}
	cache := fake.NewClientBuilder().WithScheme(clientgoscheme.Scheme).WithObjects(va).Build()
	live := fake.NewClientBuilder().WithScheme(clientgoscheme.Scheme).
		WithObjects(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "a"}}).Build()
	r := &NodeReconciler{Reader: cache, Writer: cache, Live: live, Attachments: noHolds{}, Driver: "rds-fence.csi.dev", Log: logr.Discard()}
	if _, err := r.Reconcile(t.Context(), reconcile.Request{NamespacedName: client.ObjectKey{Name: "a"}}); err != nil {
		t.Fatal(err)
	}
	if err := cache.Get(t.Context(), client.ObjectKeyFromObject(va), &storagev1.VolumeAttachment{}); err != nil {
		t.Fatalf("VolumeAttachment of a live node deleted: %v", err)
	}
	// Once the API server agrees, it goes.
	if err := live.Delete(t.Context(), &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "a"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Reconcile(t.Context(), reconcile.Request{NamespacedName: client.ObjectKey{Name: "a"}}); err != nil {
		t.Fatal(err)
	}
	if err := cache.Get(t.Context(), client.ObjectKeyFromObject(va), &storagev1.VolumeAttachment{}); err == nil {
		t.Fatal("VolumeAttachment of a deleted node kept")
	}
}
