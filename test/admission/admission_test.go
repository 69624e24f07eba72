package admission

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	kubevirtv1 "kubevirt.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/rds-fence/rds-fence/webhook"
)

const kubevirtController = "system:serviceaccount:kubevirt:kubevirt-controller"

// bind posts a scheduler-style Binding of the pod to node.
func bind(t testing.TB, c client.Client, ns, pod, node string) error {
	t.Helper()
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: pod}}
	b := &corev1.Binding{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: pod},
		Target: corev1.ObjectReference{Kind: "Node", Name: node}}
	return c.SubResource("binding").Create(t.Context(), p, b)
}

func denied(t testing.TB, err error, parts ...string) {
	t.Helper()
	if err == nil {
		t.Fatal("admitted, want a denial")
	}
	if !apierrors.IsForbidden(err) && !apierrors.IsBadRequest(err) {
		t.Fatalf("error %v is not an admission denial", err)
	}
	mustContain(t, "denial", err.Error(), append([]string{`admission webhook "`}, parts...)...)
}

func TestPodsAndBindings(t *testing.T) {
	f := newFixture(t)
	a, b := f.node("a", map[string]string{"zone": "z1"}), f.node("b", map[string]string{"zone": "z2"})
	f.volume("data", false, a)
	admin, warns := clientAs(t, "")

	// A pod created on node b is refused, naming the claim and the holder.
	err := admin.Create(t.Context(), podUsing(f.ns, "on-b", b, "data"))
	denied(t, err, "pods.rds-fence.csi.dev", "PVC "+f.ns+"/data", "attached to node "+a, "out-of-service")
	mustContain(t, "event", f.event("data", webhook.EventAdmissionDenied), "attached to node "+a)

	// On the holder it is admitted.
	if err := admin.Create(t.Context(), podUsing(f.ns, "on-a", a, "data")); err != nil {
		t.Fatalf("pod on the holder node: %v", err)
	}
	// Unscheduled: admitted with a warning naming the holder...
	warns.take()
	if err := admin.Create(t.Context(), podUsing(f.ns, "floating", "", "data")); err != nil {
		t.Fatalf("unscheduled pod: %v", err)
	}
	if w := warns.take(); len(w) != 1 {
		t.Fatalf("warnings %q, want one naming the holder", w)
	} else {
		mustContain(t, "warning", w[0], "attached to node "+a)
	}
	// ...and a scheduler binding it to another node is refused, to the holder admitted.
	f.cached(&corev1.Pod{}, client.ObjectKey{Namespace: f.ns, Name: "on-a"}) // named in the message
	denied(t, bind(t, admin, f.ns, "floating", b), "bindings.rds-fence.csi.dev", "cannot run on node "+b, "used by pod "+f.ns+"/on-a")
	if err := bind(t, admin, f.ns, "floating", a); err != nil {
		t.Fatalf("binding to the holder: %v", err)
	}
	// Unscheduled but pinned away from the holder: it could never start.
	pinned := podUsing(f.ns, "pinned", "", "data")
	pinned.Spec.NodeSelector = map[string]string{"zone": "z2"}
	denied(t, admin.Create(t.Context(), pinned), "can never start", "excludes that node")
}

func TestPodWithoutClaimsNeverSent(t *testing.T) {
	f := newFixture(t)
	n := f.node("a", nil)
	before := decisions("pods")
	p := podUsing(f.ns, "plain", n)
	p.Spec.Volumes = []corev1.Volume{{Name: "scratch", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
	if err := direct.Create(t.Context(), p); err != nil {
		t.Fatal(err)
	}
	// The same request with a claim is sent (the counter can move).
	if err := direct.Create(t.Context(), podUsing(f.ns, "claimed", n, "unbound"), client.DryRunAll); err != nil {
		t.Fatal(err)
	}
	if got := decisions("pods"); got != before+1 {
		t.Fatalf("pods decisions went from %v to %v; want exactly one (the pod with a claim)", before, got)
	}
}

func TestExcludedNamespaceNeverSent(t *testing.T) {
	f := newFixture(t)
	n := f.node("a", nil)
	// The driver's own namespace and kube-system are never sent, whatever
	// their pods mount.
	before := decisions("pods")
	for _, ns := range []string{webhookNamespace, "kube-system"} {
		if err := direct.Create(t.Context(), podUsing(ns, "driver-pod", n, "data"), client.DryRunAll); err != nil {
			t.Fatalf("pod in %s: %v", ns, err)
		}
	}
	if err := direct.Create(t.Context(), podUsing(f.ns, "user-pod", n, "data"), client.DryRunAll); err != nil {
		t.Fatal(err)
	}
	if got := decisions("pods"); got != before+1 {
		t.Fatalf("pods decisions went from %v to %v; want exactly one (the pod outside the excluded namespaces)", before, got)
	}
}

func vmiUsing(ns, name string, claims ...string) *kubevirtv1.VirtualMachineInstance {
	v := &kubevirtv1.VirtualMachineInstance{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
	for _, c := range claims {
		v.Spec.Volumes = append(v.Spec.Volumes, kubevirtv1.Volume{Name: c, VolumeSource: kubevirtv1.VolumeSource{
			PersistentVolumeClaim: &kubevirtv1.PersistentVolumeClaimVolumeSource{PersistentVolumeClaimVolumeSource: corev1.PersistentVolumeClaimVolumeSource{ClaimName: c}}}})
	}
	return v
}

func TestSecondVMIOnClaimDenied(t *testing.T) {
	f := newFixture(t)
	f.volume("disk", false)
	first := vmiUsing(f.ns, "vm1", "disk")
	if err := direct.Create(t.Context(), first); err != nil {
		t.Fatalf("first VMI: %v", err)
	}
	first.Status.Phase = kubevirtv1.Running
	first.Status.NodeName = "node-x"
	if err := direct.Status().Update(t.Context(), first); err != nil {
		t.Fatal(err)
	}
	f.cached(&kubevirtv1.VirtualMachineInstance{}, client.ObjectKeyFromObject(first))
	err := direct.Create(t.Context(), vmiUsing(f.ns, "vm2", "disk"))
	denied(t, err, "vmis.rds-fence.csi.dev", "in use by VMI "+f.ns+"/vm1")
	// Once the first has finished, a new VMI may use the claim.
	first.Status.Phase = kubevirtv1.Succeeded
	if err := direct.Status().Update(t.Context(), first); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a VMI admitted after the first finished", func() error {
		return direct.Create(t.Context(), vmiUsing(f.ns, "vm2", "disk"), client.DryRunAll)
	})
}

// TestMigrationTarget: a virt-launcher target pod for a live migration of
// an RWX block volume is admitted only with a live migration object for
// the same VMI, created by KubeVirt; forged labels are refused.
func TestMigrationTarget(t *testing.T) {
	f := newFixture(t)
	a, b := f.node("a", nil), f.node("b", nil)
	f.volume("vmdisk", true, a)
	vmi := vmiUsing(f.ns, "vm1", "vmdisk")
	if err := direct.Create(t.Context(), vmi); err != nil {
		t.Fatal(err)
	}
	vmi.Status.Phase, vmi.Status.NodeName = kubevirtv1.Running, a
	if err := direct.Status().Update(t.Context(), vmi); err != nil {
		t.Fatal(err)
	}
	mig := &kubevirtv1.VirtualMachineInstanceMigration{ObjectMeta: metav1.ObjectMeta{Namespace: f.ns, Name: "mig1"},
		Spec: kubevirtv1.VirtualMachineInstanceMigrationSpec{VMIName: "vm1"}}
	if err := direct.Create(t.Context(), mig); err != nil {
		t.Fatal(err)
	}
	mig.Status.Phase = kubevirtv1.MigrationScheduling
	if err := direct.Status().Update(t.Context(), mig); err != nil {
		t.Fatal(err)
	}
	f.cached(&kubevirtv1.VirtualMachineInstance{}, client.ObjectKeyFromObject(vmi))
	f.cached(&kubevirtv1.VirtualMachineInstanceMigration{}, client.ObjectKeyFromObject(mig))

	target := func(name, migUID string) *corev1.Pod {
		p := podUsing(f.ns, name, "", "vmdisk")
		p.Labels = map[string]string{webhook.LabelMigrationJobUID: migUID, webhook.LabelCreatedBy: string(vmi.UID)}
		return p
	}
	kubevirt, _ := clientAs(t, kubevirtController)
	if err := kubevirt.Create(t.Context(), target("virt-launcher-vm1-target", string(mig.UID))); err != nil {
		t.Fatalf("migration target created by KubeVirt: %v", err)
	}
	if err := bind(t, direct, f.ns, "virt-launcher-vm1-target", b); err != nil {
		t.Fatalf("binding the migration target to %s: %v", b, err)
	}
	// The same pod with a made-up migration UID: no migration object.
	denied(t, kubevirt.Create(t.Context(), target("forged", string(types.UID("3f1c0d7e-0000-4000-8000-000000000000")))),
		"no VirtualMachineInstanceMigration")
	// The right labels, created by someone else than KubeVirt.
	mallory, _ := clientAs(t, "mallory")
	denied(t, mallory.Create(t.Context(), target("impostor", string(mig.UID))), "not by KubeVirt")
	// A plain pod on the RWX block claim bound to another node: refused.
	if err := direct.Create(t.Context(), podUsing(f.ns, "plain", "", "vmdisk")); err != nil {
		t.Fatal(err)
	}
	denied(t, bind(t, direct, f.ns, "plain", b), "only for a KubeVirt live migration")

	// Labels added after CREATE by someone else than KubeVirt: refused,
	// so a binding can trust them.
	if err := mallory.Create(t.Context(), podUsing(f.ns, "late", "", "vmdisk")); err != nil {
		t.Fatal(err)
	}
	label := func(c client.Client) error {
		p := &corev1.Pod{}
		if err := c.Get(t.Context(), client.ObjectKey{Namespace: f.ns, Name: "late"}, p); err != nil {
			return err
		}
		orig := p.DeepCopy()
		p.Labels = map[string]string{webhook.LabelMigrationJobUID: string(mig.UID), webhook.LabelCreatedBy: string(vmi.UID)}
		return c.Patch(t.Context(), p, client.MergeFrom(orig))
	}
	denied(t, label(mallory), "pod-labels.rds-fence.csi.dev", "may only be set by KubeVirt", `"mallory"`)
	if err := label(kubevirt); err != nil {
		t.Fatalf("KubeVirt setting the labels: %v", err)
	}
}

// TestBindingOfAnotherIncarnation: a Binding whose UID is not the pod's
// (the pod was recreated under the same name) is refused, not judged by
// the wrong pod.
func TestBindingOfAnotherIncarnation(t *testing.T) {
	f := newFixture(t)
	a := f.node("a", nil)
	f.volume("data", false, a)
	if err := direct.Create(t.Context(), podUsing(f.ns, "p", "", "data")); err != nil {
		t.Fatal(err)
	}
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: f.ns, Name: "p"}}
	b := &corev1.Binding{ObjectMeta: metav1.ObjectMeta{Namespace: f.ns, Name: "p", UID: "0b5e6b9a-0000-4000-8000-000000000000"},
		Target: corev1.ObjectReference{Kind: "Node", Name: a}}
	denied(t, direct.SubResource("binding").Create(t.Context(), p, b), "but the binding is for uid 0b5e6b9a-0000-4000-8000-000000000000")
}

// TestVMIOnHeldClaim: a VMI whose RWO claim is still attached elsewhere (a
// restarted VM) is admitted with a warning, unless it can never run there.
func TestVMIOnHeldClaim(t *testing.T) {
	f := newFixture(t)
	a := f.node("a", map[string]string{"zone": "z1"})
	f.volume("disk", false, a)
	c, warns := clientAs(t, "")
	if err := c.Create(t.Context(), vmiUsing(f.ns, "restarted", "disk")); err != nil {
		t.Fatalf("VMI on a claim still attached to %s: %v", a, err)
	}
	if w := warns.take(); len(w) != 1 {
		t.Fatalf("warnings %q, want one naming the holder", w)
	} else {
		mustContain(t, "warning", w[0], "attached to node "+a)
	}
	// Another VMI on the same claim: refused, it is in use by the first.
	f.cached(&kubevirtv1.VirtualMachineInstance{}, client.ObjectKey{Namespace: f.ns, Name: "restarted"})
	denied(t, c.Create(t.Context(), vmiUsing(f.ns, "second", "disk")), "vmis.rds-fence.csi.dev", "in use by VMI "+f.ns+"/restarted")
	// A VMI pinned away from the node holding its claim could never start.
	f.volume("disk2", false, a)
	pinned := vmiUsing(f.ns, "pinned", "disk2")
	pinned.Spec.NodeSelector = map[string]string{"zone": "z2"}
	denied(t, c.Create(t.Context(), pinned), "vmis.rds-fence.csi.dev", "can never start", "attached to node "+a)
}

func TestWarnAndDryRunModes(t *testing.T) {
	f := newFixture(t)
	a, b := f.node("a", nil), f.node("b", nil)
	f.volume("data", false, a)
	t.Cleanup(func() { hook.Handler.SetMode(webhook.ModeEnforce) })

	hook.Handler.SetMode(webhook.ModeWarn)
	c, warns := clientAs(t, "")
	if err := c.Create(t.Context(), podUsing(f.ns, "warned", b, "data")); err != nil {
		t.Fatalf("warn mode: %v", err)
	}
	w := warns.take()
	if len(w) != 1 {
		t.Fatalf("warn mode warnings %q", w)
	}
	mustContain(t, "warning", w[0], "would refuse", "attached to node "+a)
	f.eventFor("data", webhook.EventAdmissionWouldDeny, "pod "+f.ns+"/warned")

	// Another claim: events of one reason on one claim merge into a series.
	f.volume("data2", false, a)
	hook.Handler.SetMode(webhook.ModeDryRun)
	before := decisions("pods")
	if err := c.Create(t.Context(), podUsing(f.ns, "dry", b, "data2")); err != nil {
		t.Fatalf("dry-run mode: %v", err)
	}
	if w := warns.take(); len(w) != 0 {
		t.Fatalf("dry-run mode must not warn: %q", w)
	}
	if decisions("pods") != before+1 {
		t.Fatal("dry-run decision not counted")
	}
	f.eventFor("data2", webhook.EventAdmissionWouldDeny, "pod "+f.ns+"/dry")
}

// TestDryRunRequestHasNoEvent: a dryRun request is answered like any other
// but records no event.
func TestDryRunRequestHasNoEvent(t *testing.T) {
	f := newFixture(t)
	a, b := f.node("a", nil), f.node("b", nil)
	f.volume("data", false, a)
	denied(t, direct.Create(t.Context(), podUsing(f.ns, "dry", b, "data"), client.DryRunAll), "attached to node "+a)
	// A real request afterwards: its event is the only one.
	denied(t, direct.Create(t.Context(), podUsing(f.ns, "real", b, "data")), "attached to node "+a)
	f.event("data", webhook.EventAdmissionDenied)
	var list corev1.EventList
	if err := direct.List(t.Context(), &list, client.InNamespace(f.ns)); err != nil {
		t.Fatal(err)
	}
	for _, e := range list.Items {
		if e.Reason == webhook.EventAdmissionDenied {
			mustContain(t, "event", e.Message, "pod "+f.ns+"/real")
			if e.Count > 1 || (e.Series != nil && e.Series.Count > 1) {
				t.Fatalf("event counted the dryRun request too: %+v", e)
			}
		}
	}
}

func eventually(t testing.TB, what string, f func() error) {
	t.Helper()
	var last error
	err := wait.PollUntilContextTimeout(t.Context(), 50*time.Millisecond, 10*time.Second, true, func(context.Context) (bool, error) {
		last = f()
		return last == nil, nil
	})
	if err != nil {
		t.Fatalf("%s: %v", what, last)
	}
}
