package fencing

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/rds-fence/rds-fence/csi"
	"github.com/rds-fence/rds-fence/reconciler"
)

// TestOrphanedDisks: a disk of the driver with no PV is reported (event,
// metric) and, only with deletion on and only after the minimum age,
// deleted with its file; a disk with a PV, a held disk and a disk outside
// the driver's prefix are never touched.
func TestOrphanedDisks(t *testing.T) {
	f := newFixture(t)
	a := f.node("a")
	withPV := f.volume("kept", false)
	ids := csi.VolumeIDs{SlotPrefix: "pvc-", NQNPrefix: "nqn.2000-02.com.mikrotik:", BasePath: "/storage-pool/kubernetes-volumes"}
	orphan := ids.Slot("pvc-0rphan00-0000-4000-8000-000000000000")
	foreign := "vm-disk-of-someone-else"
	manual := "pvc-manual"                                          // the prefix, not the driver's ID shape
	outside := ids.Slot("pvc-0ut51de0-0000-4000-8000-000000000000") // the driver's shape, file elsewhere
	for _, slot := range []string{orphan, foreign, manual} {
		f.sim.Sim.Exec(fmt.Sprintf(`/disk add type=file file-path="/storage-pool/kubernetes-volumes/%s.img" file-size=1M slot="%s" nvme-tcp-export=yes nvme-tcp-server-port=4420 nvme-tcp-server-nqn="nqn.2000-02.com.mikrotik:%s"`, slot, slot, slot))
	}
	f.sim.Sim.Exec(fmt.Sprintf(`/disk add type=file file-path="/storage-pool/other/%s.img" file-size=1M slot="%s"`, outside, outside))
	drv := &storagev1.CSIDriver{ObjectMeta: metav1.ObjectMeta{Name: csi.DefaultDriverName}}
	if err := direct.Create(t.Context(), drv); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	f.mustPublish(withPV, a, false)
	now := time.Now()
	scanner := func(del bool) (*reconciler.OrphanScanner, *prometheus.Registry) {
		s := &reconciler.OrphanScanner{Storage: f.rds, Volumes: f.mgr, Idle: f.drv.WhileIdle, Reader: cached, Live: direct, Driver: csi.DefaultDriverName,
			Prefix: ids.SlotPrefix, BasePath: ids.BasePath, Owns: ids.Owns, Delete: del, MinAge: time.Hour,
			Recorder: recorder, Now: func() time.Time { return now }, Log: testLog(t)}
		reg := prometheus.NewRegistry()
		if err := s.RegisterMetrics(reg); err != nil {
			t.Fatal(err)
		}
		return s, reg
	}
	exists := func(slot string) bool { _, ok := f.sim.Sim.Disk(slot); return ok }

	report, reg := scanner(false)
	got, err := report.Scan(t.Context())
	slices.Sort(got)
	want := []string{orphan, outside}
	slices.Sort(want)
	if err != nil || !slices.Equal(got, want) {
		t.Fatalf("orphans = %v, %v; want %v", got, err, want)
	}
	if v, _ := testutil.GatherAndCount(reg, "rds_fence_orphaned_disks"); v != 1 {
		t.Fatal("orphan gauge not exported")
	}
	now = now.Add(48 * time.Hour)
	if _, err := report.Scan(t.Context()); err != nil || !exists(orphan) {
		t.Fatalf("report-only mode deleted the orphan (err %v)", err)
	}
	// Events on a cluster-scoped object land in "default".
	waitFor(f, func(ctx context.Context) bool {
		var list corev1.EventList
		if direct.List(ctx, &list, client.InNamespace(metav1.NamespaceDefault)) != nil {
			return false
		}
		for _, e := range list.Items {
			if e.InvolvedObject.Kind == "CSIDriver" && e.Reason == reconciler.ReasonOrphanedDisk && strings.Contains(e.Message, orphan) {
				return true
			}
		}
		return false
	})

	del, _ := scanner(true)
	if _, err := del.Scan(t.Context()); err != nil || !exists(orphan) {
		t.Fatalf("deleted at first sight (err %v)", err)
	}
	now = now.Add(59 * time.Minute)
	if _, err := del.Scan(t.Context()); err != nil || !exists(orphan) {
		t.Fatalf("deleted before the minimum age (err %v)", err)
	}
	now = now.Add(time.Minute)
	// A CSI operation in progress on the volume (a CreateVolume retry):
	// not now.
	busy := f.drv.WhileIdle(orphan, func() error {
		_, err := del.Scan(t.Context())
		return err
	})
	if busy == nil || !strings.Contains(busy.Error(), "in progress") || !exists(orphan) {
		t.Fatalf("deleted while a CSI operation was in progress (err %v)", busy)
	}
	_, err = del.Scan(t.Context())
	if exists(orphan) {
		t.Fatalf("not deleted after the minimum age (err %v)", err)
	}
	if err == nil || !strings.Contains(err.Error(), "outside") || !exists(outside) {
		t.Fatalf("the orphan whose file is outside the base path: err %v, exists %v", err, exists(outside))
	}
	if !exists(foreign) || !exists(withPV) || !exists(manual) {
		t.Fatal("a disk outside the prefix, not of the driver's shape, or with a PV was touched")
	}
	if got := f.allowed(withPV); got != hostNQN(a) {
		t.Fatalf("held volume's fence = %q", got)
	}
}
