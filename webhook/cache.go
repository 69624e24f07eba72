package webhook

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	kubevirtv1 "kubevirt.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Field indexes the cached snapshot needs (see AddIndexes).
const (
	IndexVAByPV      = "rds-fence.spec.source.persistentVolumeName"
	IndexPodByClaim  = "rds-fence.pod.claims"
	IndexVMIByClaim  = "rds-fence.vmi.claims"
	IndexMigrationID = "rds-fence.metadata.uid"
)

type index struct {
	obj   client.Object
	field string
	fn    client.IndexerFunc
}

// AddIndexes registers the indexes on the cache. KubeVirt indexes only
// when kubevirt is true (its CRDs are installed).
func AddIndexes(ctx context.Context, idx client.FieldIndexer, kubevirt bool) error {
	add := []index{
		{&storagev1.VolumeAttachment{}, IndexVAByPV, func(o client.Object) []string {
			va := o.(*storagev1.VolumeAttachment)
			if va.Spec.Source.PersistentVolumeName == nil {
				return nil
			}
			return []string{*va.Spec.Source.PersistentVolumeName}
		}},
		{&corev1.Pod{}, IndexPodByClaim, func(o client.Object) []string { return podClaims(o.(*corev1.Pod)) }},
	}
	if kubevirt {
		add = append(add,
			index{&kubevirtv1.VirtualMachineInstance{}, IndexVMIByClaim, func(o client.Object) []string {
				return vmiClaims(o.(*kubevirtv1.VirtualMachineInstance))
			}},
			index{&kubevirtv1.VirtualMachineInstanceMigration{}, IndexMigrationID, func(o client.Object) []string {
				return []string{string(o.GetUID())}
			}})
	}
	for _, a := range add {
		if err := idx.IndexField(ctx, a.obj, a.field, a.fn); err != nil {
			return fmt.Errorf("indexing %T by %s: %w", a.obj, a.field, err)
		}
	}
	return nil
}

// CachedState is the informer-backed cluster state. Every read is from the
// cache (Reader); the only API call is Live, for a pod being bound that the
// cache has not seen yet.
type CachedState struct {
	Reader client.Reader
	// Live reads from the API server (a pod created a moment ago).
	Live client.Reader
	// KubeVirt: VMI and migration informers run (KubeVirt's CRDs exist).
	KubeVirt bool
	// PodWait: how long a binding waits for the cache to show its pod
	// before asking Live (DefaultPodWait in production; 0 asks at once).
	PodWait time.Duration
	synced  atomic.Bool
}

// WaitForSync starts every informer the decisions read and marks the state
// synced once all have synced; until then every decision refuses.
func (c *CachedState) WaitForSync(ctx context.Context, informers cache.Informers) error {
	objs := []client.Object{&corev1.PersistentVolume{}, &corev1.PersistentVolumeClaim{}, &corev1.Node{},
		&corev1.Pod{}, &storagev1.VolumeAttachment{}}
	if c.KubeVirt {
		objs = append(objs, &kubevirtv1.VirtualMachineInstance{}, &kubevirtv1.VirtualMachineInstanceMigration{})
	}
	for _, o := range objs {
		if _, err := informers.GetInformer(ctx, o); err != nil {
			return fmt.Errorf("starting the %T informer: %w", o, err)
		}
	}
	if !informers.WaitForCacheSync(ctx) {
		return fmt.Errorf("caches did not sync: %w", ctx.Err())
	}
	c.synced.Store(true)
	return nil
}

// Synced reports whether the caches have synced.
func (c *CachedState) Synced() bool { return c.synced.Load() }

// View returns a Snapshot for one request. Read errors other than "not
// found" are recorded; the caller must check Err and refuse when set.
func (c *CachedState) View(ctx context.Context) *View { return &View{c: c, ctx: ctx} }

// View is a request-scoped Snapshot over CachedState.
type View struct {
	c   *CachedState
	ctx context.Context
	mu  sync.Mutex
	err error
}

var _ Snapshot = (*View)(nil)

// Err is the first read error, if any: the decision may rest on a partial
// view and must not allow.
func (v *View) Err() error {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.err
}

func (v *View) fail(err error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.err == nil {
		v.err = err
	}
}

// get reads one object; false when absent or on error (recorded).
func (v *View) get(key client.ObjectKey, obj client.Object) bool {
	err := v.c.Reader.Get(v.ctx, key, obj)
	switch {
	case err == nil:
		return true
	case !apierrors.IsNotFound(err):
		v.fail(fmt.Errorf("reading %T %s from the cache: %w", obj, key, err))
	}
	return false
}

func (v *View) list(list client.ObjectList, opts ...client.ListOption) bool {
	if err := v.c.Reader.List(v.ctx, list, append(opts, client.UnsafeDisableDeepCopy)...); err != nil {
		v.fail(fmt.Errorf("listing %T from the cache: %w", list, err))
		return false
	}
	return true
}

// Synced reports whether the caches have synced.
func (v *View) Synced() bool { return v.c.Synced() }

// Claim reads a PVC from the cache.
func (v *View) Claim(namespace, name string) (*corev1.PersistentVolumeClaim, bool) {
	var pvc corev1.PersistentVolumeClaim
	return &pvc, v.get(client.ObjectKey{Namespace: namespace, Name: name}, &pvc)
}

// Volume reads a PV from the cache.
func (v *View) Volume(name string) (*corev1.PersistentVolume, bool) {
	var pv corev1.PersistentVolume
	return &pv, v.get(client.ObjectKey{Name: name}, &pv)
}

// Node reads a Node from the cache.
func (v *View) Node(name string) (*corev1.Node, bool) {
	var n corev1.Node
	return &n, v.get(client.ObjectKey{Name: name}, &n)
}

// Attached returns the nodes of the PV's VolumeAttachments whose status
// says attached. An attachment still in flight is not counted: the
// controller records the holder on the PV before it reports success, and a
// VolumeAttachment refused by the fence (attached=false, attachError) must
// not make its node look like a holder.
func (v *View) Attached(pvName string) []string {
	var list storagev1.VolumeAttachmentList
	if !v.list(&list, client.MatchingFields{IndexVAByPV: pvName}) {
		return nil
	}
	var out []string
	for i := range list.Items {
		va := &list.Items[i]
		if va.Status.Attached {
			out = append(out, va.Spec.NodeName)
		}
	}
	return out
}

// PodsUsingClaim lists the namespace's pods that mount the claim.
func (v *View) PodsUsingClaim(namespace, claim string) []*corev1.Pod {
	var list corev1.PodList
	if !v.list(&list, client.InNamespace(namespace), client.MatchingFields{IndexPodByClaim: claim}) {
		return nil
	}
	out := make([]*corev1.Pod, 0, len(list.Items))
	for i := range list.Items {
		out = append(out, &list.Items[i])
	}
	return out
}

// VMIsUsingClaim lists the namespace's VMIs that mount the claim (none
// without KubeVirt: no VMI can exist then).
func (v *View) VMIsUsingClaim(namespace, claim string) []*kubevirtv1.VirtualMachineInstance {
	if !v.c.KubeVirt {
		return nil
	}
	var list kubevirtv1.VirtualMachineInstanceList
	if !v.list(&list, client.InNamespace(namespace), client.MatchingFields{IndexVMIByClaim: claim}) {
		return nil
	}
	out := make([]*kubevirtv1.VirtualMachineInstance, 0, len(list.Items))
	for i := range list.Items {
		out = append(out, &list.Items[i])
	}
	return out
}

// Migration looks the migration up by UID in the cache, then (a migration
// created a moment ago) once in the API server.
func (v *View) Migration(namespace string, uid types.UID) (*kubevirtv1.VirtualMachineInstanceMigration, bool) {
	if !v.c.KubeVirt {
		v.fail(errNoKubeVirt)
		return nil, false
	}
	var list kubevirtv1.VirtualMachineInstanceMigrationList
	if !v.list(&list, client.InNamespace(namespace), client.MatchingFields{IndexMigrationID: string(uid)}) {
		return nil, false
	}
	if len(list.Items) == 0 && v.c.Live != nil {
		if err := v.c.Live.List(v.ctx, &list, client.InNamespace(namespace)); err != nil {
			v.fail(fmt.Errorf("listing migrations in %s: %w", namespace, err))
			return nil, false
		}
		list.Items = slices.DeleteFunc(list.Items, func(m kubevirtv1.VirtualMachineInstanceMigration) bool { return m.UID != uid })
	}
	if len(list.Items) == 0 {
		return nil, false
	}
	return &list.Items[0], true
}

var errNoKubeVirt = errors.New("this webhook does not watch KubeVirt VMIs and migrations (it started before KubeVirt was installed, or runs with --kubevirt=false): restart the webhook pods")

// Pod returns the pod being bound, whose UID must be uid when set (the
// scheduler sets it: a pod deleted and recreated under the same name must
// not be judged by its predecessor). The cache is given a moment to catch
// up with a pod created a moment ago, then the API server is asked. An
// error means it cannot be checked.
func (v *View) Pod(namespace, name string, uid types.UID) (*corev1.Pod, error) {
	key := client.ObjectKey{Namespace: namespace, Name: name}
	match := func(p *corev1.Pod) bool { return uid == "" || p.UID == uid }
	var p corev1.Pod
	deadline := time.Now().Add(v.c.PodWait)
	for {
		err := v.c.Reader.Get(v.ctx, key, &p)
		switch {
		case err == nil && match(&p):
			return &p, nil
		case err != nil && !apierrors.IsNotFound(err):
			return nil, fmt.Errorf("reading pod %s from the cache: %w", key, err)
		}
		if time.Now().After(deadline) || v.c.Live == nil {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	if v.c.Live == nil {
		return nil, fmt.Errorf("pod %s (uid %s) is not in the cache", key, uid)
	}
	if err := v.c.Live.Get(v.ctx, key, &p); err != nil {
		return nil, fmt.Errorf("reading pod %s: %w", key, err)
	}
	if !match(&p) {
		return nil, fmt.Errorf("pod %s has uid %s, but the binding is for uid %s", key, p.UID, uid)
	}
	return &p, nil
}

// DefaultPodWait is how long a binding waits for the cache to show its pod
// before asking the API server.
const DefaultPodWait = 100 * time.Millisecond
