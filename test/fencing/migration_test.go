package fencing

import (
	"context"
	"strings"
	"testing"
	"time"

	csipb "github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kubevirtv1 "kubevirt.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/rds-fence/rds-fence/attachment/kube"
	"github.com/rds-fence/rds-fence/csi"
)

// vmiWithMigration creates a VMI using claim and a migration of it to target
// in the given phase.
func (f *fixture) vmiWithMigration(claim, source, target string, phase kubevirtv1.VirtualMachineInstanceMigrationPhase) *kubevirtv1.VirtualMachineInstanceMigration {
	f.t.Helper()
	ctx := f.t.Context()
	vmi := &kubevirtv1.VirtualMachineInstance{ObjectMeta: metav1.ObjectMeta{Namespace: f.ns, Name: "vm1"},
		Spec: kubevirtv1.VirtualMachineInstanceSpec{Volumes: []kubevirtv1.Volume{{Name: "disk0", VolumeSource: kubevirtv1.VolumeSource{
			PersistentVolumeClaim: &kubevirtv1.PersistentVolumeClaimVolumeSource{
				PersistentVolumeClaimVolumeSource: corev1.PersistentVolumeClaimVolumeSource{ClaimName: claim}}}}}}}
	if err := direct.Create(ctx, vmi); err != nil {
		f.t.Fatal(err)
	}
	vmi.Status.NodeName = source
	if err := direct.Status().Update(ctx, vmi); err != nil {
		f.t.Fatal(err)
	}
	mig := &kubevirtv1.VirtualMachineInstanceMigration{ObjectMeta: metav1.ObjectMeta{Namespace: f.ns, Name: "mig1"},
		Spec: kubevirtv1.VirtualMachineInstanceMigrationSpec{VMIName: "vm1"}}
	if err := direct.Create(ctx, mig); err != nil {
		f.t.Fatal(err)
	}
	mig.Status = kubevirtv1.VirtualMachineInstanceMigrationStatus{Phase: phase,
		MigrationState: &kubevirtv1.VirtualMachineInstanceMigrationState{TargetNode: target}}
	if err := direct.Status().Update(ctx, mig); err != nil {
		f.t.Fatal(err)
	}
	f.waitCached(&kubevirtv1.VirtualMachineInstance{}, client.ObjectKeyFromObject(vmi), true)
	waitFor(f, func(ctx context.Context) bool {
		var got kubevirtv1.VirtualMachineInstanceMigration
		var gotVMI kubevirtv1.VirtualMachineInstance
		return cached.Get(ctx, client.ObjectKeyFromObject(mig), &got) == nil && got.Status.Phase == phase &&
			cached.Get(ctx, client.ObjectKeyFromObject(vmi), &gotVMI) == nil && gotVMI.Status.NodeName == source
	})
	return mig
}

func TestRWXBlockLiveMigration(t *testing.T) {
	f := newFixture(t)
	a, b, c := f.node("a"), f.node("b"), f.node("c")
	id := f.volume("vmdisk", true)
	f.mustPublish(id, a, true)

	_, err := f.publish(id, b, true)
	wantCode(t, err, codes.FailedPrecondition, "only during a KubeVirt live migration", "PVC "+f.ns+"/vmdisk")

	f.vmiWithMigration("vmdisk", a, b, kubevirtv1.MigrationRunning)
	f.mustPublish(id, b, true)
	if rec := f.persisted(id); nodes(rec) != a+","+b || rec.Migration == nil || rec.Migration.Name != "mig1" {
		t.Fatalf("persisted = %+v", rec)
	}
	if got := f.allowed(id); got != "" {
		t.Fatalf("fence during the migration = %q, want open to both hosts (\"\")", got)
	}
	if msg := f.event("PersistentVolumeClaim", "vmdisk", kube.ReasonMigrationStarted); !strings.Contains(msg, "mig1") {
		t.Fatalf("MigrationStarted = %q", msg)
	}
	_, err = f.publish(id, c, true)
	wantCode(t, err, codes.FailedPrecondition, "at most two nodes")

	// The source lets go: the migration completed, the fence closes on the target.
	if err := f.unpublish(id, a); err != nil {
		t.Fatal(err)
	}
	if got := f.allowed(id); got != hostNQN(b) {
		t.Fatalf("fence after the migration = %q, want node b's", got)
	}
	if msg := f.event("PersistentVolumeClaim", "vmdisk", kube.ReasonMigrationCompleted); !strings.Contains(msg, "node "+b+" holds it") {
		t.Fatalf("MigrationCompleted = %q", msg)
	}
}

func TestRWXBlockMigrationRefusals(t *testing.T) {
	t.Run("finished migration", func(t *testing.T) {
		f := newFixture(t)
		a, b := f.node("a"), f.node("b")
		id := f.volume("vmdisk", true)
		f.mustPublish(id, a, true)
		f.vmiWithMigration("vmdisk", a, b, kubevirtv1.MigrationSucceeded)
		_, err := f.publish(id, b, true)
		wantCode(t, err, codes.FailedPrecondition, "no unfinished VirtualMachineInstanceMigration")
	})
	t.Run("migration timeout passed", func(t *testing.T) {
		f := newFixture(t)
		a, b := f.node("a"), f.node("b")
		id := f.volume("vmdisk", true)
		f.mustPublish(id, a, true)
		f.vmiWithMigration("vmdisk", a, b, kubevirtv1.MigrationRunning)
		_, err := f.drv.ControllerPublishVolume(t.Context(), &csipb.ControllerPublishVolumeRequest{VolumeId: id, NodeId: b,
			VolumeCapability: capability(true), VolumeContext: map[string]string{csi.CtxMigrationTmo: "1ns"}})
		wantCode(t, err, codes.FailedPrecondition, "window has passed")
	})
	t.Run("target not known, then found from the target pod", func(t *testing.T) {
		f := newFixture(t)
		a, b := f.node("a"), f.node("b")
		id := f.volume("vmdisk", true)
		f.mustPublish(id, a, true)
		mig := f.vmiWithMigration("vmdisk", a, "", kubevirtv1.MigrationScheduling)
		_, err := f.publish(id, b, true)
		wantCode(t, err, codes.FailedPrecondition, "no known target node yet")
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: f.ns, Name: "virt-launcher-vm1-target",
			Labels: map[string]string{kube.LabelMigrationJobUID: string(mig.UID)}},
			Spec: corev1.PodSpec{NodeName: b, Containers: []corev1.Container{{Name: "compute", Image: "virt-launcher"}}}}
		if err := direct.Create(t.Context(), pod); err != nil {
			t.Fatal(err)
		}
		f.waitCached(&corev1.Pod{}, client.ObjectKeyFromObject(pod), true)
		f.mustPublish(id, b, true)
		// The target gives up: the migration failed, the source keeps the volume.
		if err := f.unpublish(id, b); err != nil {
			t.Fatal(err)
		}
		if msg := f.event("PersistentVolumeClaim", "vmdisk", kube.ReasonMigrationFailed); !strings.Contains(msg, "source node "+a+" keeps it") {
			t.Fatalf("MigrationFailed = %q", msg)
		}
		if got := f.allowed(id); got != hostNQN(a) {
			t.Fatalf("fence after a failed migration = %q", got)
		}
	})
	t.Run("filesystem on two nodes", func(t *testing.T) {
		f := newFixture(t)
		a := f.node("a")
		id := f.volume("fs", false)
		rwxFS := capability(false)
		rwxFS.AccessMode.Mode = csipb.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER
		_, err := f.drv.ControllerPublishVolume(t.Context(), &csipb.ControllerPublishVolumeRequest{VolumeId: id, NodeId: a, VolumeCapability: rwxFS})
		wantCode(t, err, codes.InvalidArgument, "raw block volumes only")
	})
}

type clockAt time.Time

func (c clockAt) Now() time.Time { return time.Time(c) }

// A two-node window that outlives its migration timeout is closed: the
// node the VMI runs on keeps the volume, the other is fenced out.
func TestMigrationWindowExpires(t *testing.T) {
	f := newFixture(t)
	a, b := f.node("a"), f.node("b")
	id := f.volume("vmdisk", true)
	f.mustPublish(id, a, true)
	f.vmiWithMigration("vmdisk", a, b, kubevirtv1.MigrationRunning)
	_, err := f.drv.ControllerPublishVolume(t.Context(), &csipb.ControllerPublishVolumeRequest{VolumeId: id, NodeId: b,
		VolumeCapability: capability(true), VolumeContext: map[string]string{csi.CtxMigrationTmo: "10m"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.mgr.ExpireMigrations(t.Context()); err != nil || len(f.mgr.Holders(id)) != 2 {
		t.Fatalf("a window within its timeout was closed: %v %v", f.mgr.Holders(id), err)
	}
	// The VM now runs on b; time passes beyond the deadline.
	var vmi kubevirtv1.VirtualMachineInstance
	if err := direct.Get(t.Context(), client.ObjectKey{Namespace: f.ns, Name: "vm1"}, &vmi); err != nil {
		t.Fatal(err)
	}
	vmi.Status.NodeName = b
	if err := direct.Status().Update(t.Context(), &vmi); err != nil {
		t.Fatal(err)
	}
	waitFor(f, func(ctx context.Context) bool {
		var got kubevirtv1.VirtualMachineInstance
		return cached.Get(ctx, client.ObjectKeyFromObject(&vmi), &got) == nil && got.Status.NodeName == b
	})
	f.mgr.Clock = clockAt(time.Now().Add(11 * time.Minute))
	if err := f.mgr.ExpireMigrations(t.Context()); err != nil {
		t.Fatal(err)
	}
	if h := f.mgr.Holders(id); len(h) != 1 || h[0] != b {
		t.Fatalf("holders after expiry = %v, want the VMI's node %s", h, b)
	}
	if got := f.allowed(id); got != hostNQN(b) {
		t.Fatalf("fence after expiry = %q", got)
	}
	if rec := f.persisted(id); nodes(rec) != b || rec.Migration != nil {
		t.Fatalf("persisted after expiry = %+v", rec)
	}
	f.event("PersistentVolumeClaim", "vmdisk", kube.ReasonMigrationCompleted)
}
