package fencing

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/rds-fence/rds-fence/attachment"
	"github.com/rds-fence/rds-fence/csi"
	"github.com/rds-fence/rds-fence/rds"
	"github.com/rds-fence/rds-fence/reconciler"
)

func kinds(ds []attachment.Drift) map[string]string {
	out := map[string]string{}
	for _, d := range ds {
		out[d.Kind+" "+d.VolumeID] = d.Detail
	}
	return out
}

// mine keeps the drifts of these volumes (the API server is shared with
// the package's other tests, whose PVs a check also sees).
func mine(ds []attachment.Drift, ids ...string) []attachment.Drift {
	var out []attachment.Drift
	for _, d := range ds {
		for _, id := range ids {
			if d.VolumeID == id {
				out = append(out, d)
			}
		}
	}
	return out
}

// TestDriftRepairedWhileServing: the fence, the PV record and stray
// VolumeAttachments are compared with the controller's records; the fence
// and the PV are repaired from them, the rest reported.
func TestDriftRepairedWhileServing(t *testing.T) {
	f := newFixture(t)
	a, b := f.node("a"), f.node("b")
	fenced := f.volume("fenced", false)
	recorded := f.volume("recorded", false)
	unheld := f.volume("unheld", false)
	for _, id := range []string{fenced, recorded} {
		f.mustPublish(id, a, false)
	}
	ctx := t.Context()
	dc := &attachment.DriftChecker{NoAttachmentAfter: time.Hour}
	// Nothing tampered: nothing reported but the missing VolumeAttachments
	// (not yet old enough).
	ids := []string{fenced, recorded, unheld}
	if ds, err := f.mgr.CheckDrift(ctx, dc); err != nil || len(mine(ds, ids...)) != 0 {
		t.Fatalf("clean state: drifts %v, err %v", ds, err)
	}

	// Behind the controller's back: the RDS admits mallory on one volume and
	// anyone... on a volume nobody holds; the PV of another says node b; a
	// VolumeAttachment says attached to b.
	if err := f.rds.SetAllowedHost(ctx, fenced, "nqn.2014-08.org.nvmexpress:uuid:mallory"); err != nil {
		t.Fatal(err)
	}
	if err := f.rds.SetAllowedHost(ctx, unheld, "nqn.2014-08.org.nvmexpress:uuid:mallory"); err != nil {
		t.Fatal(err)
	}
	forged := f.persisted(recorded)
	forged.Holders = []attachment.Holder{{Node: b, HostNQN: hostNQN(b), Since: time.Now().UTC().Truncate(time.Second)}}
	ann, err := attachment.Annotations(forged)
	if err != nil {
		t.Fatal(err)
	}
	patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": ann}})
	if err := direct.Patch(ctx, &corev1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: forged.PV}}, client.RawPatch(types.MergePatchType, patch)); err != nil {
		t.Fatal(err)
	}
	pv := f.persisted(fenced).PV
	va := &storagev1.VolumeAttachment{ObjectMeta: metav1.ObjectMeta{Name: f.ns + "-stray"},
		Spec: storagev1.VolumeAttachmentSpec{Attacher: csi.DefaultDriverName, NodeName: b, Source: storagev1.VolumeAttachmentSource{PersistentVolumeName: &pv}}}
	if err := direct.Create(ctx, va); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = direct.Delete(context.Background(), va) })
	va.Status.Attached = true
	if err := direct.Status().Update(ctx, va); err != nil {
		t.Fatal(err)
	}

	ds, err := f.mgr.CheckDrift(ctx, dc)
	if err != nil {
		t.Fatal(err)
	}
	ds = mine(ds, ids...)
	got := kinds(ds)
	for _, want := range []string{attachment.DriftFence + " " + fenced, attachment.DriftFence + " " + unheld,
		attachment.DriftRecordMismatch + " " + recorded, attachment.DriftConflictingHolder + " " + fenced} {
		if _, ok := got[want]; !ok {
			t.Errorf("drift %q not reported; got %v", want, got)
		}
	}
	if len(ds) != 4 {
		t.Errorf("drifts %v, want exactly 4", got)
	}
	// Repaired toward the controller's records.
	if h := f.allowed(fenced); h != hostNQN(a) {
		t.Errorf("fence of %s = %q, want the holder's", fenced, h)
	}
	if h := f.allowed(unheld); h != csi.NobodyNQN {
		t.Errorf("fence of unheld %s = %q, want nobody", unheld, h)
	}
	if rec := f.persisted(recorded); len(rec.Holders) != 1 || rec.Holders[0].Node != a {
		t.Errorf("PV record of %s = %v, want node %s", recorded, rec.Nodes(), a)
	}
	if h := f.mgr.Holders(recorded); len(h) != 1 || h[0] != a {
		t.Errorf("memory of %s = %v", recorded, h)
	}
	f.eventContaining("PersistentVolumeClaim", "recorded", "AttachmentDrift", attachment.DriftRecordMismatch)
	// Repaired: a second check finds only the stray VolumeAttachment again.
	if ds, err := f.mgr.CheckDrift(ctx, dc); err != nil || len(mine(ds, ids...)) != 1 || mine(ds, ids...)[0].Kind != attachment.DriftConflictingHolder {
		t.Fatalf("after repair: drifts %v, err %v", ds, err)
	}
	// The publish path still works on the repaired record.
	if _, err := f.publish(recorded, b, false); err == nil {
		t.Fatal("publish to b of a volume held by a succeeded after the repair")
	}
}

// TestRecordWithoutAttachmentReportedOnce: a holder with no attached
// VolumeAttachment is reported once after the bound and kept.
func TestRecordWithoutAttachmentReportedOnce(t *testing.T) {
	f := newFixture(t)
	a := f.node("a")
	id := f.volume("data", false)
	f.mustPublish(id, a, false)
	dc := &attachment.DriftChecker{NoAttachmentAfter: 100 * time.Millisecond}
	for i, want := range []int{0, 1, 0} {
		ds, err := f.mgr.CheckDrift(t.Context(), dc)
		if err != nil {
			t.Fatal(err)
		}
		ds = mine(ds, id)
		if len(ds) != want || (want == 1 && ds[0].Kind != attachment.DriftRecordNoAttached) {
			t.Fatalf("check %d: drifts %v, want %d record-without-attachment", i, ds, want)
		}
		time.Sleep(150 * time.Millisecond)
	}
	if h := f.mgr.Holders(id); len(h) != 1 || h[0] != a {
		t.Fatalf("holders %v: a holder without an attachment must be kept", h)
	}
}

// TestDriftCheckAfterRDSReconnect: when the RDS connection comes back after
// being lost, a full drift check runs and repairs a fence changed meanwhile.
func TestDriftCheckAfterRDSReconnect(t *testing.T) {
	f := newFixture(t)
	a := f.node("a")
	id := f.volume("data", false)
	f.mustPublish(id, a, false)
	trigger := make(chan struct{}, 1)
	c := f.sim.Client(t, func(cfg *rds.Config) {
		cfg.OnReconnect = func() {
			select {
			case trigger <- struct{}{}:
			default:
			}
		}
	})
	f.mgr.Fence = &csi.Fencer{Mode: csi.FenceHostNQN, Storage: c, Prefix: "pvc-"}
	if err := c.Ping(t.Context()); err != nil { // connected once
		t.Fatal(err)
	}
	runner := &reconciler.DriftRunner{Check: f.mgr.CheckDrift, Checker: &attachment.DriftChecker{NoAttachmentAfter: time.Hour},
		Interval: time.Hour, Reconnected: trigger, Log: logr.Discard()}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); runner.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	// The outage: connections dropped, and the RDS changed meanwhile.
	f.sim.Server.DropConnections()
	f.sim.Sim.Exec(fmt.Sprintf(`/disk set [find slot="%s"] nvme-tcp-server-allow-host-name="nqn.2014-08.org.nvmexpress:uuid:mallory"`, id))
	if got := f.allowed(id); got == hostNQN(a) {
		t.Fatal("the simulated change did not happen")
	}
	// The next command reconnects; the drift check follows.
	waitFor(f, func(ctx context.Context) bool { return c.Ping(ctx) == nil })
	waitFor(f, func(context.Context) bool { return f.allowed(id) == hostNQN(a) })
}
