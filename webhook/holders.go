package webhook

import (
	"fmt"
	"slices"
	"sort"

	corev1 "k8s.io/api/core/v1"

	"github.com/rds-fence/rds-fence/attachment"
)

// claimState is what one claim of the admitted object means for fencing.
type claimState struct {
	Namespace, Name string
	PV              string
	// Fenced: a volume of this driver whose access is single-node, or RWX
	// block (migration-capable, MultiBlock set).
	Fenced     bool
	MultiBlock bool
	// Holders are the live nodes holding it (record ∪ attached attachments).
	Holders []string
	// Unknown, when set, says why the holders cannot be known (refuse).
	Unknown string
}

func (c claimState) key() string { return c.Namespace + "/" + c.Name }

// resolveClaim reads one claim's PV and its holders from the snapshot.
// Claims of other drivers, unbound claims and RWX filesystem volumes are
// not fenced here.
func resolveClaim(s Snapshot, driver, namespace, name string) claimState {
	cs := claimState{Namespace: namespace, Name: name}
	pvc, ok := s.Claim(namespace, name)
	if !ok || pvc.Spec.VolumeName == "" {
		return cs // not bound yet: nothing holds it
	}
	pv, ok := s.Volume(pvc.Spec.VolumeName)
	if !ok {
		cs.Unknown = fmt.Sprintf("PVC %s/%s is bound to PV %s, which is not in the cache", namespace, name, pvc.Spec.VolumeName)
		return cs
	}
	if pv.Spec.CSI == nil || pv.Spec.CSI.Driver != driver {
		return cs
	}
	cs.PV = pv.Name
	block := pv.Spec.VolumeMode != nil && *pv.Spec.VolumeMode == corev1.PersistentVolumeBlock
	rwx := slices.Contains(pv.Spec.AccessModes, corev1.ReadWriteMany)
	switch {
	case rwx && block:
		cs.Fenced, cs.MultiBlock = true, true
	case rwx:
		return cs // RWX filesystem is refused by the driver at creation
	default:
		cs.Fenced = true
	}
	rec, _, err := attachment.Decode(pv)
	if err != nil {
		cs.Unknown = fmt.Sprintf("the attachment record of PV %s cannot be read (%v)", pv.Name, err)
		return cs
	}
	nodes := append(rec.Nodes(), s.Attached(pv.Name)...)
	sort.Strings(nodes)
	for _, n := range slices.Compact(nodes) {
		if liveNode(s, n) {
			cs.Holders = append(cs.Holders, n)
		}
	}
	return cs
}

// liveNode: the node exists and is not tainted out-of-service (the same
// rule the controller uses to release a holder; NotReady stays live).
func liveNode(s Snapshot, name string) bool {
	n, ok := s.Node(name)
	if !ok {
		return false
	}
	for _, t := range n.Spec.Taints {
		if t.Key == "node.kubernetes.io/out-of-service" {
			return false
		}
	}
	return true
}

// podClaims lists the claims a pod mounts (ephemeral volumes included by
// their generated claim name).
func podClaims(pod *corev1.Pod) []string {
	var out []string
	for _, v := range pod.Spec.Volumes {
		switch {
		case v.PersistentVolumeClaim != nil:
			out = append(out, v.PersistentVolumeClaim.ClaimName)
		case v.Ephemeral != nil:
			out = append(out, pod.Name+"-"+v.Name)
		}
	}
	return out
}
