package admission

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	kubevirtv1 "kubevirt.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/rds-fence/rds-fence/attachment"
	"github.com/rds-fence/rds-fence/csi"
)

// parallel runs fn(i) for i in [0,n) on workers goroutines.
func parallel(b *testing.B, n, workers int, fn func(i int) error) {
	sem := make(chan struct{}, workers)
	var wg sync.WaitGroup
	for i := range n {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if err := fn(i); err != nil {
				b.Error(err)
			}
		})
	}
	wg.Wait()
}

// BenchmarkDecision10k measures the handler (decoding, cache reads,
// decision, event) for a pod refused on a second node, with 10,000 PVs and
// claims, 10,000 VolumeAttachments and 1,000 VMIs in the webhook's
// informer cache, filled through the real API server. Reports p50/p99.
func BenchmarkDecision10k(b *testing.B) {
	const pvs, vmis = 10000, 1000
	f := newFixture(b)
	a, other := f.node("a", nil), f.node("b", nil)
	ctx := context.Background()
	start := time.Now()
	parallel(b, pvs, 32, func(i int) error {
		claim := fmt.Sprintf("c-%05d", i)
		pvName := f.ns + "-" + claim
		rec := attachment.Record{VolumeID: "pvc-" + pvName, PV: pvName, PVC: f.ns + "/" + claim, Mode: attachment.ModeSingleNode,
			Holders: []attachment.Holder{{Node: a, Since: time.Now().UTC().Truncate(time.Second)}}}
		ann, _ := attachment.Annotations(rec)
		pv := &corev1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: pvName,
			Annotations: map[string]string{attachment.AnnotationAttachment: *ann[attachment.AnnotationAttachment]}},
			Spec: corev1.PersistentVolumeSpec{
				Capacity:    corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")},
				AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
				PersistentVolumeSource: corev1.PersistentVolumeSource{CSI: &corev1.CSIPersistentVolumeSource{
					Driver: csi.DefaultDriverName, VolumeHandle: "pvc-" + pvName}}}}
		pvc := &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Namespace: f.ns, Name: claim},
			Spec: corev1.PersistentVolumeClaimSpec{AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}, VolumeName: pvName,
				Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}}}}
		va := &storagev1.VolumeAttachment{ObjectMeta: metav1.ObjectMeta{Name: "va-" + pvName},
			Spec: storagev1.VolumeAttachmentSpec{Attacher: csi.DefaultDriverName, NodeName: a,
				Source: storagev1.VolumeAttachmentSource{PersistentVolumeName: &pvName}}}
		for _, o := range []client.Object{pv, pvc, va} {
			if err := direct.Create(ctx, o); err != nil {
				return err
			}
		}
		va.Status.Attached = true
		if err := direct.Status().Update(ctx, va); err != nil {
			return err
		}
		if i < vmis {
			return direct.Create(ctx, vmiUsing(f.ns, fmt.Sprintf("vm-%04d", i), claim))
		}
		return nil
	})
	b.Cleanup(func() {
		_ = direct.DeleteAllOf(ctx, &storagev1.VolumeAttachment{}, client.MatchingFields{"spec.nodeName": a})
	})
	// Wait until the cache holds all of it.
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 5*time.Minute, true, func(ctx context.Context) (bool, error) {
		var vas storagev1.VolumeAttachmentList
		var vl kubevirtv1.VirtualMachineInstanceList
		var pl corev1.PersistentVolumeList
		c := hook.Manager.GetCache()
		if c.List(ctx, &vas) != nil || c.List(ctx, &vl, client.InNamespace(f.ns)) != nil || c.List(ctx, &pl) != nil {
			return false, nil
		}
		return len(vas.Items) >= pvs && len(vl.Items) >= vmis && len(pl.Items) >= pvs, nil
	})
	if err != nil {
		b.Fatalf("cache not filled: %v", err)
	}
	b.Logf("created %d PVs, claims and VolumeAttachments and %d VMIs in %s", pvs, vmis, time.Since(start).Round(time.Second))

	pod := podUsing(f.ns, "p", other, "c-00042")
	pod.TypeMeta = metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"}
	raw, _ := json.Marshal(pod)
	req := admission.Request{AdmissionRequest: admissionv1.AdmissionRequest{UID: "u", Operation: admissionv1.Create,
		Namespace: f.ns, Name: "p", Resource: metav1.GroupVersionResource{Version: "v1", Resource: "pods"},
		Object: runtime.RawExtension{Raw: raw}}}
	if resp := hook.Handler.Handle(ctx, req); resp.Allowed {
		b.Fatalf("pod on %s admitted; want the refusal the benchmark measures", other)
	}
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for b.Loop() {
		t0 := time.Now()
		resp := hook.Handler.Handle(ctx, req)
		lat = append(lat, time.Since(t0))
		if resp.Allowed {
			b.Fatal("admitted")
		}
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
}

// BenchmarkPodCreationOverhead creates pods with a claim through the real
// API server, alternately without and with the webhook registered, in the
// same run, and reports both rates and the overhead.
func BenchmarkPodCreationOverhead(b *testing.B) {
	const perRound, rounds, workers = 250, 3, 4
	f := newFixture(b)
	a := f.node("a", nil)
	f.volume("data", false, a)
	ctx := context.Background()
	var vwc admissionregistrationv1.ValidatingWebhookConfiguration
	if err := direct.Get(ctx, client.ObjectKey{Name: "rds-fence-webhook"}, &vwc); err != nil {
		b.Fatal(err)
	}
	registered := true
	setRegistered := func(on bool) {
		if on == registered {
			return
		}
		if on {
			restored := vwc.DeepCopy()
			restored.ResourceVersion = ""
			if err := direct.Create(ctx, restored); err != nil {
				b.Fatal(err)
			}
		} else if err := direct.Delete(ctx, &vwc); err != nil {
			b.Fatal(err)
		}
		registered = on
		// Wait until the API server's view matches: probe pods are
		// decided (or not) by the webhook.
		err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
			before := decisions("pods")
			if err := direct.Create(ctx, podUsing(f.ns, "probe", a, "data"), client.DryRunAll); err != nil {
				return false, nil
			}
			return (decisions("pods") > before) == on, nil
		})
		if err != nil {
			b.Fatalf("the API server did not pick up the configuration change (registered=%v)", on)
		}
	}
	b.Cleanup(func() { setRegistered(true) })
	n := 0
	measure := func() time.Duration {
		start := time.Now()
		parallel(b, perRound, workers, func(int) error {
			p := podUsing(f.ns, "", a, "data")
			p.GenerateName = "p-"
			return direct.Create(ctx, p)
		})
		n += perRound
		return time.Since(start)
	}
	var without, with time.Duration
	sum0, n0 := handlerTime("pods")
	b.ResetTimer()
	for b.Loop() {
		for range rounds {
			setRegistered(false)
			without += measure()
			setRegistered(true)
			with += measure()
		}
	}
	b.StopTimer()
	total := float64(perRound * rounds * b.N)
	rw, rwith := total/without.Seconds(), total/with.Seconds()
	b.ReportMetric(rw, "pods/s-without")
	b.ReportMetric(rwith, "pods/s-with")
	b.ReportMetric(100*(rw-rwith)/rw, "overhead-%")
	sum1, n1 := handlerTime("pods")
	b.ReportMetric(1e6*(sum1-sum0)/float64(n1-n0), "handler-µs/op")
}

// handlerTime is the webhook's decision-latency histogram for resource:
// total seconds and count.
func handlerTime(resource string) (float64, uint64) {
	mfs, _ := reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() != "rds_fence_admission_decision_seconds" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "resource" && l.GetValue() == resource {
					return m.GetHistogram().GetSampleSum(), m.GetHistogram().GetSampleCount()
				}
			}
		}
	}
	return 0, 0
}
