package kube

import (
	"context"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
)

// The rebuild reads from Writer (the API server), not from the cache: it
// runs before the controller serves, and must see what is stored now.

// ListPVs returns the driver's PVs.
func (c *Cluster) ListPVs(ctx context.Context) ([]*corev1.PersistentVolume, error) {
	var list corev1.PersistentVolumeList
	if err := c.Writer.List(ctx, &list); err != nil {
		return nil, err
	}
	var out []*corev1.PersistentVolume
	for i := range list.Items {
		if pv := &list.Items[i]; pv.Spec.CSI != nil && pv.Spec.CSI.Driver == c.Driver {
			out = append(out, pv)
		}
	}
	return out, nil
}

// AttachedNodes maps PV names to the nodes whose VolumeAttachment of this
// driver is attached.
func (c *Cluster) AttachedNodes(ctx context.Context) (map[string][]string, error) {
	var list storagev1.VolumeAttachmentList
	if err := c.Writer.List(ctx, &list); err != nil {
		return nil, err
	}
	out := map[string][]string{}
	for _, va := range list.Items {
		pv := va.Spec.Source.PersistentVolumeName
		if va.Spec.Attacher != c.Driver || pv == nil || !va.Status.Attached {
			continue
		}
		out[*pv] = append(out[*pv], va.Spec.NodeName)
	}
	return out, nil
}

// HostNQNs maps nodes to their host NQN annotation.
func (c *Cluster) HostNQNs(ctx context.Context) (map[string]string, error) {
	var list corev1.NodeList
	if err := c.Writer.List(ctx, &list); err != nil {
		return nil, err
	}
	out := make(map[string]string, len(list.Items))
	for _, n := range list.Items {
		if nqn := n.Annotations[AnnotationHostNQN]; nqn != "" {
			out[n.Name] = nqn
		}
	}
	return out, nil
}
