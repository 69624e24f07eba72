package fencing

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	csipb "github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/rds-fence/rds-fence/csi"
	"github.com/rds-fence/rds-fence/nodeagent"
	"github.com/rds-fence/rds-fence/test/manifests"
)

const deployNamespace = "rds-fence"

// shippedRBAC creates the deployment's namespace, the CSIDriver and the
// RBAC of ServiceAccount sa as manifests/overlays/self-signed renders them.
func shippedRBAC(t *testing.T, sa string) {
	t.Helper()
	objs, err := manifests.Render("overlays/self-signed")
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	if err := direct.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: deployNamespace}}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	policies := append(manifests.Select(objs, "ValidatingAdmissionPolicy"), manifests.Select(objs, "ValidatingAdmissionPolicyBinding")...)
	for _, o := range append(manifests.Select(objs, "CSIDriver"), policies...) {
		if err := direct.Apply(ctx, client.ApplyConfigurationFromUnstructured(o), client.FieldOwner("rds-fence-rbac-test"), client.ForceOwnership); err != nil {
			t.Fatal(err)
		}
	}
	if err := manifests.ApplyRBAC(ctx, direct, objs, deployNamespace, sa); err != nil {
		t.Fatal(err)
	}
}

// clusterEvent waits for an events.k8s.io event with reason about a
// cluster-scoped object (recorded in namespace default).
func clusterEvent(t *testing.T, kind, name, reason string) {
	t.Helper()
	err := wait.PollUntilContextTimeout(t.Context(), 50*time.Millisecond, 20*time.Second, true, func(ctx context.Context) (bool, error) {
		var list corev1.EventList
		if err := direct.List(ctx, &list, client.InNamespace(metav1.NamespaceDefault)); err != nil {
			return false, nil
		}
		for _, e := range list.Items {
			if e.InvolvedObject.Kind == kind && e.InvolvedObject.Name == name && e.Reason == reason {
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		t.Fatalf("no %s event on %s %s", reason, kind, name)
	}
}

// TestControllerRunsWithShippedRBAC runs the controller subcommand's whole
// manager — leader election, store rebuild, CSI publish/unpublish with
// conflict events, the node-loss reconciler deleting a lost node's
// VolumeAttachment, drift checks, the orphan scan's event on the
// CSIDriver — as ServiceAccount rds-fence/rds-fence-controller with the
// RBAC of manifests/, and requires that the API server refused nothing.
func TestControllerRunsWithShippedRBAC(t *testing.T) {
	f := newFixture(t)
	shippedRBAC(t, "rds-fence-controller")
	a, b := f.node("a"), f.node("b")
	id := f.volume("data", false)
	orphan := "pvc-0000000000000000000000000abc"
	f.sim.Sim.Exec(fmt.Sprintf(`/disk add type=file file-path="/storage-pool/kubernetes-volumes/%s.img" file-size=1M slot="%s" nvme-tcp-export=yes nvme-tcp-server-port=4420 nvme-tcp-server-nqn="nqn.2000-02.com.mikrotik:%s"`, orphan, orphan, orphan))
	t.Cleanup(func() { f.sim.Sim.Exec(`/disk remove [find slot="` + orphan + `"]`) })

	asSA, refused := manifests.AsServiceAccount(restCfg, deployNamespace, "rds-fence-controller")
	sock, mgr, reg := wireController(t, f, asSA, "--leader-elect=true", "--leader-election-namespace="+deployNamespace,
		"--orphan-scan-interval=200ms", "--node-sweep-interval=200ms", "--drift-check-interval=300ms")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	ctl := controllerClient(t, f, sock)

	if _, err := ctl.ControllerPublishVolume(t.Context(), &csipb.ControllerPublishVolumeRequest{VolumeId: id, NodeId: a, VolumeCapability: capability(false)}); err != nil {
		t.Fatal(err)
	}
	pv := f.persisted(id).PV
	va := &storagev1.VolumeAttachment{ObjectMeta: metav1.ObjectMeta{Name: f.ns + "-rbac-a"},
		Spec: storagev1.VolumeAttachmentSpec{Attacher: csi.DefaultDriverName, NodeName: a, Source: storagev1.VolumeAttachmentSource{PersistentVolumeName: &pv}}}
	if err := direct.Create(t.Context(), va); err != nil {
		t.Fatal(err)
	}
	va.Status.Attached = true
	if err := direct.Status().Update(t.Context(), va); err != nil {
		t.Fatal(err)
	}
	_, err := ctl.ControllerPublishVolume(t.Context(), &csipb.ControllerPublishVolumeRequest{VolumeId: id, NodeId: b, VolumeCapability: capability(false)})
	wantCode(t, err, codes.FailedPrecondition, "attached to node "+a)
	f.event("PersistentVolumeClaim", "data", "AttachmentConflict")

	if err := direct.Delete(t.Context(), &corev1.Node{ObjectMeta: nodeMeta(a)}); err != nil {
		t.Fatal(err)
	}
	waitFor(f, func(ctx context.Context) bool {
		_, err := ctl.ControllerPublishVolume(ctx, &csipb.ControllerPublishVolumeRequest{VolumeId: id, NodeId: b, VolumeCapability: capability(false)})
		return err == nil
	})
	waitFor(f, func(ctx context.Context) bool {
		return apierrors.IsNotFound(direct.Get(ctx, client.ObjectKeyFromObject(va), &storagev1.VolumeAttachment{}))
	})
	clusterEvent(t, "CSIDriver", csi.DefaultDriverName, "OrphanedDisk")
	waitFor(f, func(context.Context) bool {
		return gathered(t, reg, "rds_fence_drift_checks_total", "trigger", "periodic") > 0
	})
	if _, err := ctl.ControllerUnpublishVolume(t.Context(), &csipb.ControllerUnpublishVolumeRequest{VolumeId: id, NodeId: b}); err != nil {
		t.Fatal(err)
	}
	if got := refused.List(); len(got) > 0 {
		t.Fatalf("the controller, as its ServiceAccount with the shipped RBAC, was refused: %v", got)
	}
}

// TestNodePluginRunsWithShippedRBAC: the node plugin's API calls — the
// host NQN annotation on its Node and its volume events — as
// ServiceAccount rds-fence/rds-fence-node with the shipped RBAC; and that
// RBAC does not let it read Secrets or delete Nodes.
func TestNodePluginRunsWithShippedRBAC(t *testing.T) {
	f := newFixture(t)
	shippedRBAC(t, "rds-fence-node")
	n, other := f.node("rbac-node"), f.node("rbac-other")
	asSA, refused := manifests.AsServiceAccount(restCfg, deployNamespace, "rds-fence-node", n)
	c, err := client.New(asSA, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	nqn := "nqn.2014-08.org.nvmexpress:uuid:0e0e0e0e-0000-4000-8000-00000000rbac"
	if err := nodeagent.PublishHostNQN(t.Context(), c, n, nqn); err != nil {
		t.Fatal(err)
	}
	var got corev1.Node
	if err := direct.Get(t.Context(), client.ObjectKey{Name: n}, &got); err != nil || got.Annotations[nodeagent.AnnotationHostNQN] != nqn {
		t.Fatalf("annotation %q, %v", got.Annotations[nodeagent.AnnotationHostNQN], err)
	}
	b := events.NewBroadcaster(&events.EventSinkImpl{Interface: kubernetes.NewForConfigOrDie(asSA).EventsV1()})
	b.StartRecordingToSink(t.Context().Done())
	defer b.Shutdown()
	rep := nodeagent.NewReporter(prometheus.NewRegistry(), b.NewRecorder(scheme, "rds-fence-node"), n, "nqn.2000-02.com.mikrotik:")
	rep.OnChange(nodeagent.Target{SubsystemNQN: "nqn.2000-02.com.mikrotik:pvc-1"}, nodeagent.Health{State: nodeagent.StateLost, Err: errors.New("connection refused")})
	clusterEvent(t, "Node", n, nodeagent.ReasonVolumeConnectionLost)
	if got := refused.List(); len(got) > 0 {
		t.Fatalf("the node plugin, as its ServiceAccount with the shipped RBAC, was refused: %v", got)
	}
	// least privilege: what it must not do
	if err := c.Delete(t.Context(), &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n}}); !apierrors.IsForbidden(err) {
		t.Errorf("the node plugin may delete Nodes: %v", err)
	}
	if err := c.Get(t.Context(), client.ObjectKey{Namespace: deployNamespace, Name: "rds-fence-rds"}, &corev1.Secret{}); !apierrors.IsForbidden(err) {
		t.Errorf("the node plugin may read Secrets: %v", err)
	}
	if !strings.Contains(strings.Join(refused.List(), " "), "DELETE") {
		t.Errorf("the refusals were not recorded: %v", refused.List())
	}
	// The admission policy: another Node's host NQN, a label on its own
	// Node, and a token without a node name are all refused.
	mallory := "nqn.2014-08.org.nvmexpress:uuid:0e0e0e0e-0000-4000-8000-0000mallory0"
	waitFor(f, func(ctx context.Context) bool { // the policy takes a moment to be enforced
		err := nodeagent.PublishHostNQN(ctx, c, other, mallory)
		return err != nil && strings.Contains(err.Error(), "may change only the Node its pod runs on")
	})
	renewed := "nqn.2014-08.org.nvmexpress:uuid:0e0e0e0e-0000-4000-8000-00000000new0"
	if err := nodeagent.PublishHostNQN(t.Context(), c, n, renewed); err != nil {
		t.Fatalf("with the policy enforced, the node plugin cannot annotate its own Node: %v", err)
	}
	var o corev1.Node
	if err := direct.Get(t.Context(), client.ObjectKey{Name: other}, &o); err != nil || o.Annotations[nodeagent.AnnotationHostNQN] == mallory {
		t.Fatalf("another node's host NQN was changed: %v", err)
	}
	label := []byte(`{"metadata":{"labels":{"rds-fence-test/evil":"yes"}}}`)
	if err := c.Patch(t.Context(), &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n}}, client.RawPatch(types.MergePatchType, label)); err == nil ||
		!strings.Contains(err.Error(), "only the rds-fence.csi.dev/host-nqn annotation") {
		t.Errorf("a label on its own Node: %v", err)
	}
	noNode, _ := manifests.AsServiceAccount(restCfg, deployNamespace, "rds-fence-node")
	cn, err := client.New(noNode, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	if err := nodeagent.PublishHostNQN(t.Context(), cn, n, nqn); err == nil || !strings.Contains(err.Error(), "its token names no node") {
		t.Errorf("a token without a node name: %v", err)
	}
}
