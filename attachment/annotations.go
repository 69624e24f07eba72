package attachment

import (
	"encoding/json"
	"errors"
	"fmt"

	corev1 "k8s.io/api/core/v1"
)

// The PV annotations that persist a Record. The format is versioned so a
// newer controller can read an older one and an older controller refuses
// (fails closed on) a format it does not know.
//
//	rds-fence.csi.dev/attachment: {"v":1,"volumeID":"pvc-…","mode":"SingleNode",
//	    "holders":[{"node":"node-a","hostNQN":"nqn.…","since":"2026-11-25T18:00:00Z"}],
//	    "migration":{…}}            (absent when nobody holds the volume)
//	rds-fence.csi.dev/attached-nodes: node-a[,node-b]   (for humans and kubectl; derived)
//
// The JSON annotation is the truth; attached-nodes is written from it for
// `kubectl get pv -o custom-columns` and is never read back.
const (
	AnnotationAttachment    = "rds-fence.csi.dev/attachment"
	AnnotationAttachedNodes = "rds-fence.csi.dev/attached-nodes"
	// FormatVersion is the version this package writes.
	FormatVersion = 1
)

// ErrUnknownFormat marks an annotation this version cannot read. Callers
// must treat the volume as held by an unknown party.
var ErrUnknownFormat = errors.New("attachment annotation in an unknown format")

type annotationV1 struct {
	Version   int        `json:"v"`
	VolumeID  string     `json:"volumeID"`
	Mode      Mode       `json:"mode"`
	Holders   []Holder   `json:"holders"`
	Migration *Migration `json:"migration,omitempty"`
}

// Annotations returns the annotation values for r: nil values mean the
// annotation must be removed (nobody holds the volume).
func Annotations(r Record) (map[string]*string, error) {
	if !r.Held() {
		return map[string]*string{AnnotationAttachment: nil, AnnotationAttachedNodes: nil}, nil
	}
	b, err := json.Marshal(annotationV1{Version: FormatVersion, VolumeID: r.VolumeID, Mode: r.Mode,
		Holders: r.Holders, Migration: r.Migration})
	if err != nil {
		return nil, err
	}
	att := string(b)
	nodes := ""
	for i, n := range r.Nodes() {
		if i > 0 {
			nodes += ","
		}
		nodes += n
	}
	return map[string]*string{AnnotationAttachment: &att, AnnotationAttachedNodes: &nodes}, nil
}

// Decode reads the Record persisted on pv. ok is false when the PV carries
// no attachment (nobody holds it). A malformed or unknown-version
// annotation is an error wrapping ErrUnknownFormat: fail closed.
func Decode(pv *corev1.PersistentVolume) (rec Record, ok bool, err error) {
	rec = Record{PV: pv.Name, PVC: claimOf(pv), ResourceVersion: pv.ResourceVersion}
	if pv.Spec.CSI != nil {
		rec.VolumeID = pv.Spec.CSI.VolumeHandle
	}
	raw, found := pv.Annotations[AnnotationAttachment]
	if !found {
		return rec, false, nil
	}
	var probe struct {
		Version int `json:"v"`
	}
	if err := json.Unmarshal([]byte(raw), &probe); err != nil {
		return rec, false, fmt.Errorf("PV %s: %w: %v", pv.Name, ErrUnknownFormat, err)
	}
	if probe.Version != 1 {
		return rec, false, fmt.Errorf("PV %s: %w: version %d (this controller reads version %d)", pv.Name, ErrUnknownFormat, probe.Version, FormatVersion)
	}
	var a annotationV1
	if err := json.Unmarshal([]byte(raw), &a); err != nil {
		return rec, false, fmt.Errorf("PV %s: %w: %v", pv.Name, ErrUnknownFormat, err)
	}
	if err := validateDecoded(a, rec.VolumeID); err != nil {
		return rec, false, fmt.Errorf("PV %s: %w: %v", pv.Name, ErrUnknownFormat, err)
	}
	rec.Mode, rec.Holders, rec.Migration = a.Mode, a.Holders, a.Migration
	return rec, len(rec.Holders) > 0, nil
}

func validateDecoded(a annotationV1, handle string) error {
	if a.VolumeID != handle {
		return fmt.Errorf("records volume %q but the PV's handle is %q", a.VolumeID, handle)
	}
	if a.Mode != ModeSingleNode && a.Mode != ModeMultiNodeBlock {
		return fmt.Errorf("unknown mode %q", a.Mode)
	}
	if len(a.Holders) > MaxHolders || (a.Mode == ModeSingleNode && len(a.Holders) > 1) {
		return fmt.Errorf("%d holders for mode %s", len(a.Holders), a.Mode)
	}
	seen := map[string]bool{}
	for _, h := range a.Holders {
		if h.Node == "" || seen[h.Node] {
			return fmt.Errorf("empty or repeated holder %q", h.Node)
		}
		seen[h.Node] = true
	}
	return nil
}

func claimOf(pv *corev1.PersistentVolume) string {
	if ref := pv.Spec.ClaimRef; ref != nil && ref.Name != "" {
		return ref.Namespace + "/" + ref.Name
	}
	return ""
}
