package webhook

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kubevirtv1 "kubevirt.io/api/core/v1"
)

var opts = Options{Driver: driver}

func check(t *testing.T, d Decision, allowed bool, reason string, parts ...string) {
	t.Helper()
	if d.Allowed != allowed || d.Reason != reason {
		t.Fatalf("decision = %+v, want allowed=%v reason=%s", d, allowed, reason)
	}
	text := d.Message + strings.Join(d.Warnings, " ")
	for _, p := range parts {
		if !strings.Contains(text, p) {
			t.Fatalf("%q does not mention %q", text, p)
		}
	}
}

func TestDecidePodOnNode(t *testing.T) {
	base := func() *world {
		w := newWorld().node("a", nil).node("b", nil).volume("data", false, false, "a")
		w.pods = []*corev1.Pod{pod("writer", "a", "data")}
		return w
	}
	cases := []struct {
		name    string
		w       *world
		pod     *corev1.Pod
		node    string
		allowed bool
		reason  string
		parts   []string
	}{
		{"no claims", base(), pod("p", "b"), "b", true, ReasonNoFencedClaims, nil},
		{"holder node", base(), pod("p", "a", "data"), "a", true, ReasonFree, nil},
		{"other node", base(), pod("p", "b", "data"), "b", false, ReasonHeldElsewhere,
			[]string{"pod ns/p cannot run on node b", "PVC ns/data", "attached to node a", "used by pod ns/writer", "out-of-service"}},
		{"held only by a VolumeAttachment", func() *world {
			w := newWorld().node("a", nil).node("b", nil).volume("data", false, false)
			w.attached["pv-data"] = []string{"a"}
			return w
		}(), pod("p", "b", "data"), "b", false, ReasonHeldElsewhere, []string{"attached to node a"}},
		{"holder deleted", func() *world { w := base(); delete(w.nodes, "a"); return w }(), pod("p", "b", "data"), "b", true, ReasonFree, nil},
		{"holder out of service", func() *world {
			w := base()
			w.node("a", nil, corev1.Taint{Key: "node.kubernetes.io/out-of-service", Effect: corev1.TaintEffectNoExecute})
			return w
		}(), pod("p", "b", "data"), "b", true, ReasonFree, nil},
		{"holder NotReady stays live", func() *world {
			w := base()
			w.node("a", nil, corev1.Taint{Key: "node.kubernetes.io/unreachable", Effect: corev1.TaintEffectNoExecute})
			return w
		}(), pod("p", "b", "data"), "b", false, ReasonHeldElsewhere, nil},
		{"other driver", func() *world {
			w := base()
			w.pvs["pv-data"].Spec.CSI.Driver = "ebs.csi.aws.com"
			return w
		}(), pod("p", "b", "data"), "b", true, ReasonNoFencedClaims, nil},
		{"unbound claim", func() *world { w := base(); w.claims["ns/data"].Spec.VolumeName = ""; return w }(), pod("p", "b", "data"), "b", true, ReasonNoFencedClaims, nil},
		{"cache not synced", func() *world { w := base(); w.synced = false; return w }(), pod("p", "a", "data"), "a", false, ReasonNotSynced, []string{"not synced"}},
		{"PV missing from cache", func() *world { w := base(); delete(w.pvs, "pv-data"); return w }(), pod("p", "b", "data"), "b", false, ReasonUnknown, []string{"not in the cache"}},
		{"unreadable record", func() *world {
			w := base()
			w.pvs["pv-data"].Annotations["rds-fence.csi.dev/attachment"] = "{"
			return w
		}(), pod("p", "a", "data"), "a", false, ReasonUnknown, []string{"cannot be read"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			check(t, DecidePodOnNode(c.pod, c.node, "user", c.w, opts), c.allowed, c.reason, c.parts...)
		})
	}
}

func TestDecidePodUnscheduled(t *testing.T) {
	w := newWorld().node("a", map[string]string{"zone": "x"}).node("b", map[string]string{"zone": "y"}).volume("data", false, false, "a")
	free := pod("p", "", "data")
	check(t, DecidePodUnscheduled(free, "user", w, opts), true, ReasonHeldMayWait, "attached to node a")
	pinned := pod("p", "", "data")
	pinned.Spec.NodeSelector = map[string]string{"zone": "y"}
	check(t, DecidePodUnscheduled(pinned, "user", w, opts), false, ReasonHolderExcluded, "can never start", "excludes that node", "node a")
	affine := pod("p", "", "data")
	affine.Spec.Affinity = &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{
		NodeSelectorTerms: []corev1.NodeSelectorTerm{{MatchExpressions: []corev1.NodeSelectorRequirement{{Key: "zone", Operator: corev1.NodeSelectorOpIn, Values: []string{"x"}}}}}}}}
	check(t, DecidePodUnscheduled(affine, "user", w, opts), true, ReasonHeldMayWait)
}

func TestDecideMigrationTarget(t *testing.T) {
	setup := func() *world {
		w := newWorld().node("a", nil).node("b", nil).node("c", nil).volume("disk", true, true, "a")
		w.vmis = []*kubevirtv1.VirtualMachineInstance{vmi("vm1", "vmi-uid", kubevirtv1.Running, "disk")}
		w.migs = []*kubevirtv1.VirtualMachineInstanceMigration{{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "mig1", UID: "mig-uid"},
			Spec: kubevirtv1.VirtualMachineInstanceMigrationSpec{VMIName: "vm1"}, Status: kubevirtv1.VirtualMachineInstanceMigrationStatus{Phase: kubevirtv1.MigrationRunning}}}
		return w
	}
	target := func() *corev1.Pod {
		p := pod("virt-launcher-vm1-target", "b", "disk")
		p.Labels = map[string]string{LabelMigrationJobUID: "mig-uid", LabelCreatedBy: "vmi-uid"}
		return p
	}
	check(t, DecidePodOnNode(target(), "b", DefaultKubeVirtUser, setup(), opts), true, ReasonMigrationTarget, "live migration")
	check(t, DecidePodOnNode(target(), "b", "system:serviceaccount:ns:mallory", setup(), opts), false, ReasonMigrationDenied, "not by KubeVirt")
	forged := target()
	forged.Labels[LabelMigrationJobUID] = "made-up"
	check(t, DecidePodOnNode(forged, "b", DefaultKubeVirtUser, setup(), opts), false, ReasonMigrationDenied, "no VirtualMachineInstanceMigration")
	wrongVMI := target()
	wrongVMI.Labels[LabelCreatedBy] = "other-vmi"
	check(t, DecidePodOnNode(wrongVMI, "b", DefaultKubeVirtUser, setup(), opts), false, ReasonMigrationDenied, "not created for VMI vm1")
	done := setup()
	done.migs[0].Status.Phase = kubevirtv1.MigrationSucceeded
	check(t, DecidePodOnNode(target(), "b", DefaultKubeVirtUser, done, opts), false, ReasonMigrationDenied, "has finished")
	third := setup().volume("disk", true, true, "a", "b")
	third.vmis = setup().vmis
	third.migs = setup().migs
	check(t, DecidePodOnNode(func() *corev1.Pod { p := target(); p.Spec.NodeName = "c"; return p }(), "c", DefaultKubeVirtUser, third, opts),
		false, ReasonMigrationDenied, "at most two")
	// RWX block without migration labels: a plain second consumer is refused.
	check(t, DecidePodOnNode(pod("p", "b", "disk"), "b", "user", setup(), opts), false, ReasonHeldElsewhere, "only for a KubeVirt live migration")
	// RWO volume: migration labels do not help.
	rwo := newWorld().node("a", nil).node("b", nil).volume("disk", false, false, "a")
	check(t, DecidePodOnNode(target(), "b", DefaultKubeVirtUser, rwo, opts), false, ReasonHeldElsewhere)

	// The usual path: KubeVirt creates the target pod unscheduled, the
	// scheduler binds it. The creator is checked at CREATE, the migration
	// again at the binding.
	unscheduled := func() *corev1.Pod { p := target(); p.Spec.NodeName = ""; return p }
	check(t, DecidePodUnscheduled(unscheduled(), DefaultKubeVirtUser, setup(), opts), true, ReasonMigrationTarget)
	check(t, DecidePodUnscheduled(unscheduled(), "system:serviceaccount:ns:mallory", setup(), opts), false, ReasonMigrationDenied, "not by KubeVirt")
	check(t, DecideBinding(unscheduled(), "b", setup(), opts), true, ReasonMigrationTarget)
	check(t, DecideBinding(unscheduled(), "b", done, opts), false, ReasonMigrationDenied, "has finished")
	check(t, DecideBinding(unscheduled(), "c", third, opts), false, ReasonMigrationDenied, "at most two")
	// A plain pod on an RWX block claim may be created unscheduled; only
	// its binding elsewhere is refused.
	check(t, DecidePodUnscheduled(pod("p", "", "disk"), "user", setup(), opts), true, ReasonFree)
	check(t, DecideBinding(pod("p", "", "disk"), "b", setup(), opts), false, ReasonHeldElsewhere)
	check(t, DecideBinding(pod("p", "", "disk"), "a", setup(), opts), true, ReasonFree)
}

func TestDecideVMI(t *testing.T) {
	w := newWorld().node("a", nil).volume("disk", false, false)
	w.vmis = []*kubevirtv1.VirtualMachineInstance{vmi("vm1", "u1", kubevirtv1.Running, "disk")}
	w.vmis[0].Status.NodeName = "a"
	check(t, DecideVMI(vmi("vm2", "u2", "", "disk"), w, opts), false, ReasonVMIInUse, "in use by VMI ns/vm1", "Running on node a")
	w.vmis[0].Status.Phase = kubevirtv1.Succeeded
	check(t, DecideVMI(vmi("vm2", "u2", "", "disk"), w, opts), true, ReasonFree)
	// Held by a node (a restarted VM whose old attachment is being
	// released): admitted with a warning, unless the VMI can never run there.
	held := newWorld().node("a", map[string]string{"zone": "z1"}).volume("disk", false, false, "a")
	check(t, DecideVMI(vmi("vm2", "u2", "", "disk"), held, opts), true, ReasonHeldMayWait, "attached to node a")
	pinned := vmi("vm2", "u2", "", "disk")
	pinned.Spec.NodeSelector = map[string]string{"zone": "z2"}
	check(t, DecideVMI(pinned, held, opts), false, ReasonHolderExcluded, "can never start", "attached to node a")
	check(t, DecideVMI(vmi("vm3", "u3", ""), held, opts), true, ReasonNoFencedClaims)
	// Every kind of claim a VMI can mount is checked.
	for name, src := range map[string]kubevirtv1.VolumeSource{
		"dataVolume": {DataVolume: &kubevirtv1.DataVolumeSource{Name: "disk"}},
		"ephemeral":  {Ephemeral: &kubevirtv1.EphemeralVolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "disk"}}},
		"memoryDump": {MemoryDump: &kubevirtv1.MemoryDumpVolumeSource{PersistentVolumeClaimVolumeSource: kubevirtv1.PersistentVolumeClaimVolumeSource{PersistentVolumeClaimVolumeSource: corev1.PersistentVolumeClaimVolumeSource{ClaimName: "disk"}}}},
	} {
		v := vmi("vm4", "u4", "")
		v.Spec.NodeSelector = map[string]string{"zone": "z2"}
		v.Spec.Volumes = []kubevirtv1.Volume{{Name: "v", VolumeSource: src}}
		if d := DecideVMI(v, held, opts); d.Allowed || d.Reason != ReasonHolderExcluded {
			t.Errorf("%s volume: %+v", name, d)
		}
	}
}

func TestDecideMigrationLabels(t *testing.T) {
	w := newWorld().node("a", nil).volume("disk", true, true, "a").volume("data", false, false, "a")
	labelled := pod("p", "", "disk")
	labelled.Labels = map[string]string{LabelMigrationJobUID: "mig-uid", LabelCreatedBy: "vmi-uid"}
	check(t, DecideMigrationLabels(labelled, "mallory", w, opts), false, ReasonMigrationDenied, "may only be set by KubeVirt", `"mallory"`)
	check(t, DecideMigrationLabels(labelled, DefaultKubeVirtUser, w, opts), true, ReasonNoFencedClaims)
	check(t, DecideMigrationLabels(pod("p", "", "data"), "mallory", w, opts), true, ReasonNoFencedClaims)
	// A labelled pod on an RWX block claim nobody holds yet: still only KubeVirt.
	free := newWorld().node("a", nil).volume("disk", true, true)
	check(t, DecidePodUnscheduled(labelled, "mallory", free, opts), false, ReasonMigrationDenied, "not by KubeVirt")
}
