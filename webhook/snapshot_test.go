package webhook

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	kubevirtv1 "kubevirt.io/api/core/v1"

	"github.com/rds-fence/rds-fence/attachment"
)

const driver = "rds-fence.csi.dev"

// world is an in-memory Snapshot built from objects, for the pure
// decision tests (the informer-backed Snapshot is tested with envtest).
type world struct {
	synced   bool
	claims   map[string]*corev1.PersistentVolumeClaim
	pvs      map[string]*corev1.PersistentVolume
	attached map[string][]string
	nodes    map[string]*corev1.Node
	pods     []*corev1.Pod
	vmis     []*kubevirtv1.VirtualMachineInstance
	migs     []*kubevirtv1.VirtualMachineInstanceMigration
}

func newWorld() *world {
	return &world{synced: true, claims: map[string]*corev1.PersistentVolumeClaim{}, pvs: map[string]*corev1.PersistentVolume{},
		attached: map[string][]string{}, nodes: map[string]*corev1.Node{}}
}

func (w *world) Synced() bool { return w.synced }
func (w *world) Claim(ns, name string) (*corev1.PersistentVolumeClaim, bool) {
	c, ok := w.claims[ns+"/"+name]
	return c, ok
}
func (w *world) Volume(name string) (*corev1.PersistentVolume, bool) {
	pv, ok := w.pvs[name]
	return pv, ok
}
func (w *world) Attached(pv string) []string           { return w.attached[pv] }
func (w *world) Node(name string) (*corev1.Node, bool) { n, ok := w.nodes[name]; return n, ok }
func (w *world) PodsUsingClaim(ns, claim string) []*corev1.Pod {
	var out []*corev1.Pod
	for _, p := range w.pods {
		if p.Namespace == ns && contains(podClaims(p), claim) {
			out = append(out, p)
		}
	}
	return out
}
func (w *world) VMIsUsingClaim(ns, claim string) []*kubevirtv1.VirtualMachineInstance {
	var out []*kubevirtv1.VirtualMachineInstance
	for _, v := range w.vmis {
		if v.Namespace == ns && contains(vmiClaims(v), claim) {
			out = append(out, v)
		}
	}
	return out
}
func (w *world) Migration(ns string, uid types.UID) (*kubevirtv1.VirtualMachineInstanceMigration, bool) {
	for _, m := range w.migs {
		if m.Namespace == ns && m.UID == uid {
			return m, true
		}
	}
	return nil, false
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func (w *world) node(name string, labels map[string]string, taints ...corev1.Taint) *world {
	w.nodes[name] = &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}, Spec: corev1.NodeSpec{Taints: taints}}
	return w
}

// volume adds a bound claim and its PV, held by holders (recorded on the PV).
func (w *world) volume(claim string, block, rwx bool, holders ...string) *world {
	mode, access := corev1.PersistentVolumeFilesystem, corev1.ReadWriteOnce
	if block {
		mode = corev1.PersistentVolumeBlock
	}
	if rwx {
		access = corev1.ReadWriteMany
	}
	pvName := "pv-" + claim
	pv := &corev1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: pvName},
		Spec: corev1.PersistentVolumeSpec{AccessModes: []corev1.PersistentVolumeAccessMode{access}, VolumeMode: &mode,
			PersistentVolumeSource: corev1.PersistentVolumeSource{CSI: &corev1.CSIPersistentVolumeSource{Driver: driver, VolumeHandle: "pvc-" + claim}}}}
	if len(holders) > 0 {
		rec := attachment.Record{VolumeID: "pvc-" + claim, Mode: attachment.ModeSingleNode}
		if rwx && block {
			rec.Mode = attachment.ModeMultiNodeBlock
		}
		for _, h := range holders {
			rec.Holders = append(rec.Holders, attachment.Holder{Node: h})
		}
		ann, _ := attachment.Annotations(rec)
		pv.Annotations = map[string]string{attachment.AnnotationAttachment: *ann[attachment.AnnotationAttachment]}
	}
	w.pvs[pvName] = pv
	w.claims["ns/"+claim] = &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: claim},
		Spec: corev1.PersistentVolumeClaimSpec{VolumeName: pvName}}
	return w
}

func pod(name, node string, claims ...string) *corev1.Pod {
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name}, Spec: corev1.PodSpec{NodeName: node}}
	for _, c := range claims {
		p.Spec.Volumes = append(p.Spec.Volumes, corev1.Volume{Name: c, VolumeSource: corev1.VolumeSource{
			PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: c}}})
	}
	return p
}

func vmi(name, uid string, phase kubevirtv1.VirtualMachineInstancePhase, claims ...string) *kubevirtv1.VirtualMachineInstance {
	v := &kubevirtv1.VirtualMachineInstance{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name, UID: types.UID(uid)},
		Status: kubevirtv1.VirtualMachineInstanceStatus{Phase: phase}}
	for _, c := range claims {
		v.Spec.Volumes = append(v.Spec.Volumes, kubevirtv1.Volume{Name: c, VolumeSource: kubevirtv1.VolumeSource{
			PersistentVolumeClaim: &kubevirtv1.PersistentVolumeClaimVolumeSource{PersistentVolumeClaimVolumeSource: corev1.PersistentVolumeClaimVolumeSource{ClaimName: c}}}})
	}
	return v
}
