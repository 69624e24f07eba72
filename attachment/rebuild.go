package attachment

import (
	"fmt"
	"slices"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// Drift kinds, reported as events (reason AttachmentDrift), metrics
// (rds_fence_attachment_drift_total{kind}) and logs.
const (
	DriftUnreadable        = "unreadable-annotation"     // the PV's record cannot be decoded: the volume is quarantined
	DriftAttachedNoRecord  = "attached-without-record"   // a VolumeAttachment is attached, the PV records no such holder: adopted when the rules allow
	DriftRecordNoAttached  = "record-without-attachment" // the PV records a holder with no attached VolumeAttachment: kept (the reconciler decides)
	DriftConflictingHolder = "conflicting-holders"       // attachments and record name different nodes for a single-node volume: the record wins, the fence follows it
	DriftFence             = "fence-mismatch"            // the RDS fence differs from the record: re-applied
	DriftDiskMissing       = "disk-missing"              // a PV of this driver has no disk on the RDS
)

// Observed is what a rebuild reads at start-up.
type Observed struct {
	// PVs of this driver.
	PVs []*corev1.PersistentVolume
	// Attached maps a PV name to the nodes whose VolumeAttachment for it
	// reports status.attached.
	Attached map[string][]string
	// Fences maps a volume ID to its allowed host on the RDS. Nil means the
	// fence is off and is not compared.
	Fences map[string]string
	// HostNQNs maps a node name to its host NQN.
	HostNQNs map[string]string
}

// Drift is one disagreement found by a rebuild.
type Drift struct {
	Kind, VolumeID, PV, PVC, Detail string
}

func (d Drift) String() string {
	return fmt.Sprintf("%s: volume %s (PV %s, PVC %s): %s", d.Kind, d.VolumeID, d.PV, d.PVC, d.Detail)
}

// Rebuilt is the outcome of Reconcile.
type Rebuilt struct {
	// Records are the held (or quarantined) volumes to load into the store.
	Records []Record
	// Persist are records whose PV annotation must be rewritten (adopted
	// holders).
	Persist []Record
	// FenceFixes maps a volume ID to the host NQNs its fence must allow.
	FenceFixes map[string][]string
	Drifts     []Drift
}

// Reconcile rebuilds the records from PV annotations, cross-checked with
// VolumeAttachments and the RDS fence. Every disagreement is reported and
// resolved toward safety: a single-node volume never gets two holders, an
// unreadable record quarantines its volume, and the fence is made to match
// the record. fenceValue says what the RDS property should read for a set
// of host NQNs.
func Reconcile(obs Observed, fenceValue func(hostNQNs []string) string) Rebuilt {
	out := Rebuilt{FenceFixes: map[string][]string{}}
	seen := map[string]bool{}
	pvs := slices.Clone(obs.PVs)
	sort.Slice(pvs, func(i, j int) bool { return pvs[i].Name < pvs[j].Name })
	for _, pv := range pvs {
		rec, _, err := Decode(pv)
		seen[rec.VolumeID] = true
		drift := func(kind, format string, args ...any) {
			out.Drifts = append(out.Drifts, Drift{Kind: kind, VolumeID: rec.VolumeID, PV: rec.PV, PVC: rec.PVC, Detail: fmt.Sprintf(format, args...)})
		}
		if err != nil {
			rec.Quarantined = fmt.Sprintf("its attachment record cannot be read (%v)", err)
			drift(DriftUnreadable, "%v; the volume is refused to every node until the annotation is fixed or removed", err)
			out.Records = append(out.Records, rec)
			continue
		}
		attached := slices.Clone(obs.Attached[pv.Name])
		sort.Strings(attached)
		adopted := false
		if !rec.Held() && len(attached) > 0 {
			// No record: adopt one attachment only when it is unambiguous.
			pick := ""
			if len(attached) == 1 {
				pick = attached[0]
			} else if fence, ok := obs.Fences[rec.VolumeID]; ok {
				for _, n := range attached {
					if nqn := obs.HostNQNs[n]; nqn != "" && nqn == fence {
						pick = n // the node the RDS admits
					}
				}
			}
			switch {
			case pick == "":
				rec.Quarantined = fmt.Sprintf("VolumeAttachments say attached to nodes %s and the PV records none", strings.Join(attached, ","))
				drift(DriftConflictingHolder, "%s; the volume is refused to every node until an operator resolves it", rec.Quarantined)
				out.Records = append(out.Records, rec)
				continue
			case obs.Fences != nil && obs.HostNQNs[pick] == "":
				rec.Quarantined = fmt.Sprintf("VolumeAttachment says attached to node %s, which has no host NQN annotation", pick)
				drift(DriftAttachedNoRecord, "%s; the volume is refused to every node until the node reports its host NQN", rec.Quarantined)
				out.Records = append(out.Records, rec)
				continue
			}
			rec.Mode = modeOfPV(pv)
			rec.Holders = []Holder{{Node: pick, HostNQN: obs.HostNQNs[pick], Since: pv.CreationTimestamp.Time}}
			adopted = true
			drift(DriftAttachedNoRecord, "VolumeAttachment says attached to node %s, which the PV did not record; adopted as holder", pick)
		}
		for _, n := range attached {
			if !rec.HeldBy(n) {
				drift(DriftConflictingHolder, "VolumeAttachment says attached to node %s, the record says %s; keeping the record, the RDS admits only its holder",
					n, strings.Join(rec.Nodes(), ","))
			}
		}
		for _, h := range rec.Holders {
			if !slices.Contains(attached, h.Node) {
				drift(DriftRecordNoAttached, "the record says node %s holds it but no VolumeAttachment is attached there; kept until the node is confirmed gone", h.Node)
			}
		}
		if adopted {
			out.Persist = append(out.Persist, rec.Clone())
		}
		if rec.Held() {
			out.Records = append(out.Records, rec)
		}
		if obs.Fences != nil {
			want := fenceValue(rec.HostNQNs())
			got, ok := obs.Fences[rec.VolumeID]
			switch {
			case !ok:
				drift(DriftDiskMissing, "no disk %s on the RDS", rec.VolumeID)
			case got != want:
				drift(DriftFence, "the RDS admits %q, the record needs %q; re-applied", got, want)
				out.FenceFixes[rec.VolumeID] = rec.HostNQNs()
			}
		}
	}
	// Disks without a PV (or whose PV records nobody) must not be open.
	ids := make([]string, 0, len(obs.Fences))
	for id := range obs.Fences {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		if !seen[id] && obs.Fences[id] != fenceValue(nil) {
			out.Drifts = append(out.Drifts, Drift{Kind: DriftFence, VolumeID: id,
				Detail: fmt.Sprintf("a disk without a PersistentVolume admits %q; closed", obs.Fences[id])})
			out.FenceFixes[id] = nil
		}
	}
	return out
}

func modeOfPV(pv *corev1.PersistentVolume) Mode {
	block := pv.Spec.VolumeMode != nil && *pv.Spec.VolumeMode == corev1.PersistentVolumeBlock
	if block && slices.Contains(pv.Spec.AccessModes, corev1.ReadWriteMany) {
		return ModeMultiNodeBlock
	}
	return ModeSingleNode
}
