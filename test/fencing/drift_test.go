package fencing

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"google.golang.org/grpc/codes"
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

// setPVRecord writes rec's annotations on its PV behind the controller's back.
func setPVRecord(t *testing.T, rec attachment.Record) {
	t.Helper()
	ann, err := attachment.Annotations(rec)
	if err != nil {
		t.Fatal(err)
	}
	patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": ann}})
	if err := direct.Patch(t.Context(), &corev1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: rec.PV}}, client.RawPatch(types.MergePatchType, patch)); err != nil {
		t.Fatal(err)
	}
}

// TestDriftRepairedWhileServing: the fence, the PV record and stray
// VolumeAttachments are compared with the controller's records; fences
// and PV records missing holders are repaired from them, a PV naming
// holders the controller never granted quarantines the volume, the rest
// is reported once.
func TestDriftRepairedWhileServing(t *testing.T) {
	f := newFixture(t)
	a, b := f.node("a"), f.node("b")
	fenced := f.volume("fenced", false)
	released := f.volume("released", false)
	unheld := f.volume("unheld", false)
	erased := f.volume("erased", false)
	forged := f.volume("forged", false)
	for _, id := range []string{fenced, released, erased, forged} {
		f.mustPublish(id, a, false)
	}
	if err := f.unpublish(released, a); err != nil {
		t.Fatal(err)
	}
	ids := []string{fenced, released, unheld, erased, forged}
	ctx := t.Context()
	dc := &attachment.DriftChecker{NoAttachmentAfter: time.Hour}
	if ds, err := f.mgr.CheckDrift(ctx, dc); err != nil || len(mine(ds, ids...)) != 0 {
		t.Fatalf("clean state: drifts %v, err %v", ds, err)
	}

	// Behind the controller's back: the RDS admits mallory on a held, a
	// released and a never-published volume; one PV lost its record,
	// another names node b instead of a; a VolumeAttachment says attached
	// to b.
	mallory := "nqn.2014-08.org.nvmexpress:uuid:mallory"
	for _, id := range []string{fenced, released, unheld} {
		if err := f.rds.SetAllowedHost(ctx, id, mallory); err != nil {
			t.Fatal(err)
		}
	}
	setPVRecord(t, attachment.Record{PV: f.persisted(erased).PV})
	withB := f.persisted(forged)
	withB.Holders = []attachment.Holder{{Node: b, HostNQN: hostNQN(b), Since: time.Now().UTC().Truncate(time.Second)}}
	setPVRecord(t, withB)
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
	for _, want := range []string{attachment.DriftFence + " " + fenced, attachment.DriftFence + " " + released, attachment.DriftFence + " " + unheld,
		attachment.DriftRecordMismatch + " " + erased, attachment.DriftRecordMismatch + " " + forged, attachment.DriftConflictingHolder + " " + fenced} {
		if _, ok := got[want]; !ok {
			t.Errorf("drift %q not reported; got %v", want, got)
		}
	}
	if len(ds) != 6 {
		t.Errorf("drifts %v, want exactly 6", got)
	}
	if d := got[attachment.DriftRecordMismatch+" "+forged]; !strings.Contains(d, "quarantined") || !strings.Contains(d, "did not grant") {
		t.Errorf("forged record: %q", d)
	}
	// Repaired toward the controller's records.
	for id, want := range map[string]string{fenced: hostNQN(a), released: csi.NobodyNQN, unheld: csi.NobodyNQN, forged: hostNQN(a)} {
		if h := f.allowed(id); h != want {
			t.Errorf("fence of %s = %q, want %q", id, h, want)
		}
	}
	if rec := f.persisted(erased); len(rec.Holders) != 1 || rec.Holders[0].Node != a {
		t.Errorf("PV record of %s = %v, want node %s", erased, rec.Nodes(), a)
	}
	// The forged record is not erased: the volume is quarantined instead.
	if rec := f.persisted(forged); len(rec.Holders) != 1 || rec.Holders[0].Node != b {
		t.Errorf("PV record of %s = %v, want it left for an operator", forged, rec.Nodes())
	}
	_, err = f.publish(forged, b, false)
	wantCode(t, err, codes.FailedPrecondition, "quarantined")
	f.eventContaining("PersistentVolumeClaim", "erased", "AttachmentDrift", attachment.DriftRecordMismatch)
	// Repaired, and what is left was reported already: a second check is quiet.
	if ds, err := f.mgr.CheckDrift(ctx, dc); err != nil || len(mine(ds, ids...)) != 0 {
		t.Fatalf("after repair: drifts %v, err %v", mine(ds, ids...), err)
	}
}

// racingFence runs hook once, right after the drift check has read the
// fences (and before it locks any volume).
type racingFence struct {
	attachment.Fence
	hook func()
}

func (r *racingFence) State(ctx context.Context) (map[string]string, error) {
	s, err := r.Fence.State(ctx)
	if h := r.hook; h != nil {
		r.hook = nil
		h()
	}
	return s, err
}

// TestDriftSkipsVolumesChangedDuringTheCheck: an unpublish between the
// check's reads and its lock makes what it read stale; the volume is left
// for the next check, not "repaired" from stale observations.
func TestDriftSkipsVolumesChangedDuringTheCheck(t *testing.T) {
	f := newFixture(t)
	a := f.node("a")
	id := f.volume("data", false)
	f.mustPublish(id, a, false)
	f.mgr.Fence = &racingFence{Fence: f.mgr.Fence, hook: func() {
		if err := f.unpublish(id, a); err != nil {
			t.Error(err)
		}
	}}
	ds, err := f.mgr.CheckDrift(t.Context(), &attachment.DriftChecker{NoAttachmentAfter: time.Hour})
	if err != nil || len(mine(ds, id)) != 0 {
		t.Fatalf("drifts %v (err %v) for a volume that changed during the check", mine(ds, id), err)
	}
	if got := f.allowed(id); got != csi.NobodyNQN {
		t.Fatalf("fence %q after the unpublish", got)
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
