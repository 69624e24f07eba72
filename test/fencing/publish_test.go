package fencing

import (
	"context"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/rds-fence/rds-fence/attachment/kube"
	"github.com/rds-fence/rds-fence/csi"
)

func TestRWOPublishConflictAndFence(t *testing.T) {
	f := newFixture(t)
	a, b := f.node("a"), f.node("b")
	id := f.volume("data", false)
	if got := f.allowed(id); got != csi.NobodyNQN {
		t.Fatalf("new volume fence = %q, want nobody", got)
	}

	resp, err := f.publish(id, a, false)
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetPublishContext()[csi.PubCtxHolder] != a || resp.GetPublishContext()[csi.PubCtxHostNQN] != hostNQN(a) {
		t.Fatalf("publish context = %v", resp.GetPublishContext())
	}
	if got := f.allowed(id); got != hostNQN(a) {
		t.Fatalf("fence after publish = %q, want node a's NQN", got)
	}
	if rec := f.persisted(id); nodes(rec) != a || rec.PVC != f.ns+"/data" {
		t.Fatalf("persisted record = %+v", rec)
	}
	if _, err := f.sim.Sim.Connect(id, hostNQN(b)); err == nil {
		t.Fatal("the RDS let node b connect to a volume node a holds")
	}
	if _, err := f.sim.Sim.Connect(id, hostNQN(a)); err != nil {
		t.Fatalf("the holder cannot connect: %v", err)
	}

	// Same node again: success and no side effect on the RDS.
	before := len(f.sim.Sim.Commands())
	f.mustPublish(id, a, false)
	if n := len(f.sim.Sim.Commands()) - before; n != 0 {
		t.Fatalf("an idempotent publish sent %d RDS commands", n)
	}

	// A pod on node b wants it: refused, with events on the PVC and the pod.
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: f.ns, Name: "reader"}, Spec: corev1.PodSpec{
		NodeName:   b,
		Containers: []corev1.Container{{Name: "c", Image: "busybox"}},
		Volumes: []corev1.Volume{{Name: "v", VolumeSource: corev1.VolumeSource{
			PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "data"}}}}}}
	if err := direct.Create(t.Context(), pod); err != nil {
		t.Fatal(err)
	}
	f.waitCached(&corev1.Pod{}, client.ObjectKeyFromObject(pod), true)
	_, err = f.publish(id, b, false)
	wantCode(t, err, codes.FailedPrecondition, "volume "+id, "PVC "+f.ns+"/data", "attached to node "+a, "cannot also be attached to node "+b,
		"deleted", "node.kubernetes.io/out-of-service")
	for _, kind := range []string{"PersistentVolumeClaim", "Pod"} {
		name := map[string]string{"PersistentVolumeClaim": "data", "Pod": "reader"}[kind]
		if msg := f.event(kind, name, kube.ReasonAttachmentConflict); !strings.Contains(msg, "attached to node "+a) {
			t.Fatalf("%s event = %q", kind, msg)
		}
	}
	if got := f.allowed(id); got != hostNQN(a) {
		t.Fatalf("a refused publish moved the fence to %q", got)
	}

	// Unpublish of a node that does not hold it is a no-op success.
	if err := f.unpublish(id, b); err != nil {
		t.Fatal(err)
	}
	if err := f.unpublish(id, a); err != nil {
		t.Fatal(err)
	}
	if got := f.allowed(id); got != csi.NobodyNQN {
		t.Fatalf("fence after unpublish = %q, want nobody", got)
	}
	if rec := f.persisted(id); rec.Held() {
		t.Fatalf("persisted record after unpublish = %+v", rec)
	}
	f.mustPublish(id, b, false)
	if got := f.allowed(id); got != hostNQN(b) {
		t.Fatalf("fence after publish to b = %q", got)
	}
	// Deleting a published volume is refused; ListVolumes reports the holder.
	_, err = f.drv.DeleteVolume(t.Context(), deleteReq(id))
	wantCode(t, err, codes.FailedPrecondition, "still attached", b)
	list, err := f.drv.ListVolumes(t.Context(), listReq())
	if err != nil {
		t.Fatal(err)
	}
	if got := list.GetEntries()[0].GetStatus().GetPublishedNodeIds(); len(got) != 1 || got[0] != b {
		t.Fatalf("published nodes = %v", got)
	}
}

func TestNotReadyNeverReleases(t *testing.T) {
	f := newFixture(t)
	a, b := f.node("a"), f.node("b")
	id := f.volume("data", false)
	f.mustPublish(id, a, false)
	var n corev1.Node
	if err := direct.Get(t.Context(), client.ObjectKey{Name: a}, &n); err != nil {
		t.Fatal(err)
	}
	n.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionFalse, Reason: "KubeletStopped"}}
	n.Spec.Taints = []corev1.Taint{{Key: "node.kubernetes.io/unreachable", Effect: corev1.TaintEffectNoExecute}}
	if err := direct.Update(t.Context(), &n); err != nil {
		t.Fatal(err)
	}
	if err := direct.Status().Update(t.Context(), &n); err != nil {
		t.Fatal(err)
	}
	_, err := f.publish(id, b, false)
	wantCode(t, err, codes.FailedPrecondition, "NotReady does not release it")
	if got := f.allowed(id); got != hostNQN(a) {
		t.Fatalf("fence moved to %q", got)
	}
}

func TestStaleHolderIsCleared(t *testing.T) {
	for _, c := range []struct {
		name  string
		loser func(f *fixture, node string)
		state string
	}{
		{"node deleted", func(f *fixture, node string) {
			if err := direct.Delete(f.t.Context(), &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: node}}); err != nil {
				f.t.Fatal(err)
			}
			f.waitCached(&corev1.Node{}, client.ObjectKey{Name: node}, false)
		}, "deleted"},
		{"out-of-service taint", func(f *fixture, node string) {
			var n corev1.Node
			if err := direct.Get(f.t.Context(), client.ObjectKey{Name: node}, &n); err != nil {
				f.t.Fatal(err)
			}
			n.Spec.Taints = append(n.Spec.Taints, corev1.Taint{Key: kube.TaintOutOfService, Value: "nodeshutdown", Effect: corev1.TaintEffectNoExecute})
			if err := direct.Update(f.t.Context(), &n); err != nil {
				f.t.Fatal(err)
			}
			waitFor(f, func(ctx context.Context) bool {
				var got corev1.Node
				if cached.Get(ctx, client.ObjectKey{Name: node}, &got) != nil {
					return false
				}
				for _, t := range got.Spec.Taints {
					if t.Key == kube.TaintOutOfService {
						return true
					}
				}
				return false
			})
		}, "out of service"},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := newFixture(t)
			a, b := f.node("a"), f.node("b")
			id := f.volume("data", false)
			f.mustPublish(id, a, false)
			c.loser(f, a)
			f.mustPublish(id, b, false)
			if got := f.allowed(id); got != hostNQN(b) {
				t.Fatalf("fence = %q, want node b", got)
			}
			if rec := f.persisted(id); nodes(rec) != b {
				t.Fatalf("persisted holders = %s", nodes(rec))
			}
			msg := f.event("PersistentVolumeClaim", "data", kube.ReasonStaleAttachmentCleared)
			if !strings.Contains(msg, "released from node "+a) || !strings.Contains(msg, c.state) || !strings.Contains(msg, b) {
				t.Fatalf("event = %q", msg)
			}
			if v := testutilValue(f.metrics.StaleCleared); v != 1 {
				t.Fatalf("stale-cleared metric = %v", v)
			}
			// Unpublish from the deleted/out-of-service node succeeds and changes nothing.
			if err := f.unpublish(id, a); err != nil {
				t.Fatal(err)
			}
			if got := f.allowed(id); got != hostNQN(b) {
				t.Fatalf("unpublish of the stale node moved the fence to %q", got)
			}
		})
	}
}

func TestNodeWithoutHostNQNIsRefused(t *testing.T) {
	f := newFixture(t)
	bare := f.node("bare", func(n *corev1.Node) { n.Annotations = nil })
	id := f.volume("data", false)
	_, err := f.publish(id, bare, false)
	wantCode(t, err, codes.FailedPrecondition, "has no rds-fence.csi.dev/host-nqn annotation", "node plugin")
	_, err = f.publish(id, f.ns+"-ghost", false)
	wantCode(t, err, codes.NotFound, "does not exist")
	if got := f.allowed(id); got != csi.NobodyNQN {
		t.Fatalf("fence = %q", got)
	}
}
