package reconciler

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	"github.com/rds-fence/rds-fence/attachment"
)

// Event reasons.
const (
	ReasonStaleAttachmentCleared       = "StaleAttachmentCleared" // emitted by attachment.Manager
	ReasonHolderNodeNotReady           = "HolderNodeNotReady"
	ReasonStaleVolumeAttachmentDeleted = "StaleVolumeAttachmentDeleted"
)

const taintOutOfService = "node.kubernetes.io/out-of-service"

// Defaults for unset fields.
const (
	DefaultSweepInterval = 30 * time.Second
	DefaultNotReadyAfter = 2 * time.Minute
)

// Attachments is the part of the fencing core the reconciler drives
// (attachment.Manager).
type Attachments interface {
	ReleaseNode(ctx context.Context, node string, workers int) ([]attachment.Record, error)
	HeldBy(node string) []attachment.Record
	HolderNodes() []string
}

// NodeReconciler releases the volumes of lost nodes and warns about
// NotReady holders. See the package documentation.
type NodeReconciler struct {
	// Reader is the informer cache (Nodes, PVs, PVCs, VolumeAttachments).
	Reader client.Reader
	// Writer deletes VolumeAttachments of deleted nodes.
	Writer client.Writer
	// Live reads from the API server: a node's deletion is confirmed there
	// before its VolumeAttachments are deleted.
	Live        client.Reader
	Attachments Attachments
	Driver      string
	Recorder    events.EventRecorder
	// NotReadyAfter: how long a holder may be NotReady before its claims
	// get a HolderNodeNotReady event.
	NotReadyAfter time.Duration
	// Workers: volumes released at once per node.
	Workers int
	// Ready reports whether the attachment store has been rebuilt; until
	// then requests are requeued.
	Ready func() bool
	Now   func() time.Time
	Log   logr.Logger

	mu sync.Mutex
	// warned: the NotReady episode (its transition time) already reported per node.
	warned map[string]time.Time
}

// SetupWithManager watches Nodes and adds the periodic sweep.
func (r *NodeReconciler) SetupWithManager(mgr ctrl.Manager, sweep time.Duration) error {
	// Node status heartbeats are not sent: only creation, deletion, and a
	// change of the out-of-service taint or of the Ready condition.
	changed := predicate.Funcs{UpdateFunc: func(e event.UpdateEvent) bool {
		o, n := e.ObjectOld.(*corev1.Node), e.ObjectNew.(*corev1.Node)
		return o == nil || n == nil || outOfService(o) != outOfService(n) || readySince(o) != readySince(n)
	}}
	// The sweep feeds the same queue, so its requests get the controller's
	// retries, backoff and RequeueAfter.
	swept := make(chan event.TypedGenericEvent[*corev1.Node], 256)
	if err := ctrl.NewControllerManagedBy(mgr).For(&corev1.Node{}, builder.WithPredicates(changed)).
		WatchesRawSource(source.Channel(swept, &handler.TypedEnqueueRequestForObject[*corev1.Node]{})).
		Named("node-loss").Complete(r); err != nil {
		return err
	}
	return mgr.Add(manager.RunnableFunc(func(ctx context.Context) error {
		r.Sweep(ctx, sweep, func(node string) {
			select {
			case swept <- event.TypedGenericEvent[*corev1.Node]{Object: &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: node}}}:
			case <-ctx.Done():
			}
		})
		return nil
	}))
}

func (r *NodeReconciler) now() time.Time {
	if r.Now == nil {
		return time.Now()
	}
	return r.Now()
}

// Reconcile implements reconcile.Reconciler for one node.
func (r *NodeReconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	if r.Ready != nil && !r.Ready() {
		return reconcile.Result{RequeueAfter: time.Second}, nil
	}
	name := req.Name
	var node corev1.Node
	err := r.Reader.Get(ctx, client.ObjectKey{Name: name}, &node)
	switch {
	case apierrors.IsNotFound(err):
		return r.release(ctx, name, true)
	case err != nil:
		return reconcile.Result{}, fmt.Errorf("reading node %s: %w", name, err)
	case outOfService(&node):
		return r.release(ctx, name, false)
	}
	return r.notReady(ctx, &node), nil
}

// readySince is the Ready condition's status and transition time.
func readySince(n *corev1.Node) string {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return string(c.Status) + "@" + c.LastTransitionTime.UTC().String()
		}
	}
	return ""
}

func outOfService(n *corev1.Node) bool {
	for _, t := range n.Spec.Taints {
		if t.Key == taintOutOfService {
			return true
		}
	}
	return false
}

// release frees the node's volumes (the Manager confirms the loss) and,
// for a deleted node, its VolumeAttachments. When the Manager does not
// confirm the loss (its view of the node is live: a cache behind this
// one, or the node came back), nothing is released and the node is looked
// at again shortly.
func (r *NodeReconciler) release(ctx context.Context, node string, deleted bool) (reconcile.Result, error) {
	recs, err := r.Attachments.ReleaseNode(ctx, node, r.Workers)
	if errors.Is(err, attachment.ErrNodeLive) {
		r.Log.Info("node loss not confirmed; nothing released, looking again shortly", "node", node)
		return reconcile.Result{RequeueAfter: unconfirmedRetry}, nil
	}
	if len(recs) > 0 {
		r.Log.Info("released the volumes of a lost node", "node", node, "deleted", deleted, "volumes", len(recs))
	}
	if err != nil {
		return reconcile.Result{}, fmt.Errorf("releasing the volumes of node %s: %w", node, err)
	}
	r.forget(node)
	if deleted {
		return reconcile.Result{}, r.deleteVolumeAttachments(ctx, node)
	}
	return reconcile.Result{}, nil
}

// unconfirmedRetry: how soon a loss the Manager did not confirm is looked at again.
const unconfirmedRetry = 500 * time.Millisecond

// deleteVolumeAttachments deletes this driver's VolumeAttachments that
// name a deleted node. What is touched and why it is safe: only the
// VolumeAttachment objects (never their finalizers) of this driver whose
// spec.nodeName is a node the API server confirms deleted (a live read
// here, just before), and only for volumes whose record no longer names
// that node (ReleaseNode revoked its fence and record). Deleting one lets
// the external-attacher run its ControllerUnpublish (which succeeds: the
// node holds nothing) and remove its finalizer, and lets the
// attach-detach controller stop waiting for a detach that no kubelet will
// ever confirm; the node cannot reconnect, because the storage no longer
// admits its host NQN.
func (r *NodeReconciler) deleteVolumeAttachments(ctx context.Context, node string) error {
	var n corev1.Node
	switch err := r.Live.Get(ctx, client.ObjectKey{Name: node}, &n); {
	case err == nil:
		return nil // the node exists (again): nothing is deleted
	case !apierrors.IsNotFound(err):
		return fmt.Errorf("confirming that node %s is deleted: %w", node, err)
	}
	var list storagev1.VolumeAttachmentList
	if err := r.Reader.List(ctx, &list); err != nil {
		return fmt.Errorf("listing VolumeAttachments: %w", err)
	}
	stillHeld := map[string]bool{}
	for _, rec := range r.Attachments.HeldBy(node) {
		stillHeld[rec.PV] = true
	}
	var errs []error
	for i := range list.Items {
		va := &list.Items[i]
		if va.Spec.NodeName != node || va.Spec.Attacher != r.Driver || va.DeletionTimestamp != nil {
			continue
		}
		if pv := va.Spec.Source.PersistentVolumeName; pv == nil || stillHeld[*pv] {
			continue // not released yet: the record still names the node
		}
		if err := r.Writer.Delete(ctx, va, client.Preconditions{UID: &va.UID}); err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("deleting VolumeAttachment %s: %w", va.Name, err))
			continue
		}
		r.Log.Info("deleted the VolumeAttachment of a deleted node", "volumeAttachment", va.Name, "node", node)
		if pvc := r.claimOfPV(ctx, va.Spec.Source.PersistentVolumeName); pvc != nil {
			r.Recorder.Eventf(pvc, nil, corev1.EventTypeNormal, ReasonStaleVolumeAttachmentDeleted, "Detach",
				"VolumeAttachment %s of deleted node %s was deleted so the volume can be attached elsewhere", va.Name, node)
		}
	}
	return errors.Join(errs...)
}

// notReady warns, once per NotReady episode, on the claims a NotReady node
// holds, and requeues until it is time to.
func (r *NodeReconciler) notReady(ctx context.Context, node *corev1.Node) reconcile.Result {
	var since time.Time
	ready := true
	for _, c := range node.Status.Conditions {
		if c.Type == corev1.NodeReady && c.Status != corev1.ConditionTrue {
			ready, since = false, c.LastTransitionTime.Time
		}
	}
	held := r.Attachments.HeldBy(node.Name)
	if ready || len(held) == 0 {
		r.forget(node.Name)
		return reconcile.Result{}
	}
	after := r.NotReadyAfter
	if after <= 0 {
		after = DefaultNotReadyAfter
	}
	if wait := after - r.now().Sub(since); wait > 0 {
		return reconcile.Result{RequeueAfter: wait}
	}
	r.mu.Lock()
	if r.warned == nil {
		r.warned = map[string]time.Time{}
	}
	done := r.warned[node.Name].Equal(since)
	r.warned[node.Name] = since
	r.mu.Unlock()
	if done {
		return reconcile.Result{}
	}
	for _, rec := range held {
		pvc := r.claim(ctx, rec.PVC)
		if pvc == nil {
			continue
		}
		r.Recorder.Eventf(pvc, nil, corev1.EventTypeWarning, ReasonHolderNodeNotReady, "Attach",
			"volume %s stays attached to node %s, NotReady since %s: NotReady alone never releases a volume. If the node is gone for good, delete the Node or taint it node.kubernetes.io/out-of-service=nodeshutdown:NoExecute",
			rec.VolumeID, node.Name, since.UTC().Format(time.RFC3339))
	}
	r.Log.Info("holder node NotReady; its volumes stay attached", "node", node.Name, "since", since, "volumes", len(held))
	return reconcile.Result{}
}

func (r *NodeReconciler) forget(node string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.warned, node)
}

func (r *NodeReconciler) claim(ctx context.Context, key string) *corev1.PersistentVolumeClaim {
	for i := range len(key) {
		if key[i] == '/' {
			var pvc corev1.PersistentVolumeClaim
			if r.Reader.Get(ctx, client.ObjectKey{Namespace: key[:i], Name: key[i+1:]}, &pvc) == nil {
				return &pvc
			}
			return nil
		}
	}
	return nil
}

func (r *NodeReconciler) claimOfPV(ctx context.Context, pvName *string) *corev1.PersistentVolumeClaim {
	if pvName == nil {
		return nil
	}
	var pv corev1.PersistentVolume
	if r.Reader.Get(ctx, client.ObjectKey{Name: *pvName}, &pv) != nil || pv.Spec.ClaimRef == nil {
		return nil
	}
	return r.claim(ctx, pv.Spec.ClaimRef.Namespace+"/"+pv.Spec.ClaimRef.Name)
}

// Sweep hands every holder node to enqueue at start (once the store is
// ready) and every interval: a node deleted while no controller was
// leading sends no event, and a failed release is retried here too.
func (r *NodeReconciler) Sweep(ctx context.Context, interval time.Duration, enqueue func(node string)) {
	if interval <= 0 {
		interval = DefaultSweepInterval
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if r.Ready == nil || r.Ready() {
			for _, n := range r.Attachments.HolderNodes() {
				enqueue(n)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
