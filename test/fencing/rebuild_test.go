package fencing

import (
	"context"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/rds-fence/rds-fence/attachment"
	"github.com/rds-fence/rds-fence/attachment/kube"
	"github.com/rds-fence/rds-fence/csi"
)

// restart replaces the fixture's store by a fresh one rebuilt from the
// cluster and the RDS, as a controller restart does.
func (f *fixture) restart() attachment.Rebuilt {
	f.t.Helper()
	f.mgr.Store = attachment.NewStore()
	res, err := f.mgr.Rebuild(f.t.Context())
	if err != nil {
		f.t.Fatalf("rebuild: %v", err)
	}
	return res
}

func (f *fixture) attachVA(pvName, node string) {
	f.t.Helper()
	va := &storagev1.VolumeAttachment{ObjectMeta: metav1.ObjectMeta{Name: "va-" + pvName[:20] + "-" + node[len(node)-1:]},
		Spec: storagev1.VolumeAttachmentSpec{Attacher: csi.DefaultDriverName, NodeName: node,
			Source: storagev1.VolumeAttachmentSource{PersistentVolumeName: &pvName}}}
	if err := direct.Create(f.t.Context(), va); err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() { _ = direct.Delete(context.Background(), va) })
	va.Status.Attached = true
	if err := direct.Status().Update(f.t.Context(), va); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) pvName(id string) string {
	f.t.Helper()
	var list corev1.PersistentVolumeList
	if err := direct.List(f.t.Context(), &list); err != nil {
		f.t.Fatal(err)
	}
	for _, pv := range list.Items {
		if pv.Spec.CSI != nil && pv.Spec.CSI.VolumeHandle == id {
			return pv.Name
		}
	}
	f.t.Fatalf("no PV for %s", id)
	return ""
}

func driftKinds(res attachment.Rebuilt, volumeID string) string {
	var kinds []string
	for _, d := range res.Drifts {
		if d.VolumeID == volumeID {
			kinds = append(kinds, d.Kind)
		}
	}
	return strings.Join(kinds, ",")
}

func TestRebuildAfterRestart(t *testing.T) {
	f := newFixture(t)
	a, b := f.node("a"), f.node("b")
	agree := f.volume("agree", false)
	f.mustPublish(agree, a, false)
	f.attachVA(f.pvName(agree), a)

	wrongFence := f.volume("wrong-fence", false)
	f.mustPublish(wrongFence, a, false)
	f.attachVA(f.pvName(wrongFence), a)
	if err := env(f).SetAllowedHost(t.Context(), wrongFence, hostNQN(b)); err != nil { // someone edited the RDS
		t.Fatal(err)
	}

	unrecorded := f.volume("unrecorded", false)
	f.attachVA(f.pvName(unrecorded), b)

	conflicting := f.volume("conflicting", false)
	f.mustPublish(conflicting, a, false)
	f.attachVA(f.pvName(conflicting), b)

	corrupt := f.volume("corrupt", false)
	var pv corev1.PersistentVolume
	if err := direct.Get(t.Context(), client.ObjectKey{Name: f.pvName(corrupt)}, &pv); err != nil {
		t.Fatal(err)
	}
	pv.Annotations = map[string]string{attachment.AnnotationAttachment: `{"v":9}`}
	if err := direct.Update(t.Context(), &pv); err != nil {
		t.Fatal(err)
	}

	res := f.restart()
	for id, want := range map[string]string{
		agree:       "",
		wrongFence:  attachment.DriftFence,
		unrecorded:  attachment.DriftAttachedNoRecord + "," + attachment.DriftFence, // adopted, then fenced to it
		conflicting: attachment.DriftConflictingHolder + "," + attachment.DriftRecordNoAttached,
		corrupt:     attachment.DriftUnreadable,
	} {
		if got := driftKinds(res, id); got != want {
			t.Errorf("drift of %s = %q, want %q", id, got, want)
		}
	}
	check := func(id, holder, fence string) {
		t.Helper()
		if got := strings.Join(f.mgr.Holders(id), ","); got != holder {
			t.Errorf("holders of %s = %q, want %q", id, got, holder)
		}
		if got := f.allowed(id); got != fence {
			t.Errorf("fence of %s = %q, want %q", id, got, fence)
		}
	}
	check(agree, a, hostNQN(a))
	check(wrongFence, a, hostNQN(a))  // re-applied from the record
	check(unrecorded, b, hostNQN(b))  // adopted from the VolumeAttachment
	check(conflicting, a, hostNQN(a)) // the record wins, never two holders
	check(corrupt, "", csi.NobodyNQN) // quarantined, still fenced
	if rec := f.persisted(unrecorded); nodes(rec) != b {
		t.Errorf("adopted holder not persisted: %+v", rec)
	}
	_, err := f.publish(corrupt, a, false)
	wantCode(t, err, codes.FailedPrecondition, "quarantined", "cannot be read", "remove the "+attachment.AnnotationAttachment)
	if msg := f.eventContaining("PersistentVolumeClaim", "conflicting", kube.ReasonAttachmentDrift, attachment.DriftConflictingHolder); !strings.Contains(msg, "keeping the record") {
		t.Errorf("drift event = %q", msg)
	}
	if v := testutilValue(f.metrics.Drift.WithLabelValues(attachment.DriftFence)); v != 2 {
		t.Errorf("fence drift metric = %v", v)
	}
	// The rebuilt store keeps fencing: node b still cannot take "agree".
	_, err = f.publish(agree, b, false)
	wantCode(t, err, codes.FailedPrecondition, "attached to node "+a)
}
