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
// repairs toward safety. Memory is the authority for what the fence
// admits (every grant reaches the PV before the fence and memory), so
//
//   - a fence that differs from the record is re-applied from it;
//   - a PV record that lacks holders memory has is widened to memory's;
//   - a PV record that names holders memory does not know, or cannot be
//     read, is not erased (another writer may be behind it): the volume is
//     quarantined — no node may take it, its holders keep access — and
//     reported, for an operator to resolve;
//   - a VolumeAttachment attached to a node the record does not name is
//     reported (the fence does not admit that node);
//   - a holder without an attached VolumeAttachment is reported once after
//     NoAttachmentAfter; it is released only when the node is confirmed
//     gone (the node-loss reconciler).
//
// The store's change counter is read first and each volume is compared
// under its lock; a volume whose record changed in between is skipped
// until the next check, so an operation in flight is never taken for
// drift. A mismatch seen in the (possibly cached) PV list is confirmed
// with a live read before anything is reported. Findings that stay
// unrepaired are reported once, until they go away. It returns the drifts
// found; the error joins the repairs that failed (a failing list fails it
// before any repair).
func (m *Manager) CheckDrift(ctx context.Context, dc *DriftChecker) ([]Drift, error) {
	seq := m.Store.Seq()
	held := m.Store.List()
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
	obs := observation{seq: seq, pvs: map[string]*corev1.PersistentVolume{}, attached: attached, fences: fences}
	ids := map[string]bool{}
	for _, pv := range pvs {
		if pv.Spec.CSI != nil {
			obs.pvs[pv.Spec.CSI.VolumeHandle] = pv
			ids[pv.Spec.CSI.VolumeHandle] = true
		}
	}
	for _, r := range held {
		ids[r.VolumeID] = true
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
	seen := map[string]bool{}
	for _, id := range sorted {
		if ctx.Err() != nil {
			return drifts, ctx.Err()
		}
		vctx, cancel := context.WithTimeout(ctx, driftVolumeTimeout)
		d, err := m.checkVolume(vctx, dc, id, obs, seen)
		cancel()
		drifts = append(drifts, d...)
		if err != nil {
			errs = append(errs, err)
		}
	}
	dc.forgetExcept(seen)
	for _, d := range drifts {
		m.Metrics.DriftSeen(d.Kind)
		m.Events.Drift(d)
		m.Log.Info("attachment drift", "kind", d.Kind, "volumeID", d.VolumeID, "pv", d.PV, "pvc", d.PVC, "detail", d.Detail)
	}
	return drifts, errors.Join(errs...)
}

// driftVolumeTimeout bounds the work on one volume (its lock is held).
const driftVolumeTimeout = 30 * time.Second

// observation is what a drift check listed before locking any volume.
type observation struct {
	seq      uint64
	pvs      map[string]*corev1.PersistentVolume
	attached map[string][]string
	fences   map[string]string
}

func (m *Manager) checkVolume(ctx context.Context, dc *DriftChecker, id string, obs observation, seen map[string]bool) ([]Drift, error) {
	unlock, err := m.Store.Lock(ctx, id)
	if err != nil {
		return nil, unavailable("%v", err)
	}
	defer unlock()
	if m.Store.ChangedSince(id, obs.seq) {
		return nil, nil // changed during the check: next time
	}
	rec, held, _ := m.Store.Get(ctx, id)
	if rec.Quarantined != "" {
		return nil, nil // an operator's to resolve; reported when quarantined
	}
	var drifts []Drift
	// report records a finding once until it goes away (key "" always).
	report := func(key, kind, format string, args ...any) {
		if key != "" {
			seen[key] = true
			if !dc.report(key) {
				return
			}
		}
		drifts = append(drifts, Drift{Kind: kind, VolumeID: id, PV: rec.PV, PVC: rec.PVC, Detail: fmt.Sprintf(format, args...)})
	}
	var errs []error
	if pv, ok := obs.pvs[id]; ok {
		if rec.PV == "" {
			rec.PV, rec.PVC = pv.Name, claimOf(pv)
		}
		if err := m.checkPVRecord(ctx, &rec, held, pv, report); err != nil {
			errs = append(errs, err)
		}
		nodes := obs.attached[pv.Name]
		for _, n := range nodes {
			if !rec.HeldBy(n) {
				report(id+"/attached/"+n, DriftConflictingHolder, "VolumeAttachment says attached to node %s, the record says [%s]; the RDS admits only the record's holders",
					n, strings.Join(rec.Nodes(), ","))
			}
		}
		for _, h := range rec.Holders {
			if slices.Contains(nodes, h.Node) {
				continue
			}
			key := id + "/missing/" + h.Node
			seen[key] = true
			if dc.missingFor(key, m.now()) >= dc.NoAttachmentAfter && dc.report(key) {
				report("", DriftRecordNoAttached, "node %s holds it but no VolumeAttachment has been attached there for %s; kept until the node is confirmed gone (delete the Node or taint it node.kubernetes.io/out-of-service)",
					h.Node, dc.NoAttachmentAfter)
			}
		}
	}
	if obs.fences != nil {
		got, ok := obs.fences[id]
		want := m.Fence.Value(rec.HostNQNs())
		if ok && got != want {
			if err := m.Fence.Allow(ctx, id, rec.HostNQNs()); err != nil {
				errs = append(errs, fmt.Errorf("repairing the fence of volume %s: %w", id, err))
				report(id+"/fence", DriftFence, "the RDS admits %q, the record needs %q; re-applying it failed: %v", got, want, err)
			} else {
				report("", DriftFence, "the RDS admits %q, the record needs %q; re-applied", got, want)
			}
		}
	}
	return drifts, errors.Join(errs...)
}

// checkPVRecord compares the PV's record with memory's (rec), confirming a
// mismatch with a live read, and repairs or quarantines (see CheckDrift).
func (m *Manager) checkPVRecord(ctx context.Context, rec *Record, held bool, pv *corev1.PersistentVolume,
	report func(key, kind, format string, args ...any)) error {
	pvRec, _, derr := Decode(pv)
	if derr == nil && slices.Equal(pvRec.Nodes(), rec.Nodes()) {
		return nil
	}
	live, err := m.Cluster.LivePV(ctx, pv.Name) // the list may be behind
	if errors.Is(err, ErrNoVolume) {
		return nil
	}
	if err != nil {
		return unavailable("reading PV %s: %v", pv.Name, err)
	}
	pvRec, _, derr = Decode(live)
	if derr == nil && slices.Equal(pvRec.Nodes(), rec.Nodes()) {
		return nil
	}
	var unknown []string
	for _, n := range pvRec.Nodes() {
		if !rec.HeldBy(n) {
			unknown = append(unknown, n)
		}
	}
	if derr != nil || len(unknown) > 0 {
		why := fmt.Sprintf("PV %s records holders [%s] this controller did not grant", pv.Name, strings.Join(unknown, ","))
		kind := DriftRecordMismatch
		if derr != nil {
			why, kind = fmt.Sprintf("the record on PV %s cannot be read (%v)", pv.Name, derr), DriftUnreadable
		}
		rec.Quarantined = why
		m.Store.Put(*rec)
		report("", kind, "%s; the volume is quarantined: no node may take it (its holders [%s] keep access) until the annotation is corrected and the controller restarted",
			why, strings.Join(rec.Nodes(), ","))
		return nil
	}
	// The PV lacks holders memory has (and the fence admits): widen it.
	rv, err := m.Cluster.PersistPV(ctx, pvRec, *rec)
	if err != nil {
		report(rec.VolumeID+"/pv", DriftRecordMismatch, "PV %s records holders [%s], the controller [%s]; rewriting it failed: %v",
			pv.Name, strings.Join(pvRec.Nodes(), ","), strings.Join(rec.Nodes(), ","), err)
		return fmt.Errorf("rewriting the record on PV %s: %w", pv.Name, err)
	}
	report("", DriftRecordMismatch, "PV %s records holders [%s], the controller [%s]; the PV is rewritten from the controller's record, which the RDS fence follows",
		pv.Name, strings.Join(pvRec.Nodes(), ","), strings.Join(rec.Nodes(), ","))
	if held {
		rec.ResourceVersion = rv
		m.Store.Put(*rec)
	}
	return nil
}

// missingFor returns how long key has been missing its attachment.
func (dc *DriftChecker) missingFor(key string, now time.Time) time.Duration {
	dc.mu.Lock()
	defer dc.mu.Unlock()
	dc.initLocked()
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
	dc.initLocked()
	if dc.reported[key] {
		return false
	}
	dc.reported[key] = true
	return true
}

// initLocked makes the zero DriftChecker usable (whichever kind of drift
// is reported first).
func (dc *DriftChecker) initLocked() {
	if dc.missingSince == nil {
		dc.missingSince = map[string]time.Time{}
	}
	if dc.reported == nil {
		dc.reported = map[string]bool{}
	}
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
