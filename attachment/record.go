package attachment

import (
	"slices"
	"time"
)

// Mode says how many nodes may hold a volume.
type Mode string

const (
	// ModeSingleNode: one node at a time (every SINGLE_NODE_* access mode,
	// i.e. ReadWriteOnce and ReadWriteOncePod).
	ModeSingleNode Mode = "SingleNode"
	// ModeMultiNodeBlock: a raw block volume that may be held by a second
	// node only while a KubeVirt live migration of its VMI is in progress.
	ModeMultiNodeBlock Mode = "MultiNodeBlock"
)

// MaxHolders is the most nodes that ever hold one volume (the migration
// source and target).
const MaxHolders = 2

// Holder is one node holding a volume.
type Holder struct {
	Node    string    `json:"node"`
	HostNQN string    `json:"hostNQN,omitempty"`
	Since   time.Time `json:"since"`
}

// Migration describes the KubeVirt live migration that allowed a second
// holder.
type Migration struct {
	// Namespace and Name of the VirtualMachineInstanceMigration.
	Namespace string    `json:"namespace"`
	Name      string    `json:"name"`
	VMI       string    `json:"vmi"`
	Source    string    `json:"source"`
	Target    string    `json:"target"`
	Started   time.Time `json:"started"`
	// Deadline after which the second holder is no longer tolerated.
	Deadline time.Time `json:"deadline"`
}

// Record is who holds one volume. The zero Holders slice means nobody.
type Record struct {
	VolumeID  string
	PV        string // PersistentVolume name
	PVC       string // "namespace/name" of the bound claim, "" if unknown
	Mode      Mode
	Holders   []Holder
	Migration *Migration
	// Quarantined, when set, says why no node may take the volume until an
	// operator acts: its persisted record could not be decoded, or the
	// rebuild found attachments it could not attribute safely. Never
	// persisted; the storage fence is left as it was found.
	Quarantined string
	// ResourceVersion is the PV's resourceVersion as of this controller's
	// last read or write of it ("" if unknown). Never persisted.
	ResourceVersion string
}

// Nodes returns the holding nodes in order.
func (r Record) Nodes() []string {
	out := make([]string, len(r.Holders))
	for i, h := range r.Holders {
		out[i] = h.Node
	}
	return out
}

// HeldBy reports whether node holds the volume.
func (r Record) HeldBy(node string) bool {
	return slices.ContainsFunc(r.Holders, func(h Holder) bool { return h.Node == node })
}

// Held reports whether anybody holds the volume (a quarantined volume
// counts as held by an unknown party).
func (r Record) Held() bool { return len(r.Holders) > 0 || r.Quarantined != "" }

// HostNQNs returns the host NQNs of the holders, in order.
func (r Record) HostNQNs() []string {
	out := make([]string, 0, len(r.Holders))
	for _, h := range r.Holders {
		out = append(out, h.HostNQN)
	}
	return out
}

// Clone returns a deep copy.
func (r Record) Clone() Record {
	r.Holders = slices.Clone(r.Holders)
	if r.Migration != nil {
		m := *r.Migration
		r.Migration = &m
	}
	return r
}

// without returns r with node removed from the holders; the migration
// record goes when fewer than two holders remain.
func (r Record) without(node string) Record {
	out := r.Clone()
	out.Holders = slices.DeleteFunc(out.Holders, func(h Holder) bool { return h.Node == node })
	if len(out.Holders) < 2 {
		out.Migration = nil
	}
	return out
}
