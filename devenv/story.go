package devenv

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/rds-fence/rds-fence/csi"
	"github.com/rds-fence/rds-fence/rds"
)

// Step is one step of the story: what happened, how long it took, and
// what the system said.
type Step struct {
	Name   string
	Took   time.Duration
	Detail string
}

// Report is the story as it ran.
type Report struct {
	Steps []Step
	// NodeLossToAttached: from the Node's deletion to the second pod's
	// volume attached on the other node.
	NodeLossToAttached time.Duration
	Total              time.Duration
}

// story is one run's state: the namespace, the nodes, the RDS client.
type story struct {
	e      *Env
	ns     string
	a, b   string
	rds    *rds.Client
	report *Report
	last   time.Time
}

func (s *story) step(name, detail string) {
	now := time.Now()
	st := Step{Name: name, Took: now.Sub(s.last), Detail: detail}
	s.last = now
	s.report.Steps = append(s.report.Steps, st)
	s.e.say("[%6.2fs] %s", st.Took.Seconds(), name)
	if detail != "" {
		s.e.say("          %s", strings.ReplaceAll(detail, "\n", "\n          "))
	}
}

// until polls cond every 50ms for at most timeout; the error names what
// was awaited and cond's last word.
func until(ctx context.Context, timeout time.Duration, what string, cond func(context.Context) (bool, string)) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	last := ""
	for {
		ok, why := cond(ctx)
		if ok {
			return nil
		}
		if why != "" {
			last = why
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: not within %s (%s)", what, timeout, last)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func claimVolume(claim string) corev1.Volume {
	return corev1.Volume{Name: "data", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: claim}}}
}

func (s *story) pod(name, claim string, mutate func(*corev1.Pod)) *corev1.Pod {
	no := false
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: s.ns},
		Spec: corev1.PodSpec{AutomountServiceAccountToken: &no, Volumes: []corev1.Volume{claimVolume(claim)},
			Containers: []corev1.Container{{Name: "app", Image: "busybox", VolumeMounts: []corev1.VolumeMount{{Name: "data", MountPath: "/data"}}}}}}
	if mutate != nil {
		mutate(p)
	}
	return p
}

// Story plays the fencing story through the API and checks every step:
// a claim provisioned for a pod on node A and attached there; a pod for
// node B refused by the webhook; a scheduler binding to node B refused; a
// VolumeAttachment for node B (as if the webhook were bypassed) failing
// with FAILED_PRECONDITION and an AttachmentConflict event; node A
// deleted and its attachment cleared by the reconciler; the pod on node B
// admitted and attached; the RDS fence following the holder throughout.
// It needs two nodes. ns is created for the story.
func (e *Env) Story(ctx context.Context, ns string) (*Report, error) {
	if len(e.Nodes) < 2 {
		return nil, errors.New("the story needs two nodes")
	}
	c, err := e.RDS()
	if err != nil {
		return nil, err
	}
	defer func() { _ = c.Close() }()
	begin := time.Now()
	s := &story{e: e, ns: ns, a: e.Nodes[0], b: e.Nodes[1], rds: c, report: &Report{}, last: begin}
	if err := s.run(ctx); err != nil {
		return s.report, err
	}
	s.report.Total = time.Since(begin)
	return s.report, nil
}

func (s *story) run(ctx context.Context) error {
	k := s.e.Client
	if err := k.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: s.ns}}); err != nil {
		return err
	}
	if err := until(ctx, 30*time.Second, "the default ServiceAccount", func(ctx context.Context) (bool, string) {
		return k.Get(ctx, client.ObjectKey{Namespace: s.ns, Name: "default"}, &corev1.ServiceAccount{}) == nil, ""
	}); err != nil {
		return err
	}
	sc := "rds-fence"
	pvc := &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Name: "data", Namespace: s.ns},
		Spec: corev1.PersistentVolumeClaimSpec{StorageClassName: &sc, AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("64Mi")}}}}
	if err := k.Create(ctx, pvc); err != nil {
		return err
	}
	onA := s.pod("app-a", "data", func(p *corev1.Pod) { p.Spec.NodeSelector = map[string]string{corev1.LabelHostname: s.a} })
	if err := k.Create(ctx, onA); err != nil {
		return err
	}
	var pv corev1.PersistentVolume
	if err := until(ctx, 60*time.Second, "claim data bound to a provisioned volume", func(ctx context.Context) (bool, string) {
		if err := k.Get(ctx, client.ObjectKeyFromObject(pvc), pvc); err != nil || pvc.Spec.VolumeName == "" {
			return false, fmt.Sprintf("claim phase %s", pvc.Status.Phase)
		}
		return k.Get(ctx, client.ObjectKey{Name: pvc.Spec.VolumeName}, &pv) == nil, ""
	}); err != nil {
		return err
	}
	id := pv.Spec.CSI.VolumeHandle
	s.step("PVC provisioned", fmt.Sprintf("claim %s/data bound to %s (RDS disk %s), provisioned when pod app-a was scheduled to %s", s.ns, pv.Name, id, s.a))

	if err := s.running(ctx, onA); err != nil {
		return err
	}
	if err := s.fence(ctx, id, s.a); err != nil {
		return err
	}
	s.step("pod on "+s.a+" attached", fmt.Sprintf("VolumeAttachment attached, volume staged and published by %s's node plugin; the RDS admits only %s's host NQN", s.a, s.a))

	err := k.Create(ctx, s.pod("app-b", "data", func(p *corev1.Pod) { p.Spec.NodeName = s.b }))
	if err == nil || !strings.Contains(err.Error(), "denied the request") || !strings.Contains(err.Error(), s.a) {
		return fmt.Errorf("a pod for %s on a claim %s holds was not refused by the webhook: %v", s.b, s.a, err)
	}
	s.step("pod for "+s.b+" refused by the webhook", err.Error())

	manual := s.pod("app-b-manual", "data", func(p *corev1.Pod) { p.Spec.SchedulerName = "rds-fence-demo-manual" })
	if err := k.Create(ctx, manual); err != nil {
		return fmt.Errorf("an unscheduled pod that may still go to %s was refused: %w", s.a, err)
	}
	err = s.e.Clientset.CoreV1().Pods(s.ns).Bind(ctx, &corev1.Binding{ObjectMeta: metav1.ObjectMeta{Name: manual.Name, Namespace: s.ns, UID: manual.UID},
		Target: corev1.ObjectReference{Kind: "Node", Name: s.b}}, metav1.CreateOptions{})
	if err == nil || !strings.Contains(err.Error(), "denied the request") {
		return fmt.Errorf("a binding of a pod on the claim to %s was not refused: %v", s.b, err)
	}
	s.step("scheduler binding to "+s.b+" refused by the webhook", err.Error())
	if err := k.Delete(ctx, manual); err != nil {
		return err
	}

	if err := s.bypass(ctx, &pv); err != nil {
		return err
	}

	lost := time.Now()
	if err := k.Delete(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: s.a}}); err != nil {
		return err
	}
	msg, err := s.event(ctx, "PersistentVolumeClaim", "data", "StaleAttachmentCleared")
	if err != nil {
		return err
	}
	if err := until(ctx, 30*time.Second, "node "+s.a+"'s VolumeAttachment removed", func(ctx context.Context) (bool, string) {
		va, err := s.attachmentOf(ctx, pv.Name, s.a)
		return err == nil && va == nil, ""
	}); err != nil {
		return err
	}
	s.step(s.a+" deleted: the reconciler freed the volume", msg)
	// The pod on the lost node is orphaned: PodGC force-deletes it after
	// its 40s quarantine; until then the attach-detach controller keeps
	// the claim wanted on the lost node and refuses a Multi-Attach. Do
	// what PodGC will do, now.
	zero := int64(0)
	if err := k.Delete(ctx, onA, &client.DeleteOptions{GracePeriodSeconds: &zero}); err != nil && !apierrors.IsNotFound(err) {
		return err
	}

	onB := s.pod("app-b", "data", func(p *corev1.Pod) { p.Spec.NodeSelector = map[string]string{corev1.LabelHostname: s.b} })
	if err := k.Create(ctx, onB); err != nil {
		return fmt.Errorf("the pod for %s was refused after %s was deleted: %w", s.b, s.a, err)
	}
	s.e.say("          pod app-b admitted; the attach-detach controller still counts the volume as mounted on %s until its next state sync finds the VolumeAttachment gone (--attach-detach-reconcile-sync-period, 1 min by default)", s.a)
	if err := until(ctx, 120*time.Second, "the volume attached to "+s.b, func(ctx context.Context) (bool, string) {
		va, err := s.attachmentOf(ctx, pv.Name, s.b)
		if err != nil || va == nil || !va.Status.Attached {
			return false, attachState(va)
		}
		return true, ""
	}); err != nil {
		return fmt.Errorf("%w; events of pod %s: %s", err, onB.Name, s.eventsOf(ctx, "Pod", onB.Name))
	}
	s.report.NodeLossToAttached = time.Since(lost)
	if err := s.running(ctx, onB); err != nil {
		return err
	}
	if err := s.fence(ctx, id, s.b); err != nil {
		return err
	}
	s.step("pod on "+s.b+" attached", fmt.Sprintf("%s after %s was deleted (its orphaned pod force-deleted as PodGC would); the RDS fence now admits only %s's host NQN",
		s.report.NodeLossToAttached.Round(time.Millisecond), s.a, s.b))
	return nil
}

// bypass creates a VolumeAttachment for node B directly, as an attacher
// would if the webhook had been bypassed: the controller refuses it.
func (s *story) bypass(ctx context.Context, pv *corev1.PersistentVolume) error {
	k := s.e.Client
	name := pv.Name
	va := &storagev1.VolumeAttachment{ObjectMeta: metav1.ObjectMeta{Name: "bypass-" + s.ns},
		Spec: storagev1.VolumeAttachmentSpec{Attacher: csi.DefaultDriverName, NodeName: s.b, Source: storagev1.VolumeAttachmentSource{PersistentVolumeName: &name}}}
	if err := k.Create(ctx, va); err != nil {
		return err
	}
	var attachErr string
	if err := until(ctx, 60*time.Second, "the attacher's answer for "+s.b, func(ctx context.Context) (bool, string) {
		if err := k.Get(ctx, client.ObjectKeyFromObject(va), va); err != nil {
			return false, err.Error()
		}
		if va.Status.Attached {
			return true, ""
		}
		if va.Status.AttachError != nil {
			attachErr = va.Status.AttachError.Message
			return true, ""
		}
		return false, "no answer yet"
	}); err != nil {
		return err
	}
	if va.Status.Attached || !strings.Contains(attachErr, "FailedPrecondition") {
		return fmt.Errorf("a VolumeAttachment for %s of a volume %s holds: attached=%v, error %q", s.b, s.a, va.Status.Attached, attachErr)
	}
	msg, err := s.event(ctx, "PersistentVolumeClaim", "data", "AttachmentConflict")
	if err != nil {
		return err
	}
	if err := s.fence(ctx, pv.Spec.CSI.VolumeHandle, s.a); err != nil {
		return err
	}
	s.step("VolumeAttachment for "+s.b+" (webhook bypassed) refused by the controller",
		"attachError: "+attachErr+"\nevent AttachmentConflict: "+msg)
	if err := k.Delete(ctx, va); err != nil {
		return err
	}
	return until(ctx, 30*time.Second, "the refused VolumeAttachment gone", func(ctx context.Context) (bool, string) {
		return apierrors.IsNotFound(k.Get(ctx, client.ObjectKeyFromObject(va), &storagev1.VolumeAttachment{})), ""
	})
}

func attachState(va *storagev1.VolumeAttachment) string {
	switch {
	case va == nil:
		return "no VolumeAttachment yet"
	case va.Status.AttachError != nil:
		return va.Status.AttachError.Message
	default:
		return "attaching"
	}
}

// attachmentOf is the VolumeAttachment of pv for node (nil when none).
func (s *story) attachmentOf(ctx context.Context, pv, node string) (*storagev1.VolumeAttachment, error) {
	var list storagev1.VolumeAttachmentList
	if err := s.e.Client.List(ctx, &list); err != nil {
		return nil, err
	}
	for i := range list.Items {
		va := &list.Items[i]
		if va.Spec.NodeName == node && va.Spec.Source.PersistentVolumeName != nil && *va.Spec.Source.PersistentVolumeName == pv {
			return va, nil
		}
	}
	return nil, nil
}

// running waits for the kubelet stand-in to have published the pod's volume.
func (s *story) running(ctx context.Context, p *corev1.Pod) error {
	return until(ctx, 60*time.Second, "pod "+p.Name+" running with its volume", func(ctx context.Context) (bool, string) {
		if err := s.e.Client.Get(ctx, client.ObjectKeyFromObject(p), p); err != nil {
			return false, err.Error()
		}
		if p.Status.Phase != corev1.PodRunning {
			return false, fmt.Sprintf("phase %q on node %q", p.Status.Phase, p.Spec.NodeName)
		}
		return true, ""
	})
}

// fence checks that the RDS admits exactly node's host NQN for the volume.
func (s *story) fence(ctx context.Context, id, node string) error {
	var n corev1.Node
	if err := s.e.Client.Get(ctx, client.ObjectKey{Name: node}, &n); err != nil {
		return err
	}
	want := n.Annotations["rds-fence.csi.dev/host-nqn"]
	got, err := s.e.AllowedHost(ctx, s.rds, id)
	if err != nil {
		return err
	}
	if want == "" || got != want {
		return fmt.Errorf("the RDS fence of %s admits %q, want %s's host NQN %q", id, got, node, want)
	}
	return nil
}

// event waits for an event with reason on the object and returns its message.
func (s *story) event(ctx context.Context, kind, name, reason string) (string, error) {
	msg := ""
	err := until(ctx, 30*time.Second, "a "+reason+" event on "+kind+" "+name, func(ctx context.Context) (bool, string) {
		var list corev1.EventList
		if err := s.e.Client.List(ctx, &list, client.InNamespace(s.ns)); err != nil {
			return false, err.Error()
		}
		for _, ev := range list.Items {
			if ev.InvolvedObject.Kind == kind && ev.InvolvedObject.Name == name && ev.Reason == reason {
				msg = ev.Message
				return true, ""
			}
		}
		return false, ""
	})
	return msg, err
}

// eventsOf lists the reasons and messages of the events on an object.
func (s *story) eventsOf(ctx context.Context, kind, name string) string {
	var list corev1.EventList
	if err := s.e.Client.List(ctx, &list, client.InNamespace(s.ns)); err != nil {
		return err.Error()
	}
	var out []string
	for _, ev := range list.Items {
		if ev.InvolvedObject.Kind == kind && ev.InvolvedObject.Name == name {
			out = append(out, ev.Reason+": "+ev.Message)
		}
	}
	return strings.Join(out, "; ")
}
