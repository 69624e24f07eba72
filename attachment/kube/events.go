package kube

import (
	"context"
	"strings"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/rds-fence/rds-fence/attachment"
)

// Event reasons, a documented and stable list: operators filter on them.
const (
	ReasonAttachmentConflict     = "AttachmentConflict"
	ReasonStaleAttachmentCleared = "StaleAttachmentCleared"
	ReasonMigrationStarted       = "MigrationStarted"
	ReasonMigrationCompleted     = "MigrationCompleted"
	ReasonMigrationFailed        = "MigrationFailed"
	ReasonAttachmentDrift        = "AttachmentDrift"
)

// Event actions (events.k8s.io/v1 "action").
const (
	actionAttach = "Attach"
	actionDetach = "Detach"
)

// Events implements attachment.Events with a client-go events.k8s.io/v1
// recorder. Repeats are rate-limited by the recorder itself: events of one
// reason and action on one object within minutes become one event series
// with a count (the first message is kept), so a retrying attacher cannot
// flood the API.
type Events struct {
	Recorder events.EventRecorder
	// Reader finds the claim (for its UID) and the pod that uses it.
	Reader client.Reader
	Log    logr.Logger
	// Timeout bounds the lookups (default 2s); events are best effort.
	Timeout time.Duration
}

var _ attachment.Events = (*Events)(nil)

// Conflict records AttachmentConflict on the claim and on the pod that
// asked for the volume on the requesting node, when it can be found.
func (e *Events) Conflict(rec attachment.Record, requester string, err *attachment.ConflictError) {
	ctx, cancel := e.ctx()
	defer cancel()
	pvc := e.claim(ctx, rec.PVC)
	if pvc == nil {
		e.Log.Info("attachment conflict on a volume without a claim", "volumeID", rec.VolumeID, "pv", rec.PV, "message", err.Error())
		return
	}
	e.Recorder.Eventf(pvc, nil, corev1.EventTypeWarning, ReasonAttachmentConflict, actionAttach, "%s", err.Error())
	if pod := e.podOn(ctx, pvc, requester); pod != nil {
		e.Recorder.Eventf(pod, pvc, corev1.EventTypeWarning, ReasonAttachmentConflict, actionAttach, "%s", err.Error())
	}
}

// StaleCleared records StaleAttachmentCleared on the claim: released by a
// publish to newHolder, or (newHolder "") by the node-loss reconciler.
func (e *Events) StaleCleared(rec attachment.Record, c attachment.ClearedHolder, newHolder string) {
	ctx, cancel := e.ctx()
	defer cancel()
	pvc := e.claim(ctx, rec.PVC)
	switch {
	case pvc == nil:
	case newHolder == "":
		e.Recorder.Eventf(pvc, nil, corev1.EventTypeWarning, ReasonStaleAttachmentCleared, actionDetach,
			"volume %s was released from node %s (node %s): the storage no longer admits that node, and another node may now attach it", rec.VolumeID, c.Node, c.State)
	default:
		e.Recorder.Eventf(pvc, nil, corev1.EventTypeWarning, ReasonStaleAttachmentCleared, actionAttach,
			"volume %s was released from node %s (node %s) and attached to node %s", rec.VolumeID, c.Node, c.State, newHolder)
	}
}

// MigrationStarted records the opening of a two-node window.
func (e *Events) MigrationStarted(rec attachment.Record, m attachment.Migration) {
	ctx, cancel := e.ctx()
	defer cancel()
	if pvc := e.claim(ctx, rec.PVC); pvc != nil {
		deadline := "no deadline"
		if !m.Deadline.IsZero() {
			deadline = "until " + m.Deadline.UTC().Format(time.RFC3339)
		}
		e.Recorder.Eventf(pvc, nil, corev1.EventTypeNormal, ReasonMigrationStarted, actionAttach,
			"volume %s attached to nodes %s and %s for migration %s/%s of VMI %s (%s)", rec.VolumeID, m.Source, m.Target, m.Namespace, m.Name, m.VMI, deadline)
	}
}

// MigrationEnded records MigrationCompleted or MigrationFailed.
func (e *Events) MigrationEnded(rec attachment.Record, end attachment.MigrationEnd) {
	ctx, cancel := e.ctx()
	defer cancel()
	pvc := e.claim(ctx, rec.PVC)
	if pvc == nil {
		return
	}
	m := end.Migration
	if end.Succeeded {
		e.Recorder.Eventf(pvc, nil, corev1.EventTypeNormal, ReasonMigrationCompleted, actionDetach,
			"migration %s/%s released volume %s on source node %s; node %s holds it", m.Namespace, m.Name, rec.VolumeID, m.Source, m.Target)
		return
	}
	e.Recorder.Eventf(pvc, nil, corev1.EventTypeWarning, ReasonMigrationFailed, actionDetach,
		"migration %s/%s released volume %s on target node %s; source node %s keeps it", m.Namespace, m.Name, rec.VolumeID, m.Target, m.Source)
}

// Drift records AttachmentDrift on the claim (logged only without one).
func (e *Events) Drift(d attachment.Drift) {
	ctx, cancel := e.ctx()
	defer cancel()
	if pvc := e.claim(ctx, d.PVC); pvc != nil {
		// The kind is the action: events of one reason and action on one object
		// are merged into a series, and different drifts must stay apart.
		e.Recorder.Eventf(pvc, nil, corev1.EventTypeWarning, ReasonAttachmentDrift, d.Kind, "%s", d.String())
	}
}

func (e *Events) ctx() (context.Context, context.CancelFunc) {
	d := e.Timeout
	if d <= 0 {
		d = 2 * time.Second
	}
	return context.WithTimeout(context.Background(), d)
}

// claim returns the PVC "namespace/name" (with its UID when readable, so
// `kubectl describe pvc` shows the event), or nil when there is no claim.
func (e *Events) claim(ctx context.Context, nsName string) *corev1.PersistentVolumeClaim {
	ns, name, ok := strings.Cut(nsName, "/")
	if !ok || name == "" {
		return nil
	}
	pvc := &corev1.PersistentVolumeClaim{}
	if err := e.Reader.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, pvc); err != nil {
		pvc = &corev1.PersistentVolumeClaim{}
		pvc.Namespace, pvc.Name = ns, name
	}
	return pvc
}

// podOn finds a pod on node (or not yet running anywhere) that mounts pvc.
func (e *Events) podOn(ctx context.Context, pvc *corev1.PersistentVolumeClaim, node string) *corev1.Pod {
	var pods corev1.PodList
	if err := e.Reader.List(ctx, &pods, client.InNamespace(pvc.Namespace)); err != nil {
		return nil
	}
	for i := range pods.Items {
		p := &pods.Items[i]
		if p.Spec.NodeName != node || p.DeletionTimestamp != nil {
			continue
		}
		for _, v := range p.Spec.Volumes {
			if v.PersistentVolumeClaim != nil && v.PersistentVolumeClaim.ClaimName == pvc.Name {
				return p
			}
		}
	}
	return nil
}
