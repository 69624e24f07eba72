package kube

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/types"
	kubevirtv1 "kubevirt.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/rds-fence/rds-fence/attachment"
)

const (
	// IndexVolumeHandle indexes PVs by spec.csi.volumeHandle.
	IndexVolumeHandle = "spec.csi.volumeHandle"
	// AnnotationHostNQN is written on the Node by the node plugin: the NVMe
	// host NQN the storage fence allows for volumes that node holds.
	AnnotationHostNQN = "rds-fence.csi.dev/host-nqn"
	// TaintOutOfService marks a node confirmed shut down (non-graceful node
	// shutdown); its volumes may be released.
	TaintOutOfService = "node.kubernetes.io/out-of-service"
)

// IndexPVByHandle is the index function for IndexVolumeHandle.
func IndexPVByHandle(o client.Object) []string {
	pv, ok := o.(*corev1.PersistentVolume)
	if !ok || pv.Spec.CSI == nil {
		return nil
	}
	return []string{pv.Spec.CSI.VolumeHandle}
}

// Cluster implements attachment.Cluster. Reader should be an informer
// cache with the IndexVolumeHandle index; Writer reaches the API server.
type Cluster struct {
	Driver string
	Reader client.Reader
	Writer client.Client
}

var _ attachment.Cluster = (*Cluster)(nil)

// PVForVolume finds the driver's PV whose handle is volumeID.
func (c *Cluster) PVForVolume(ctx context.Context, volumeID string) (*corev1.PersistentVolume, error) {
	var list corev1.PersistentVolumeList
	if err := c.Reader.List(ctx, &list, client.MatchingFields{IndexVolumeHandle: volumeID}); err != nil {
		return nil, err
	}
	for i := range list.Items {
		if pv := &list.Items[i]; pv.Spec.CSI != nil && pv.Spec.CSI.Driver == c.Driver && pv.Spec.CSI.VolumeHandle == volumeID {
			return pv, nil
		}
	}
	return nil, fmt.Errorf("%w %s of driver %s", attachment.ErrNoVolume, volumeID, c.Driver)
}

// Node reports whether the node exists, is out of service, and its host NQN.
func (c *Cluster) Node(ctx context.Context, name string) (attachment.NodeState, string, error) {
	var n corev1.Node
	if err := c.Reader.Get(ctx, types.NamespacedName{Name: name}, &n); err != nil {
		if apierrors.IsNotFound(err) {
			return attachment.NodeDeleted, "", nil
		}
		return attachment.NodeLive, "", err
	}
	nqn := n.Annotations[AnnotationHostNQN]
	for _, t := range n.Spec.Taints {
		if t.Key == TaintOutOfService {
			return attachment.NodeOutOfService, nqn, nil
		}
	}
	return attachment.NodeLive, nqn, nil
}

// LiveMigration finds an unfinished VirtualMachineInstanceMigration in the
// claim's namespace whose VMI uses the claim. A cluster without KubeVirt
// has no migrations.
func (c *Cluster) LiveMigration(ctx context.Context, namespace, claim string) (*attachment.LiveMigration, error) {
	var migs kubevirtv1.VirtualMachineInstanceMigrationList
	if err := c.Reader.List(ctx, &migs, client.InNamespace(namespace)); err != nil {
		if meta.IsNoMatchError(err) {
			return nil, nil
		}
		return nil, err
	}
	for i := range migs.Items {
		mig := &migs.Items[i]
		if mig.IsFinal() || mig.DeletionTimestamp != nil {
			continue
		}
		var vmi kubevirtv1.VirtualMachineInstance
		if err := c.Reader.Get(ctx, types.NamespacedName{Namespace: namespace, Name: mig.Spec.VMIName}, &vmi); err != nil {
			if apierrors.IsNotFound(err) {
				continue
			}
			return nil, err
		}
		if !UsesClaim(&vmi, claim) {
			continue
		}
		lm := &attachment.LiveMigration{Namespace: namespace, Name: mig.Name, VMI: vmi.Name, Created: mig.CreationTimestamp.Time}
		if st := mig.Status.MigrationState; st != nil {
			lm.Source, lm.Target = st.SourceNode, st.TargetNode
		}
		return lm, nil
	}
	return nil, nil
}

// UsesClaim reports whether the VMI mounts the claim (directly or through a
// DataVolume of the same name).
func UsesClaim(vmi *kubevirtv1.VirtualMachineInstance, claim string) bool {
	for _, v := range vmi.Spec.Volumes {
		if pvc := v.PersistentVolumeClaim; pvc != nil && pvc.ClaimName == claim {
			return true
		}
		if dv := v.DataVolume; dv != nil && dv.Name == claim {
			return true
		}
	}
	return false
}

// PersistPV merge-patches the annotations (nil removes one) on the PV.
func (c *Cluster) PersistPV(ctx context.Context, pvName string, annotations map[string]*string) error {
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": annotations}})
	if err != nil {
		return err
	}
	pv := &corev1.PersistentVolume{}
	pv.Name = pvName
	err = c.Writer.Patch(ctx, pv, client.RawPatch(types.MergePatchType, patch))
	if apierrors.IsNotFound(err) {
		return fmt.Errorf("%w: PV %s was deleted", attachment.ErrNoVolume, pvName)
	}
	return err
}

// PVReader reads records from PV annotations through a (cached) reader: the
// read side the webhook and the reconciler share with the controller.
type PVReader struct {
	Cluster *Cluster
}

var _ attachment.Reader = (*PVReader)(nil)

// Get decodes the record of the volume's PV. A volume without a PV is not
// held; an unreadable annotation is an error (fail closed).
func (r *PVReader) Get(ctx context.Context, volumeID string) (attachment.Record, bool, error) {
	pv, err := r.Cluster.PVForVolume(ctx, volumeID)
	if errors.Is(err, attachment.ErrNoVolume) {
		return attachment.Record{VolumeID: volumeID}, false, nil
	}
	if err != nil {
		return attachment.Record{VolumeID: volumeID}, false, err
	}
	return attachment.Decode(pv)
}
