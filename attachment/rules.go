package attachment

import (
	"fmt"
	"strings"
	"time"
)

// NodeState is what the cluster says about a holding node.
type NodeState int

const (
	// NodeLive: the Node object exists and is not out of service. A NotReady
	// node is live: NotReady alone never releases a volume.
	NodeLive NodeState = iota
	// NodeDeleted: no Node object of that name exists.
	NodeDeleted
	// NodeOutOfService: the node carries the node.kubernetes.io/out-of-service
	// taint (non-graceful node shutdown confirmed by an operator).
	NodeOutOfService
)

func (s NodeState) String() string {
	switch s {
	case NodeDeleted:
		return "deleted"
	case NodeOutOfService:
		return "out of service"
	}
	return "live"
}

// stale reports whether a holder in this state can be released.
func (s NodeState) stale() bool { return s == NodeDeleted || s == NodeOutOfService }

// LiveMigration is a KubeVirt VirtualMachineInstanceMigration that has not
// finished, for a VMI that uses the volume's claim.
type LiveMigration struct {
	Namespace, Name string
	VMI             string
	// Source and Target nodes when KubeVirt has reported them ("" if not yet).
	Source, Target string
	Created        time.Time
}

// PublishRequest asks for node to hold a volume.
type PublishRequest struct {
	VolumeID string
	Node     string
	HostNQN  string
	Mode     Mode
	// MigrationTimeout bounds a two-node window (RWX block only).
	MigrationTimeout time.Duration
	Now              time.Time
}

// Facts are what the caller looked up for a decision.
type Facts struct {
	// Nodes holds the state of every current holder other than the requester.
	Nodes map[string]NodeState
	// Migration is the live migration for a VMI using this volume's claim,
	// nil if there is none (looked up only for RWX-block second holders).
	Migration *LiveMigration
}

// Decision is the outcome of DecidePublish or DecideUnpublish.
type Decision struct {
	Next Record
	// Noop: nothing changes (the node already holds the volume).
	Noop bool
	// Cleared are stale holders removed (node deleted or out of service).
	Cleared []ClearedHolder
	// MigrationStarted / MigrationEnded describe migration transitions.
	MigrationStarted *Migration
	MigrationEnded   *MigrationEnd
}

// ClearedHolder is a stale holder that a publish released.
type ClearedHolder struct {
	Holder
	State NodeState
}

// MigrationEnd says how a migration window closed.
type MigrationEnd struct {
	Migration Migration
	Succeeded bool // the source released the volume (the target kept it)
}

// ConflictError refuses a publish because another live node holds the
// volume. Its message names the volume, the claim, the holder and what
// releases it.
type ConflictError struct {
	VolumeID, PV, PVC string
	Requester         string
	Holders           []string
	Reason            string
	// Release, when set, replaces the default advice on what releases it.
	Release string
}

func (e *ConflictError) Error() string {
	claim := e.PVC
	if claim == "" {
		claim = "(no bound claim)"
	}
	if e.Release != "" {
		return fmt.Sprintf("volume %s (PV %s, PVC %s) cannot be attached to node %s: %s. %s",
			e.VolumeID, e.PV, claim, e.Requester, e.Reason, e.Release)
	}
	return fmt.Sprintf("volume %s (PV %s, PVC %s) is attached to node %s and cannot also be attached to node %s: %s. "+
		"It is released when the pod using it on %s is deleted, when node %s is deleted, or when it is tainted "+
		"node.kubernetes.io/out-of-service after a confirmed shutdown",
		e.VolumeID, e.PV, claim, strings.Join(e.Holders, ","), e.Requester, e.Reason,
		strings.Join(e.Holders, ","), strings.Join(e.Holders, ","))
}

// NeedsMigrationLookup reports whether DecidePublish needs Facts.Migration:
// an RWX-block volume held by exactly one other node.
func NeedsMigrationLookup(cur Record, req PublishRequest) bool {
	return req.Mode == ModeMultiNodeBlock && len(cur.Holders) >= 1 && !cur.HeldBy(req.Node)
}

// DecidePublish applies the fencing rules to a publish of cur's volume to
// req.Node. It is pure: every fact comes in through facts.
//
//   - Nobody holds it: req.Node takes it.
//   - req.Node holds it (same host NQN): Noop.
//   - Holders whose node is deleted or out of service are cleared first.
//   - SingleNode: any remaining (live) holder is a ConflictError. There is
//     no grace window.
//   - MultiNodeBlock: a second node only while a live migration of a VMI
//     using the claim exists, moves it from the holder to exactly this node
//     (an unknown target is refused until KubeVirt names it), and its
//     timeout has not passed; never a third.
func DecidePublish(cur Record, req PublishRequest, facts Facts) (Decision, error) {
	if cur.VolumeID == "" {
		cur.VolumeID = req.VolumeID
	}
	d := Decision{Next: cur.Clone()}
	if cur.Quarantined != "" {
		return d, &ConflictError{VolumeID: cur.VolumeID, PV: cur.PV, PVC: cur.PVC, Requester: req.Node,
			Reason:  "it is quarantined: " + cur.Quarantined,
			Release: "Check which node really uses the volume, then fix or remove the " + AnnotationAttachment + " annotation on the PV (and the stale VolumeAttachments) and restart the controller"}
	}
	if cur.Mode != "" && len(cur.Holders) > 0 && cur.Mode != req.Mode {
		return d, &ConflictError{VolumeID: cur.VolumeID, PV: cur.PV, PVC: cur.PVC, Requester: req.Node, Holders: cur.Nodes(),
			Reason: fmt.Sprintf("it is held in mode %s and this publish asks for %s", cur.Mode, req.Mode)}
	}
	for _, h := range cur.Holders {
		if h.Node == req.Node {
			if h.HostNQN == req.HostNQN {
				d.Noop = true
				return d, nil
			}
			// The node came back with a different host NQN (reinstalled):
			// take it again so the fence follows the new NQN.
			d.Next = d.Next.without(h.Node)
			continue
		}
		if st := facts.Nodes[h.Node]; st.stale() {
			d.Cleared = append(d.Cleared, ClearedHolder{Holder: h, State: st})
			d.Next = d.Next.without(h.Node)
		}
	}
	d.Next.Mode = req.Mode
	holder := Holder{Node: req.Node, HostNQN: req.HostNQN, Since: req.Now}
	others := d.Next.Nodes()
	switch {
	case len(others) == 0:
		d.Next.Holders = []Holder{holder}
		d.Next.Migration = nil
		return d, nil
	case req.Mode == ModeSingleNode:
		return d, &ConflictError{VolumeID: cur.VolumeID, PV: cur.PV, PVC: cur.PVC, Requester: req.Node, Holders: others,
			Reason: "a ReadWriteOnce volume is attached to one node at a time, and the holding node is still part of the cluster (NotReady does not release it)"}
	case len(others) >= MaxHolders:
		return d, &ConflictError{VolumeID: cur.VolumeID, PV: cur.PV, PVC: cur.PVC, Requester: req.Node, Holders: others,
			Reason: "a live-migration volume is attached to at most two nodes"}
	}
	m := facts.Migration
	if m == nil {
		return d, &ConflictError{VolumeID: cur.VolumeID, PV: cur.PV, PVC: cur.PVC, Requester: req.Node, Holders: others,
			Reason: "a ReadWriteMany block volume is attached to a second node only during a KubeVirt live migration, and no unfinished VirtualMachineInstanceMigration exists for a VMI using this claim"}
	}
	switch {
	case m.Target == "":
		return d, &ConflictError{VolumeID: cur.VolumeID, PV: cur.PV, PVC: cur.PVC, Requester: req.Node, Holders: others,
			Reason:  fmt.Sprintf("migration %s/%s has no known target node yet", m.Namespace, m.Name),
			Release: "The attach is retried; it succeeds once KubeVirt has scheduled the migration target on this node"}
	case m.Target != req.Node:
		return d, &ConflictError{VolumeID: cur.VolumeID, PV: cur.PV, PVC: cur.PVC, Requester: req.Node, Holders: others,
			Reason: fmt.Sprintf("migration %s/%s targets node %s, not %s", m.Namespace, m.Name, m.Target, req.Node)}
	case m.Source != "" && m.Source != others[0]:
		return d, &ConflictError{VolumeID: cur.VolumeID, PV: cur.PV, PVC: cur.PVC, Requester: req.Node, Holders: others,
			Reason: fmt.Sprintf("migration %s/%s moves the VMI from node %s, but the volume is held by %s", m.Namespace, m.Name, m.Source, others[0])}
	}
	deadline := m.Created.Add(req.MigrationTimeout)
	if req.MigrationTimeout > 0 && req.Now.After(deadline) {
		return d, &ConflictError{VolumeID: cur.VolumeID, PV: cur.PV, PVC: cur.PVC, Requester: req.Node, Holders: others,
			Reason: fmt.Sprintf("migration %s/%s started at %s and its %s window has passed", m.Namespace, m.Name, m.Created.UTC().Format(time.RFC3339), req.MigrationTimeout)}
	}
	d.Next.Holders = append(d.Next.Holders, holder)
	mig := &Migration{Namespace: m.Namespace, Name: m.Name, VMI: m.VMI, Source: others[0], Target: req.Node,
		Started: req.Now, Deadline: deadline}
	if req.MigrationTimeout <= 0 {
		mig.Deadline = time.Time{}
	}
	d.Next.Migration = mig
	d.MigrationStarted = mig
	return d, nil
}

// DecideUnpublish removes node from cur. Unpublishing a node that does not
// hold the volume is a Noop (success). When a migration window closes, the
// decision says whether it succeeded (source released) or failed (target
// released).
func DecideUnpublish(cur Record, node string) Decision {
	d := Decision{Next: cur.Clone()}
	if !cur.HeldBy(node) || cur.Quarantined != "" {
		d.Noop = true
		return d
	}
	d.Next = cur.without(node)
	if m := cur.Migration; m != nil {
		d.MigrationEnded = &MigrationEnd{Migration: *m, Succeeded: node == m.Source}
	}
	return d
}
