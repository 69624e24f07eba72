package attachment

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// DriftRecordMismatch: while serving, the PV's record names other holders
// than the controller's (memory, which the fence follows): the PV is
// rewritten from memory.
const DriftRecordMismatch = "record-mismatch"

// DriftChecker keeps what a periodic drift check remembers between runs.
type DriftChecker struct {
	// NoAttachmentAfter: how long a holder may lack an attached
	// VolumeAttachment before it is reported (once).
	NoAttachmentAfter time.Duration

	mu sync.Mutex
	// missingSince: volumeID/node -> first check that found no attachment.
	missingSince map[string]time.Time
	reported     map[string]bool
}

// CheckDrift compares, while serving, every volume's record in memory
// with its PV annotation, its VolumeAttachments and the RDS fence, and
// repairs toward safety: memory is the authority (the fence follows it,
// and every change reaches the PV first), so
//
//   - a fence that differs from the record is re-applied from it;
//   - a PV whose record differs (or cannot be read) is rewritten from it;
//   - an open fence on a disk nobody holds is closed;
//   - a VolumeAttachment attached to a node the record does not name is
//     reported (the fence does not admit that node);
//   - a holder without an attached VolumeAttachment is reported once after
//     NoAttachmentAfter; it is released only when the node is confirmed
//     gone (the node-loss reconciler).
//
// Memory is snapshotted first and each volume is compared under its lock;
// a volume that changed in between is skipped until the next check, so an
// operation in flight is never mistaken for drift. It returns the drifts
// found; the error joins the repairs that failed (reads failing fail it
// before any repair).
func (m *Manager) CheckDrift(ctx context.Context, dc *DriftChecker) ([]Drift, error) {
	before := map[string]Record{}
	for _, r := range m.Store.List() {
		before[r.VolumeID] = r
	}
	pvs, err := m.Cluster.ListPVs(ctx)
	if err != nil {
		return nil, unavailable("listing PersistentVolumes: %v", err)
	}
	attached, err := m.Cluster.AttachedNodes(ctx)
	if err != nil {
		return nil, unavailable("listing VolumeAttachments: %v", err)
	}
	fences, err := m.Fence.State(ctx)
	if err != nil {
		return nil, unavailable("reading the storage fences: %v", err)
	}
	byID := map[string]int{}
	ids := map[string]bool{}
	for i, pv := range pvs {
		if pv.Spec.CSI != nil {
			byID[pv.Spec.CSI.VolumeHandle] = i
			ids[pv.Spec.CSI.VolumeHandle] = true
		}
	}
	for id := range before {
		ids[id] = true
	}
	for id := range fences {
		ids[id] = true
	}
	sorted := make([]string, 0, len(ids))
	for id := range ids {
		sorted = append(sorted, id)
	}
	sort.Strings(sorted)
	var drifts []Drift
	var errs []error
	seenMissing := map[string]bool{}
	for _, id := range sorted {
		d, err := m.checkVolume(ctx, dc, id, before, pvs, byID, attached, fences, seenMissing)
		drifts = append(drifts, d...)
		if err != nil {
			errs = append(errs, err)
		}
	}
	dc.forgetExcept(seenMissing)
	for _, d := range drifts {
		m.Metrics.DriftSeen(d.Kind)
		m.Events.Drift(d)
		m.Log.Info("attachment drift", "kind", d.Kind, "volumeID", d.VolumeID, "pv", d.PV, "pvc", d.PVC, "detail", d.Detail)
	}
	return drifts, errors.Join(errs...)
}

func sameRecord(a Record, aok bool, b Record, bok bool) bool {
	return aok == bok && a.ResourceVersion == b.ResourceVersion && slices.Equal(a.Nodes(), b.Nodes()) && a.Quarantined == b.Quarantined
}

func (m *Manager) checkVolume(ctx context.Context, dc *DriftChecker, id string, before map[string]Record,
	pvs []*corev1.PersistentVolume, byID map[string]int, attached map[string][]string, fences map[string]string, seenMissing map[string]bool) ([]Drift, error) {
	unlock, err := m.Store.Lock(ctx, id)
	if err != nil {
		return nil, unavailable("%v", err)
	}
	defer unlock()
	rec, held, _ := m.Store.Get(ctx, id)
	prev, wasHeld := before[id]
	if !sameRecord(rec, held, prev, wasHeld) {
		return nil, nil // changed during the check: next time
	}
	if rec.Quarantined != "" {
		return nil, nil // an operator's to resolve; reported at rebuild
	}
	var drifts []Drift
	drift := func(kind, format string, args ...any) {
		drifts = append(drifts, Drift{Kind: kind, VolumeID: id, PV: rec.PV, PVC: rec.PVC, Detail: fmt.Sprintf(format, args...)})
	}
	var errs []error
	if i, ok := byID[id]; ok {
		pv := pvs[i]
		if rec.PV == "" {
			rec.PV, rec.PVC = pv.Name, claimOf(pv)
		}
		pvRec, _, derr := Decode(pv)
		switch {
		case derr != nil:
			drift(DriftUnreadable, "the PV's record cannot be read (%v); rewritten from the controller's", derr)
		case !slices.Equal(pvRec.Nodes(), rec.Nodes()):
			drift(DriftRecordMismatch, "the PV records holders [%s], the controller [%s]; the PV is rewritten from the controller's record, which the RDS fence follows",
				strings.Join(pvRec.Nodes(), ","), strings.Join(rec.Nodes(), ","))
		}
		if derr != nil || !slices.Equal(pvRec.Nodes(), rec.Nodes()) {
			pvRec.PV, pvRec.ResourceVersion = pv.Name, pv.ResourceVersion
			if rv, err := m.Cluster.PersistPV(ctx, pvRec, rec); err != nil {
				errs = append(errs, fmt.Errorf("rewriting the record on PV %s: %w", pv.Name, err))
			} else if held {
				rec.ResourceVersion = rv
				m.Store.Put(rec)
			}
		}
		nodes := attached[pv.Name]
		for _, n := range nodes {
			if !rec.HeldBy(n) {
				drift(DriftConflictingHolder, "VolumeAttachment says attached to node %s, the record says [%s]; the RDS admits only the record's holders",
					n, strings.Join(rec.Nodes(), ","))
			}
		}
		for _, h := range rec.Holders {
			if slices.Contains(nodes, h.Node) {
				continue
			}
			key := id + "/" + h.Node
			seenMissing[key] = true
			if dc.missingFor(key, m.now()) >= dc.NoAttachmentAfter && dc.report(key) {
				drift(DriftRecordNoAttached, "node %s holds it but no VolumeAttachment has been attached there for %s; kept until the node is confirmed gone (delete the Node or taint it node.kubernetes.io/out-of-service)",
					h.Node, dc.NoAttachmentAfter)
			}
		}
	}
	if fences != nil {
		got, ok := fences[id]
		want := m.Fence.Value(rec.HostNQNs())
		if ok && got != want {
			drift(DriftFence, "the RDS admits %q, the record needs %q; re-applied", got, want)
			if err := m.Fence.Allow(ctx, id, rec.HostNQNs()); err != nil {
				errs = append(errs, fmt.Errorf("repairing the fence of volume %s: %w", id, err))
			}
		}
	}
	return drifts, errors.Join(errs...)
}

// missingFor returns how long key has been missing its attachment.
func (dc *DriftChecker) missingFor(key string, now time.Time) time.Duration {
	dc.mu.Lock()
	defer dc.mu.Unlock()
	if dc.missingSince == nil {
		dc.missingSince, dc.reported = map[string]time.Time{}, map[string]bool{}
	}
	since, ok := dc.missingSince[key]
	if !ok {
		dc.missingSince[key] = now
		return 0
	}
	return now.Sub(since)
}

// report is true the first time key is reported.
func (dc *DriftChecker) report(key string) bool {
	dc.mu.Lock()
	defer dc.mu.Unlock()
	if dc.reported[key] {
		return false
	}
	dc.reported[key] = true
	return true
}

// forgetExcept drops the keys whose attachment is no longer missing.
func (dc *DriftChecker) forgetExcept(keep map[string]bool) {
	dc.mu.Lock()
	defer dc.mu.Unlock()
	for k := range dc.missingSince {
		if !keep[k] {
			delete(dc.missingSince, k)
			delete(dc.reported, k)
		}
	}
}
