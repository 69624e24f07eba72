package fencing

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	"sigs.k8s.io/controller-runtime/pkg/config"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/rds-fence/rds-fence/attachment/kube"
	"github.com/rds-fence/rds-fence/csi"
	"github.com/rds-fence/rds-fence/reconciler"
)

// startNodeLoss runs the node-loss reconciler over the fixture's fencing
// core in its own controller-runtime manager, as the controller wires it.
func startNodeLoss(t testing.TB, f *fixture, notReadyAfter, sweep time.Duration) {
	t.Helper()
	skip := true
	mgr, err := ctrl.NewManager(restCfg, ctrl.Options{Scheme: scheme, Logger: logr.Discard(),
		Metrics: metricsserver.Options{BindAddress: "0"}, HealthProbeBindAddress: "0",
		Controller: config.Controller{SkipNameValidation: &skip}})
	if err != nil {
		t.Fatal(err)
	}
	cs := kubernetes.NewForConfigOrDie(restCfg)
	b := events.NewBroadcaster(&events.EventSinkImpl{Interface: cs.EventsV1()})
	var ready atomic.Bool // set once the fencing core reads this manager's cache
	r := &reconciler.NodeReconciler{Reader: mgr.GetCache(), Writer: mgr.GetClient(), Live: mgr.GetAPIReader(), Attachments: f.mgr, Driver: csi.DefaultDriverName,
		Recorder: b.NewRecorder(scheme, "rds-fence-controller"), NotReadyAfter: notReadyAfter, Workers: 8, Log: testLog(t),
		Ready: ready.Load}
	if err := r.SetupWithManager(mgr, sweep); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := mgr.GetFieldIndexer().IndexField(ctx, &corev1.PersistentVolume{}, kube.IndexVolumeHandle, kube.IndexPVByHandle); err != nil {
		t.Fatal(err)
	}
	b.StartRecordingToSink(ctx.Done())
	done := make(chan struct{})
	go func() { defer close(done); _ = mgr.Start(ctx) }()
	t.Cleanup(func() { cancel(); <-done; b.Shutdown() })
	// One cache for the fencing core and the reconciler, as in the
	// controller (two caches could disagree about a node for a moment).
	if !mgr.GetCache().WaitForCacheSync(ctx) {
		t.Fatal("cache did not sync")
	}
	for _, o := range []client.Object{&corev1.Node{}, &corev1.PersistentVolume{}, &corev1.PersistentVolumeClaim{}, &storagev1.VolumeAttachment{}} {
		if _, err := mgr.GetCache().GetInformer(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	if !mgr.GetCache().WaitForCacheSync(ctx) {
		t.Fatal("cache did not sync")
	}
	f.cluster.Reader = mgr.GetCache() // nothing reads it until ready
	ready.Store(true)
}

// released waits until the volume is held by nobody: in memory, on the PV
// and on the simulated RDS.
func (f *fixture) released(id string) {
	f.t.Helper()
	waitFor(f, func(context.Context) bool {
		return len(f.mgr.Holders(id)) == 0 && f.allowed(id) == csi.NobodyNQN && !f.persisted(id).Held()
	})
}

func TestNodeLossReleasesVolumes(t *testing.T) {
	for _, c := range []struct {
		name string
		lose func(f *fixture, node string)
	}{
		{"node deleted", func(f *fixture, node string) {
			if err := direct.Delete(f.t.Context(), &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: node}}); err != nil {
				f.t.Fatal(err)
			}
		}},
		{"out-of-service taint", func(f *fixture, node string) {
			var n corev1.Node
			if err := direct.Get(f.t.Context(), client.ObjectKey{Name: node}, &n); err != nil {
				f.t.Fatal(err)
			}
			n.Spec.Taints = append(n.Spec.Taints, corev1.Taint{Key: kube.TaintOutOfService, Value: "nodeshutdown", Effect: corev1.TaintEffectNoExecute})
			if err := direct.Update(f.t.Context(), &n); err != nil {
				f.t.Fatal(err)
			}
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := newFixture(t)
			a, b := f.node("a"), f.node("b")
			var ids []string
			for _, claim := range []string{"one", "two", "three"} {
				id := f.volume(claim, false)
				f.mustPublish(id, a, false)
				ids = append(ids, id)
			}
			va := &storagev1.VolumeAttachment{ObjectMeta: metav1.ObjectMeta{Name: f.ns + "-va"},
				Spec: storagev1.VolumeAttachmentSpec{Attacher: csi.DefaultDriverName, NodeName: a,
					Source: storagev1.VolumeAttachmentSource{PersistentVolumeName: ptrTo(f.persisted(ids[0]).PV)}}}
			// Never touched: another node's, and another driver's on the lost node.
			otherNode := &storagev1.VolumeAttachment{ObjectMeta: metav1.ObjectMeta{Name: f.ns + "-va-b"},
				Spec: storagev1.VolumeAttachmentSpec{Attacher: csi.DefaultDriverName, NodeName: b,
					Source: storagev1.VolumeAttachmentSource{PersistentVolumeName: ptrTo(f.persisted(ids[1]).PV)}}}
			otherDriver := &storagev1.VolumeAttachment{ObjectMeta: metav1.ObjectMeta{Name: f.ns + "-va-ebs"},
				Spec: storagev1.VolumeAttachmentSpec{Attacher: "ebs.csi.aws.com", NodeName: a,
					Source: storagev1.VolumeAttachmentSource{PersistentVolumeName: ptrTo("some-ebs-pv")}}}
			for _, v := range []*storagev1.VolumeAttachment{va, otherNode, otherDriver} {
				if err := direct.Create(t.Context(), v); err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { _ = direct.Delete(context.Background(), v) })
			}
			startNodeLoss(t, f, time.Hour, time.Hour)
			c.lose(f, a)
			for _, id := range ids {
				f.released(id)
			}
			for _, claim := range []string{"one", "two", "three"} {
				msg := f.eventContaining("PersistentVolumeClaim", claim, reconciler.ReasonStaleAttachmentCleared, "released from node "+a)
				if !strings.Contains(msg, "no longer admits") {
					t.Fatalf("event %q", msg)
				}
			}
			f.mustPublish(ids[0], b, false)
			if got := f.allowed(ids[0]); got != hostNQN(b) {
				t.Fatalf("fence after the new publish = %q", got)
			}
			// A deleted node's VolumeAttachment is deleted; an out-of-service
			// node's is left to the attach-detach controller.
			gone := func(ctx context.Context) bool {
				var got storagev1.VolumeAttachment
				return apierrors.IsNotFound(direct.Get(ctx, client.ObjectKeyFromObject(va), &got))
			}
			for _, v := range []*storagev1.VolumeAttachment{otherNode, otherDriver} {
				var got storagev1.VolumeAttachment
				if err := direct.Get(t.Context(), client.ObjectKeyFromObject(v), &got); err != nil {
					t.Fatalf("VolumeAttachment %s was touched: %v", v.Name, err)
				}
			}
			if c.name == "node deleted" {
				waitFor(f, gone)
				f.eventContaining("PersistentVolumeClaim", "one", reconciler.ReasonStaleVolumeAttachmentDeleted, va.Name)
			} else if time.Sleep(300 * time.Millisecond); gone(t.Context()) {
				t.Fatal("the VolumeAttachment of an out-of-service node was deleted")
			}
		})
	}
}

// TestNotReadyNodeKeepsVolumes: NotReady releases nothing, even after
// several reconcile and sweep periods, and its claims are told why.
func TestNotReadyNodeKeepsVolumes(t *testing.T) {
	f := newFixture(t)
	a := f.node("a")
	id := f.volume("data", false)
	f.mustPublish(id, a, false)
	var n corev1.Node
	if err := direct.Get(t.Context(), client.ObjectKey{Name: a}, &n); err != nil {
		t.Fatal(err)
	}
	n.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionUnknown, Reason: "NodeStatusUnknown",
		LastTransitionTime: metav1.NewTime(time.Now())}}
	if err := direct.Status().Update(t.Context(), &n); err != nil {
		t.Fatal(err)
	}
	startNodeLoss(t, f, 300*time.Millisecond, 200*time.Millisecond)
	msg := f.event("PersistentVolumeClaim", "data", reconciler.ReasonHolderNodeNotReady)
	if !strings.Contains(msg, "NotReady alone never releases") || !strings.Contains(msg, a) {
		t.Fatalf("event %q", msg)
	}
	time.Sleep(1500 * time.Millisecond) // several sweeps and the warning period, well past
	if got := f.mgr.Holders(id); len(got) != 1 || got[0] != a {
		t.Fatalf("holders after NotReady = %v", got)
	}
	if got := f.allowed(id); got != hostNQN(a) {
		t.Fatalf("fence after NotReady = %q", got)
	}
	if !f.persisted(id).HeldBy(a) {
		t.Fatal("record after NotReady lost the holder")
	}
}

// TestNodeLossSweepAndRetry: a node deleted while no reconciler ran is
// found by the sweep; an RDS failure during the release (the fence write
// fails, so nothing else moves) is retried until it succeeds.
func TestNodeLossSweepAndRetry(t *testing.T) {
	f := newFixture(t)
	a := f.node("a")
	id := f.volume("data", false)
	f.mustPublish(id, a, false)
	if err := direct.Delete(t.Context(), &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: a}}); err != nil {
		t.Fatal(err)
	}
	f.waitCached(&corev1.Node{}, client.ObjectKey{Name: a}, false)
	f.sim.Sim.FailCommands("nvme-tcp-server-allow-host-name", "failure: device is busy", 2)
	startNodeLoss(t, f, time.Hour, 200*time.Millisecond)
	f.released(id)
	if failed := testutilValue(f.metrics.Operations.WithLabelValues("release", "error")); failed < 1 {
		t.Fatalf("%v failed releases; the injected RDS failure was never hit", failed)
	}
	if ok := testutilValue(f.metrics.Operations.WithLabelValues("release", "success")); ok != 1 {
		t.Fatalf("%v successful releases, want 1", ok)
	}
}

func ptrTo[T any](v T) *T { return &v }

// testLog logs to the test (benchmarks: discarded).
func testLog(t testing.TB) logr.Logger {
	if _, ok := t.(*testing.B); ok {
		return logr.Discard()
	}
	return funcr.New(func(prefix, args string) { t.Log(prefix, args) }, funcr.Options{})
}

// TestNodeLossUnderAPIFailures: PV writes fail for a while during a node
// loss. Each failed release restores the fence (the record still names the
// node), so fence and record never disagree toward admitting a node the
// record does not name; the release is retried with backoff until it
// succeeds.
func TestNodeLossUnderAPIFailures(t *testing.T) {
	var failures atomic.Int32
	failures.Store(3)
	f := newFixture(t, func(c *kube.Cluster) {
		c.Writer = interceptor.NewClient(directWatch, interceptor.Funcs{
			Patch: func(ctx context.Context, cl client.WithWatch, obj client.Object, p client.Patch, opts ...client.PatchOption) error {
				if _, ok := obj.(*corev1.PersistentVolume); ok && failures.Load() > 0 && failing.Load() {
					failures.Add(-1)
					return apierrors.NewServiceUnavailable("etcd is sad")
				}
				return cl.Patch(ctx, obj, p, opts...)
			},
		})
	})
	a := f.node("a")
	ids := []string{f.volume("one", false), f.volume("two", false)}
	for _, id := range ids {
		f.mustPublish(id, a, false)
	}
	failing.Store(true)
	t.Cleanup(func() { failing.Store(false) })
	startNodeLoss(t, f, time.Hour, time.Hour)
	if err := direct.Delete(t.Context(), &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: a}}); err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		f.released(id)
	}
	if failures.Load() != 0 {
		t.Fatalf("%d injected failures never hit", failures.Load())
	}
	if n := testutilValue(f.metrics.Operations.WithLabelValues("release", "error")); n < 1 {
		t.Fatalf("%v failed releases recorded", n)
	}
}

// failing gates the interceptor of TestNodeLossUnderAPIFailures to the
// release (the publishes before it succeed).
var failing atomic.Bool
