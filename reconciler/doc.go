// Package reconciler holds the controller-runtime reconcilers of the
// controller process (leader-elected, started after the attachment store
// is rebuilt).
//
// NodeReconciler frees the volumes of a node whose loss is confirmed — the
// Node object is deleted, or tainted node.kubernetes.io/out-of-service
// (non-graceful node shutdown) — within seconds, and never on a guess: a
// NotReady node keeps its volumes, and its claims get a Warning event
// after a configurable time so operators know what is blocked. Releasing
// revokes the RDS host-NQN fence first, then the PV record, then the
// in-memory store (attachment.Manager.ReleaseNode).
//
// OrphanScanner reports RDS disks of this driver that no PersistentVolume
// references; deleting them is opt-in and waits for a minimum age.
//
// DriftRunner runs attachment.Manager.CheckDrift periodically, after an
// RDS reconnect and after PV or VolumeAttachment changes.
//
// Event reasons, a documented list (on the PVC unless said otherwise):
//
//	StaleAttachmentCleared        the volume was released from a lost node
//	HolderNodeNotReady            the volume stays attached to a NotReady node
//	StaleVolumeAttachmentDeleted  a VolumeAttachment of a deleted node was deleted
//	OrphanedDisk                  (on the CSIDriver) a disk of the driver has no PV
//	OrphanedDiskDeleted           (on the CSIDriver) such a disk was deleted
package reconciler
