package kube

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

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
	// Live reads straight from the API server (mgr.GetAPIReader()); nil
	// means Writer. Used to confirm before anything is released or written.
	Live client.Reader
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

// Node reports whether the node exists, is out of service, and its host
// NQN. A cached answer that would release the node's volumes (deleted, out
// of service) is confirmed with a live read: a lagging cache must never
// take a volume from a running node.
func (c *Cluster) Node(ctx context.Context, name string) (attachment.NodeState, string, error) {
	st, nqn, err := nodeState(ctx, c.Reader, name)
	if err != nil || st == attachment.NodeLive {
		return st, nqn, err
	}
	return nodeState(ctx, c.live(), name)
}

func nodeState(ctx context.Context, r client.Reader, name string) (attachment.NodeState, string, error) {
	var n corev1.Node
	if err := r.Get(ctx, types.NamespacedName{Name: name}, &n); err != nil {
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
		lm := &attachment.LiveMigration{Namespace: namespace, Name: mig.Name, VMI: vmi.Name, Created: mig.CreationTimestamp.Time,
			Source: vmi.Status.NodeName}
		if st := mig.Status.MigrationState; st != nil {
			if st.SourceNode != "" {
				lm.Source = st.SourceNode
			}
			lm.Target = st.TargetNode
		}
		if lm.Target == "" { // KubeVirt has not reported it yet: the target virt-launcher pod knows
			target, err := c.migrationTargetNode(ctx, namespace, string(mig.UID), lm.Source)
			if err != nil {
				return nil, err
			}
			lm.Target = target
		}
		return lm, nil
	}
	return nil, nil
}

// LabelMigrationJobUID marks KubeVirt's migration target virt-launcher pod
// with the UID of its VirtualMachineInstanceMigration.
const LabelMigrationJobUID = "kubevirt.io/migrationJobUID"

// migrationTargetNode is the node of the migration's target pod ("" if it
// is not scheduled yet). A pod on the source node is not the target.
func (c *Cluster) migrationTargetNode(ctx context.Context, namespace, migUID, source string) (string, error) {
	var pods corev1.PodList
	if err := c.Reader.List(ctx, &pods, client.InNamespace(namespace), client.MatchingLabels{LabelMigrationJobUID: migUID}); err != nil {
		return "", err
	}
	for _, p := range pods.Items {
		if p.Spec.NodeName != "" && p.Spec.NodeName != source && p.DeletionTimestamp == nil {
			return p.Spec.NodeName, nil
		}
	}
	return "", nil
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

// PersistPV writes next's annotations on the PV. With prev's
// resourceVersion (this controller's last write) it is one merge patch with
// that version as a precondition; when the PV has changed since (or the
// version is unknown), the PV is read live, must still record prev's
// holders, and is patched with the version read. A second writer, such as
// another controller instance, therefore makes the write fail instead of
// being overwritten.
func (c *Cluster) PersistPV(ctx context.Context, prev, next attachment.Record) (string, error) {
	ann, err := attachment.Annotations(next)
	if err != nil {
		return "", err
	}
	if prev.ResourceVersion != "" {
		rv, err := c.patch(ctx, next.PV, prev.ResourceVersion, ann)
		if !apierrors.IsConflict(err) {
			return rv, err
		}
	}
	var pv corev1.PersistentVolume
	if err := c.live().Get(ctx, types.NamespacedName{Name: next.PV}, &pv); err != nil {
		if apierrors.IsNotFound(err) {
			return "", fmt.Errorf("%w: PV %s was deleted", attachment.ErrNoVolume, next.PV)
		}
		return "", err
	}
	cur, _, err := attachment.Decode(&pv)
	if err != nil {
		return "", err
	}
	if !slices.Equal(cur.Nodes(), prev.Nodes()) {
		return "", fmt.Errorf("PV %s records holders [%s] but this controller expected [%s]: another writer (a second controller instance?) changed it",
			next.PV, strings.Join(cur.Nodes(), ","), strings.Join(prev.Nodes(), ","))
	}
	return c.patch(ctx, next.PV, pv.ResourceVersion, ann)
}

// LivePV reads the PV from the API server.
func (c *Cluster) LivePV(ctx context.Context, name string) (*corev1.PersistentVolume, error) {
	var pv corev1.PersistentVolume
	if err := c.live().Get(ctx, types.NamespacedName{Name: name}, &pv); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("%w: PV %s was deleted", attachment.ErrNoVolume, name)
		}
		return nil, err
	}
	return &pv, nil
}

// patch merge-patches the annotations with resourceVersion as a
// precondition and returns the new resourceVersion.
func (c *Cluster) patch(ctx context.Context, name, resourceVersion string, ann map[string]*string) (string, error) {
	body, err := json.Marshal(map[string]any{"metadata": map[string]any{"resourceVersion": resourceVersion, "annotations": ann}})
	if err != nil {
		return "", err
	}
	pv := &corev1.PersistentVolume{}
	pv.Name = name
	err = c.Writer.Patch(ctx, pv, client.RawPatch(types.MergePatchType, body))
	if apierrors.IsNotFound(err) {
		return "", fmt.Errorf("%w: PV %s was deleted", attachment.ErrNoVolume, name)
	}
	if err != nil {
		return "", err
	}
	return pv.ResourceVersion, nil
}

// live is the reader that bypasses the cache (Live, else Writer).
func (c *Cluster) live() client.Reader {
	if c.Live != nil {
		return c.Live
	}
	return c.Writer
}

// PVReader reads records from PV annotations through a (cached) reader: the
// read side the webhook and the reconciler share with the controller.
type PVReader struct {
	Cluster *Cluster
}

var _ attachment.Reader = (*PVReader)(nil)

// Get decodes the record of the volume's PV. A volume whose PV is not (yet)
// in the cache, or whose annotation cannot be read, is an error: the truth
// is unknown, and callers fail closed.
func (r *PVReader) Get(ctx context.Context, volumeID string) (attachment.Record, bool, error) {
	pv, err := r.Cluster.PVForVolume(ctx, volumeID)
	if err != nil {
		return attachment.Record{VolumeID: volumeID}, false, err
	}
	return attachment.Decode(pv)
}

// VMINode returns the node the VMI runs on ("" if unknown or gone).
func (c *Cluster) VMINode(ctx context.Context, namespace, name string) (string, error) {
	var vmi kubevirtv1.VirtualMachineInstance
	if err := c.Reader.Get(ctx, types.NamespacedName{Namespace: namespace, Name: name}, &vmi); err != nil {
		if apierrors.IsNotFound(err) || meta.IsNoMatchError(err) {
			return "", nil
		}
		return "", err
	}
	return vmi.Status.NodeName, nil
}
