package webhook

import (
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/component-helpers/scheduling/corev1/nodeaffinity"
	kubevirtv1 "kubevirt.io/api/core/v1"
)

// Decision is the outcome of one admission decision.
type Decision struct {
	Allowed bool
	// Reason is a stable label (metrics, events): one of the Reason* values.
	Reason string
	// Message tells an operator what is wrong and what to do.
	Message  string
	Warnings []string
	// Claims are the "namespace/name" of the claims that caused a denial.
	Claims []string
}

// Decision reasons.
const (
	ReasonNoFencedClaims  = "no-fenced-claims"
	ReasonFree            = "free"
	ReasonHeldElsewhere   = "held-elsewhere"
	ReasonHolderExcluded  = "holder-excluded"
	ReasonHeldMayWait     = "held-pod-may-wait"
	ReasonNotSynced       = "cache-not-synced"
	ReasonUnknown         = "state-unknown"
	ReasonMigrationTarget = "migration-target"
	ReasonMigrationDenied = "migration-not-verified"
	ReasonVMIInUse        = "claim-in-use-by-vmi"
	ReasonMalformed       = "malformed-request"
)

// Options configure the decisions.
type Options struct {
	// Driver is the CSI driver whose volumes are fenced.
	Driver string
	// KubeVirtUsers are the users allowed to create migration target pods
	// (default: KubeVirt's controller service account).
	KubeVirtUsers []string
}

// DefaultKubeVirtUser is the service account KubeVirt's controller uses.
const DefaultKubeVirtUser = "system:serviceaccount:kubevirt:kubevirt-controller"

// KubeVirt pod labels of a migration target virt-launcher pod.
const (
	LabelMigrationJobUID = "kubevirt.io/migrationJobUID"
	LabelCreatedBy       = "kubevirt.io/created-by"
)

func notSynced() Decision {
	return Decision{Reason: ReasonNotSynced,
		Message: "the rds-fence admission webhook has not synced its caches yet, so it cannot tell whether another node holds this pod's volumes; retry in a few seconds"}
}

// fencedClaims resolves the claims of this driver an object mounts. The
// decision is already made (early, non-nil) when the caches have not
// synced, a claim's state is unknown, or no claim is fenced.
func fencedClaims(s Snapshot, o Options, namespace string, names []string) ([]claimState, *Decision) {
	if !s.Synced() {
		d := notSynced()
		return nil, &d
	}
	var out []claimState
	for _, n := range names {
		cs := resolveClaim(s, o.Driver, namespace, n)
		if cs.Unknown != "" {
			return nil, &Decision{Reason: ReasonUnknown, Claims: []string{cs.key()},
				Message: fmt.Sprintf("%s; refusing until it can be checked (check the PV and its %s annotation)", cs.Unknown, "rds-fence.csi.dev/attachment")}
		}
		if cs.Fenced {
			out = append(out, cs)
		}
	}
	if len(out) == 0 {
		return nil, &Decision{Allowed: true, Reason: ReasonNoFencedClaims}
	}
	return out, nil
}

// usersOf names the pods on the holding nodes that use the claim, for messages.
func usersOf(s Snapshot, cs claimState, exclude string) string {
	var names []string
	for _, p := range s.PodsUsingClaim(cs.Namespace, cs.Name) {
		if p.Name != exclude && slices.Contains(cs.Holders, p.Spec.NodeName) {
			names = append(names, p.Namespace+"/"+p.Name)
		}
	}
	if len(names) == 0 {
		return ""
	}
	return ", used by pod " + strings.Join(names, ", ")
}

// DecidePodOnNode decides a pod created directly on node (spec.nodeName)
// by requester: every ReadWriteOnce claim of this driver must be free or
// held by node itself. A KubeVirt migration target pod may be the second
// holder of an RWX block claim, only when the migration is verified (see
// verifyMigrationTarget), including that KubeVirt created it.
func DecidePodOnNode(pod *corev1.Pod, node, requester string, s Snapshot, o Options) Decision {
	return decideOnNode(pod, node, requester, true, s, o)
}

// DecideBinding decides the scheduler binding pod to node: the same rule as
// DecidePodOnNode, except that the binder is the scheduler, so who created
// a migration target pod was checked at its CREATE (DecidePodUnscheduled),
// and here the migration object, the VMI and the node count are checked
// again against the current state.
func DecideBinding(pod *corev1.Pod, node string, s Snapshot, o Options) Decision {
	return decideOnNode(pod, node, "", false, s, o)
}

func decideOnNode(pod *corev1.Pod, node, requester string, checkCreator bool, s Snapshot, o Options) Decision {
	claims, early := fencedClaims(s, o, pod.Namespace, podClaims(pod))
	if early != nil {
		return *early
	}
	d := Decision{Allowed: true, Reason: ReasonFree}
	for _, cs := range claims {
		others := slices.DeleteFunc(slices.Clone(cs.Holders), func(n string) bool { return n == node })
		if len(others) == 0 {
			continue
		}
		if cs.MultiBlock && pod.Labels[LabelMigrationJobUID] != "" {
			if why := verifyMigrationTarget(pod, requester, checkCreator, cs, others, s, o); why != "" {
				return Decision{Reason: ReasonMigrationDenied, Claims: []string{cs.key()},
					Message: fmt.Sprintf("pod %s/%s claims to be a KubeVirt migration target on node %s for PVC %s, but %s. %s", pod.Namespace, pod.Name, node, cs.key(), why, migrationRemedy)}
			}
			d.Reason = ReasonMigrationTarget
			d.Warnings = append(d.Warnings, fmt.Sprintf("PVC %s is shared with node %s for the live migration", cs.key(), others[0]))
			continue
		}
		kind := "ReadWriteOnce PV"
		if cs.MultiBlock {
			kind = "ReadWriteMany block PV, shared by a second node only for a KubeVirt live migration:"
		}
		users := usersOf(s, cs, pod.Name)
		what := "Delete or move the pod using it"
		if users == "" {
			what = "No pod uses it there any more: it is being detached, and the pod can start once it is"
		}
		return Decision{Reason: ReasonHeldElsewhere, Claims: []string{cs.key()},
			Message: fmt.Sprintf("pod %s/%s cannot run on node %s: PVC %s (%s %s) is attached to node %s%s. "+
				"%s; if node %s is gone for good, delete the Node or taint it node.kubernetes.io/out-of-service",
				pod.Namespace, pod.Name, node, cs.key(), kind, cs.PV, strings.Join(others, ","), users, what, strings.Join(others, ","))}
	}
	return d
}

// verifyMigrationTarget returns "" when the pod is the target of a live
// migration of the VMI that uses the claim, created by KubeVirt, and would
// make at most two holders; otherwise why not.
func verifyMigrationTarget(pod *corev1.Pod, requester string, checkCreator bool, cs claimState, others []string, s Snapshot, o Options) string {
	if checkCreator {
		if why := creatorCheck(requester, o); why != "" {
			return why
		}
	}
	mig, ok := s.Migration(pod.Namespace, types.UID(pod.Labels[LabelMigrationJobUID]))
	if !ok {
		return "no VirtualMachineInstanceMigration with that UID exists"
	}
	if mig.IsFinal() {
		return fmt.Sprintf("migration %s/%s has finished (%s)", mig.Namespace, mig.Name, mig.Status.Phase)
	}
	var vmi *kubevirtv1.VirtualMachineInstance
	for _, v := range s.VMIsUsingClaim(cs.Namespace, cs.Name) {
		if v.Name == mig.Spec.VMIName {
			vmi = v
		}
	}
	switch {
	case vmi == nil:
		return fmt.Sprintf("migration %s/%s moves VMI %s, which does not use the claim", mig.Namespace, mig.Name, mig.Spec.VMIName)
	case string(vmi.UID) != pod.Labels[LabelCreatedBy]:
		return fmt.Sprintf("the pod was not created for VMI %s of migration %s/%s", vmi.Name, mig.Namespace, mig.Name)
	case len(others) > 1:
		return fmt.Sprintf("the volume is already attached to nodes %s (at most two during a migration)", strings.Join(others, ","))
	}
	return ""
}

// migrationRemedy ends every refused migration target.
const migrationRemedy = "Only KubeVirt may create a migration target pod, for a running VirtualMachineInstanceMigration of the VMI using the PVC; start the migration with a VirtualMachineInstanceMigration (virtctl migrate) instead"

// creatorCheck returns "" when requester may set KubeVirt's migration
// labels, else why not.
func creatorCheck(requester string, o Options) string {
	users := o.KubeVirtUsers
	if len(users) == 0 {
		users = []string{DefaultKubeVirtUser}
	}
	if !slices.Contains(users, requester) {
		return fmt.Sprintf("it was created by %q, not by KubeVirt (%s)", requester, strings.Join(users, ", "))
	}
	return ""
}

// DecideMigrationLabels decides an UPDATE that sets or changes a pod's
// KubeVirt migration labels: only KubeVirt may do that to a pod using a
// fenced RWX block claim (a binding trusts that the labels are KubeVirt's).
func DecideMigrationLabels(pod *corev1.Pod, requester string, s Snapshot, o Options) Decision {
	claims, early := fencedClaims(s, o, pod.Namespace, podClaims(pod))
	if early != nil {
		return *early
	}
	for _, cs := range claims {
		if !cs.MultiBlock {
			continue
		}
		if why := creatorCheck(requester, o); why != "" {
			return Decision{Reason: ReasonMigrationDenied, Claims: []string{cs.key()},
				Message: fmt.Sprintf("pod %s/%s: the labels %s and %s may only be set by KubeVirt on a pod using PVC %s, but this update was made by %q. %s",
					pod.Namespace, pod.Name, LabelMigrationJobUID, LabelCreatedBy, cs.key(), requester, migrationRemedy)}
		}
	}
	return Decision{Allowed: true, Reason: ReasonNoFencedClaims}
}

// DecidePodUnscheduled decides a pod without a node, created by requester:
// refused when its node selector or required node affinity excludes the
// node that holds one of its ReadWriteOnce claims (it could never start),
// otherwise admitted with a warning naming the holder. A pod labelled as a
// KubeVirt migration target whose RWX block claim is already held must be
// a verified target (created by KubeVirt for a live migration of the VMI
// using the claim); its binding is checked again by DecideBinding.
func DecidePodUnscheduled(pod *corev1.Pod, requester string, s Snapshot, o Options) Decision {
	claims, early := fencedClaims(s, o, pod.Namespace, podClaims(pod))
	if early != nil {
		return *early
	}
	d := Decision{Allowed: true, Reason: ReasonFree}
	affinity := nodeaffinity.GetRequiredNodeAffinity(pod)
	for _, cs := range claims {
		if cs.MultiBlock && pod.Labels[LabelMigrationJobUID] != "" {
			// Whoever sets the migration labels must be KubeVirt, holders or
			// not: the binding trusts the creator check made here.
			why := creatorCheck(requester, o)
			if why == "" && len(cs.Holders) > 0 {
				why = verifyMigrationTarget(pod, requester, true, cs, cs.Holders, s, o)
			}
			if why != "" {
				return Decision{Reason: ReasonMigrationDenied, Claims: []string{cs.key()},
					Message: fmt.Sprintf("pod %s/%s claims to be a KubeVirt migration target for PVC %s, but %s. %s", pod.Namespace, pod.Name, cs.key(), why, migrationRemedy)}
			}
			d.Reason = ReasonMigrationTarget
			continue
		}
		if len(cs.Holders) == 0 || cs.MultiBlock {
			continue // a plain RWX block consumer: its binding decides
		}
		holder := cs.Holders[0]
		n, _ := s.Node(holder)
		if ok, err := affinity.Match(n); err != nil || !ok {
			return Decision{Reason: ReasonHolderExcluded, Claims: []string{cs.key()},
				Message: fmt.Sprintf("pod %s/%s can never start: PVC %s (ReadWriteOnce PV %s) is attached to node %s%s, and the pod's node selector or required node affinity excludes that node. "+
					"Let the pod run on node %s, or release the volume there first", pod.Namespace, pod.Name, cs.key(), cs.PV, holder, usersOf(s, cs, pod.Name), holder)}
		}
		d.Reason = ReasonHeldMayWait
		d.Warnings = append(d.Warnings, fmt.Sprintf("PVC %s is attached to node %s%s; this pod can only start there until it is released", cs.key(), holder, usersOf(s, cs, pod.Name)))
	}
	return d
}

// vmiClaims lists the claims a VMI mounts: PVCs, DataVolumes (their claim
// has the DataVolume's name), ephemeral PVCs and memory dumps.
func vmiClaims(vmi *kubevirtv1.VirtualMachineInstance) []string {
	var out []string
	for _, v := range vmi.Spec.Volumes {
		switch {
		case v.PersistentVolumeClaim != nil:
			out = append(out, v.PersistentVolumeClaim.ClaimName)
		case v.DataVolume != nil:
			out = append(out, v.DataVolume.Name)
		case v.Ephemeral != nil && v.Ephemeral.PersistentVolumeClaim != nil:
			out = append(out, v.Ephemeral.PersistentVolumeClaim.ClaimName)
		case v.MemoryDump != nil:
			out = append(out, v.MemoryDump.ClaimName)
		}
	}
	return out
}

// DecideVMI refuses a new VMI whose claim of this driver is in use by
// another VMI that has not finished. A ReadWriteOnce claim held by a node
// is treated like an unscheduled pod's: refused when the VMI's node
// selector or required affinity excludes the holder (it could never
// start), else admitted with a warning: a restarted VM whose old
// attachment is still being released must not be refused (its
// virt-launcher pod's binding is checked on its own).
func DecideVMI(vmi *kubevirtv1.VirtualMachineInstance, s Snapshot, o Options) Decision {
	claims, early := fencedClaims(s, o, vmi.Namespace, vmiClaims(vmi))
	if early != nil {
		return *early
	}
	d := Decision{Allowed: true, Reason: ReasonFree}
	// The VMI's placement constraints are its launcher pod's.
	affinity := nodeaffinity.GetRequiredNodeAffinity(&corev1.Pod{Spec: corev1.PodSpec{NodeSelector: vmi.Spec.NodeSelector, Affinity: vmi.Spec.Affinity}})
	for _, cs := range claims {
		for _, other := range s.VMIsUsingClaim(cs.Namespace, cs.Name) {
			if other.Name == vmi.Name || other.IsFinal() {
				continue
			}
			where := ""
			if other.Status.NodeName != "" {
				where = " on node " + other.Status.NodeName
			}
			return Decision{Reason: ReasonVMIInUse, Claims: []string{cs.key()},
				Message: fmt.Sprintf("VMI %s/%s cannot start: PVC %s is in use by VMI %s/%s (%s%s). Stop that VMI first, or use another PVC",
					vmi.Namespace, vmi.Name, cs.key(), other.Namespace, other.Name, other.Status.Phase, where)}
		}
		if cs.MultiBlock || len(cs.Holders) == 0 {
			continue
		}
		holder := cs.Holders[0]
		n, _ := s.Node(holder)
		if ok, err := affinity.Match(n); err != nil || !ok {
			return Decision{Reason: ReasonHolderExcluded, Claims: []string{cs.key()},
				Message: fmt.Sprintf("VMI %s/%s can never start: PVC %s (ReadWriteOnce PV %s) is attached to node %s%s, and the VMI's node selector or required node affinity excludes that node. "+
					"Stop what uses the PVC on node %s, or let the VMI run there", vmi.Namespace, vmi.Name, cs.key(), cs.PV, holder, usersOf(s, cs, ""), holder)}
		}
		d.Reason = ReasonHeldMayWait
		d.Warnings = append(d.Warnings, fmt.Sprintf("PVC %s is attached to node %s%s; this VMI can only start there until it is released", cs.key(), holder, usersOf(s, cs, "")))
	}
	return d
}
