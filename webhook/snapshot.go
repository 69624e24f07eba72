package webhook

import (
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	kubevirtv1 "kubevirt.io/api/core/v1"
)

// Snapshot is the cached cluster state a decision reads. Implementations
// read informer caches; every lookup is in memory.
type Snapshot interface {
	// Synced reports whether every cache has synced; before that, every
	// decision refuses.
	Synced() bool
	Claim(namespace, name string) (*corev1.PersistentVolumeClaim, bool)
	Volume(name string) (*corev1.PersistentVolume, bool)
	// Attached returns the nodes whose VolumeAttachment of the PV is attached.
	Attached(pvName string) []string
	Node(name string) (*corev1.Node, bool)
	// VMIsUsingClaim returns the VMIs in the namespace that mount the claim.
	VMIsUsingClaim(namespace, claim string) []*kubevirtv1.VirtualMachineInstance
	// PodsUsingClaim returns the pods in the namespace that mount the claim.
	PodsUsingClaim(namespace, claim string) []*corev1.Pod
	// Migration returns the VirtualMachineInstanceMigration with this UID.
	Migration(namespace string, uid types.UID) (*kubevirtv1.VirtualMachineInstanceMigration, bool)
}
