package webhook

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	kubevirtv1 "kubevirt.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
)

// The handler's plumbing (decoding, modes, events, metrics, fail-closed on
// read errors) over controller-runtime's fake client; the same handler runs
// behind the real API server in test/admission.

type recordedEvents struct {
	mu     sync.Mutex
	events []string
}

func (r *recordedEvents) Denied(_ context.Context, claims []string, reason, message string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range claims {
		r.events = append(r.events, reason+" "+c+": "+message)
	}
}

func testScheme() *runtime.Scheme {
	s := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(s)
	_ = kubevirtv1.AddToScheme(s)
	return s
}

// handlerWith serves a handler whose cache holds the world's objects.
func handlerWith(t testing.TB, w *world, mode Mode, reader func(client.Client) client.Reader) (*Handler, *recordedEvents, *prometheus.Registry) {
	s := testScheme()
	b := fake.NewClientBuilder().WithScheme(s)
	for _, n := range w.nodes {
		b = b.WithObjects(n)
	}
	for _, pv := range w.pvs {
		b = b.WithObjects(pv)
	}
	for _, c := range w.claims {
		b = b.WithObjects(c)
	}
	for _, p := range w.pods {
		b = b.WithObjects(p)
	}
	for _, v := range w.vmis {
		b = b.WithObjects(v)
	}
	for _, m := range w.migs {
		b = b.WithObjects(m)
	}
	idx := &fakeIndexer{b: b}
	if err := AddIndexes(context.Background(), idx, true); err != nil {
		t.Fatal(err)
	}
	c := idx.b.Build()
	var r client.Reader = c
	if reader != nil {
		r = reader(c)
	}
	state := &CachedState{Reader: r, Live: c, KubeVirt: true}
	state.synced.Store(w.synced)
	reg := prometheus.NewRegistry()
	ev := &recordedEvents{}
	h := &Handler{State: state, Options: opts, Events: ev, Metrics: NewMetrics(reg, state),
		Decoder: admission.NewDecoder(s), Log: logr.Discard()}
	h.SetMode(mode)
	return h, ev, reg
}

// fakeIndexer adapts the fake client builder to client.FieldIndexer.
type fakeIndexer struct{ b *fake.ClientBuilder }

func (f *fakeIndexer) IndexField(_ context.Context, obj client.Object, field string, fn client.IndexerFunc) error {
	f.b = f.b.WithIndex(obj, field, fn)
	return nil
}

// review posts an AdmissionReview body through controller-runtime's HTTP
// handler and returns the decoded response.
func review(t testing.TB, h *Handler, body []byte) *admissionv1.AdmissionResponse {
	t.Helper()
	srv := &admission.Webhook{Handler: h, RecoverPanic: ptr(true)}
	req := httptest.NewRequest(http.MethodPost, PathPods, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	rec := httptest.NewRecorder()
	srv.ServeHTTP(rec, req)
	var out admissionv1.AdmissionReview
	if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil || out.Response == nil {
		t.Fatalf("response %q is not an AdmissionReview: %v", rec.Body.String(), err)
	}
	return out.Response
}

func ptr[T any](v T) *T { return &v }

func reviewOf(t testing.TB, resource, sub, user string, obj any, dryRun bool) []byte {
	raw, err := json.Marshal(obj)
	if err != nil {
		t.Fatal(err)
	}
	group := ""
	if resource == "virtualmachineinstances" {
		group = "kubevirt.io"
	}
	ar := admissionv1.AdmissionReview{TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request: &admissionv1.AdmissionRequest{UID: "uid-1", Operation: admissionv1.Create, Namespace: "ns", Name: "p",
			Resource: metav1.GroupVersionResource{Group: group, Version: "v1", Resource: resource}, SubResource: sub,
			DryRun: &dryRun, Object: runtime.RawExtension{Raw: raw}}}
	ar.Request.UserInfo.Username = user
	if o, ok := obj.(metav1.Object); ok && o.GetName() != "" {
		ar.Request.Name = o.GetName()
	}
	b, _ := json.Marshal(ar)
	return b
}

func typedPod(p *corev1.Pod) *corev1.Pod {
	p.TypeMeta = metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"}
	return p
}

func heldWorld() *world {
	w := newWorld().node("a", nil).node("b", nil).volume("data", false, false, "a")
	w.pods = []*corev1.Pod{pod("writer", "a", "data")}
	return w
}

func TestHandlerModes(t *testing.T) {
	body := reviewOf(t, "pods", "", "user", typedPod(pod("p", "b", "data")), false)
	cases := []struct {
		mode     Mode
		allowed  bool
		warning  bool
		result   string
		event    string
		dryRunRq bool
	}{
		{ModeEnforce, false, false, "denied", EventAdmissionDenied, false},
		{ModeWarn, true, true, "warned", EventAdmissionWouldDeny, false},
		{ModeDryRun, true, false, "dry-run-denied", EventAdmissionWouldDeny, false},
		{ModeEnforce, false, false, "denied", "", true},
	}
	for _, c := range cases {
		t.Run(string(c.mode), func(t *testing.T) {
			h, ev, reg := handlerWith(t, heldWorld(), c.mode, nil)
			b := body
			if c.dryRunRq {
				b = reviewOf(t, "pods", "", "user", typedPod(pod("p", "b", "data")), true)
			}
			resp := review(t, h, b)
			if resp.Allowed != c.allowed || (len(resp.Warnings) > 0) != c.warning || resp.UID != "uid-1" {
				t.Fatalf("response %+v", resp)
			}
			if !c.allowed && !strings.Contains(resp.Result.Message, "attached to node a") {
				t.Fatalf("denial message %q", resp.Result.Message)
			}
			if c.warning && !strings.Contains(resp.Warnings[0], "would refuse") {
				t.Fatalf("warning %q", resp.Warnings[0])
			}
			if c.event == "" && len(ev.events) != 0 || c.event != "" && (len(ev.events) != 1 || !strings.HasPrefix(ev.events[0], c.event+" ns/data")) {
				t.Fatalf("events %q, want %q", ev.events, c.event)
			}
			if got := testutil.ToFloat64(h.Metrics.decisions.WithLabelValues("pods", c.result, ReasonHeldElsewhere)); got != 1 {
				t.Fatalf("decisions{pods,%s,%s} = %v", c.result, ReasonHeldElsewhere, got)
			}
			if n, _ := testutil.GatherAndCount(reg, "rds_fence_admission_decision_seconds"); n != 1 {
				t.Fatalf("latency series = %d", n)
			}
		})
	}
}

func TestHandlerRoutes(t *testing.T) {
	h, _, _ := handlerWith(t, heldWorld(), ModeEnforce, nil)
	binding := &corev1.Binding{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Binding"},
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "writer"}, Target: corev1.ObjectReference{Kind: "Node", Name: "b"}}
	if r := review(t, h, reviewOf(t, "pods", "binding", "system:kube-scheduler", binding, false)); r.Allowed ||
		!strings.Contains(r.Result.Message, "cannot run on node b") {
		t.Fatalf("binding to b: %+v", r.Result)
	}
	binding.Target.Name = "a"
	if r := review(t, h, reviewOf(t, "pods", "binding", "system:kube-scheduler", binding, false)); !r.Allowed {
		t.Fatalf("binding to the holder: %+v", r.Result)
	}
	binding.Name = "ghost"
	if r := review(t, h, reviewOf(t, "pods", "binding", "system:kube-scheduler", binding, false)); r.Allowed ||
		!strings.Contains(r.Result.Message, "cannot check the binding of pod ns/ghost") {
		t.Fatalf("binding of an unknown pod: %+v", r.Result)
	}
	v := vmi("vm2", "u2", "", "data")
	v.TypeMeta = metav1.TypeMeta{APIVersion: "kubevirt.io/v1", Kind: "VirtualMachineInstance"}
	v.Spec.NodeSelector = map[string]string{"zone": "elsewhere"}
	if r := review(t, h, reviewOf(t, "virtualmachineinstances", "", "user", v, false)); r.Allowed ||
		!strings.Contains(r.Result.Message, "attached to node a") {
		t.Fatalf("VMI: %+v", r.Result)
	}
	h.State.KubeVirt = false
	if r := review(t, h, reviewOf(t, "virtualmachineinstances", "", "user", v, false)); r.Allowed ||
		!strings.Contains(r.Result.Message, "restart the webhook") {
		t.Fatalf("VMI without KubeVirt informers: %+v", r.Result)
	}
	unsynced := heldWorld()
	unsynced.synced = false
	h, _, _ = handlerWith(t, unsynced, ModeEnforce, nil)
	if r := review(t, h, reviewOf(t, "pods", "", "user", typedPod(pod("p", "a", "data")), false)); r.Allowed ||
		!strings.Contains(r.Result.Message, "not synced its caches") {
		t.Fatalf("unsynced: %+v", r.Result)
	}
}

// failingReader fails every read except "not found" semantics, like a
// cache whose index is missing.
type failingReader struct{ client.Reader }

func (failingReader) List(context.Context, client.ObjectList, ...client.ListOption) error {
	return errIndex
}

var errIndex = &indexError{}

type indexError struct{}

func (*indexError) Error() string {
	return "index rds-fence.spec.source.persistentVolumeName does not exist"
}

func TestHandlerFailsClosedOnReadErrors(t *testing.T) {
	// Free claim: the only holder is a VolumeAttachment, which cannot be read.
	w := newWorld().node("a", nil).node("b", nil).volume("data", false, false)
	h, _, _ := handlerWith(t, w, ModeEnforce, func(c client.Client) client.Reader { return failingReader{c} })
	r := review(t, h, reviewOf(t, "pods", "", "user", typedPod(pod("p", "b", "data")), false))
	if r.Allowed || !strings.Contains(r.Result.Message, "cannot read the cluster state") || !strings.Contains(r.Result.Message, "does not exist") {
		t.Fatalf("read error: %+v", r.Result)
	}
}

func TestHandlerMalformed(t *testing.T) {
	h, _, reg := handlerWith(t, heldWorld(), ModeDryRun, nil)
	for name, body := range map[string]string{
		"not json":      "{",
		"no request":    `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}`,
		"no object":     `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u","operation":"CREATE","resource":{"version":"v1","resource":"pods"}}}`,
		"wrong kind":    `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u","operation":"CREATE","resource":{"version":"v1","resource":"pods"},"object":{"apiVersion":"v1","kind":"Secret"}}}`,
		"garbage spec":  `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u","operation":"CREATE","resource":{"version":"v1","resource":"pods"},"object":{"apiVersion":"v1","kind":"Pod","spec":{"volumes":7}}}}`,
		"binding empty": `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u","operation":"CREATE","resource":{"version":"v1","resource":"pods"},"subResource":"binding","object":{"apiVersion":"v1","kind":"Binding"}}}`,
	} {
		r := review(t, h, []byte(body))
		if r.Allowed || r.Result == nil || r.Result.Code != http.StatusBadRequest || r.Result.Message == "" {
			t.Fatalf("%s: %+v", name, r)
		}
	}
	if n, _ := testutil.GatherAndCount(reg, "rds_fence_admission_decisions_total"); n == 0 {
		t.Fatal("malformed requests not counted")
	}
}

// FuzzAdmissionReview posts arbitrary bytes as an AdmissionReview: no
// panic (recovery is off here), always an AdmissionReview back, every
// refusal carries a message, and a body without a readable request is
// refused.
func FuzzAdmissionReview(f *testing.F) {
	f.Add(reviewOf(f, "pods", "", "user", typedPod(pod("p", "b", "data")), false))
	f.Add(reviewOf(f, "pods", "binding", "s", &corev1.Binding{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Binding"}, Target: corev1.ObjectReference{Name: "b"}}, false))
	f.Add(reviewOf(f, "virtualmachineinstances", "", "user", vmi("v", "u", "", "data"), false))
	f.Add([]byte(`{"request":{"uid":"u","operation":"CREATE","resource":{"resource":"pods"},"object":{"kind":"Pod","apiVersion":"v1","spec":{"nodeName":"b","volumes":[{"name":"x","ephemeral":{}}]}}}}`))
	f.Add([]byte(`{"request":{"uid":"u","operation":"DELETE","resource":{"resource":"pods"}}}`))
	h, _, _ := handlerWith(f, heldWorld(), ModeEnforce, nil)
	f.Fuzz(func(t *testing.T, body []byte) {
		srv := &admission.Webhook{Handler: h}
		req := httptest.NewRequest(http.MethodPost, PathPods, bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		srv.ServeHTTP(rec, req)
		var out admissionv1.AdmissionReview
		if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil || out.Response == nil {
			t.Fatalf("response %q is not an AdmissionReview: %v", rec.Body.String(), err)
		}
		if !out.Response.Allowed && (out.Response.Result == nil || out.Response.Result.Message == "") {
			t.Fatalf("refusal without a message: %+v", out.Response)
		}
		// No request uid (not a review, or not one the handler could read):
		// always refused.
		if out.Response.UID == "" && out.Response.Allowed {
			t.Fatalf("malformed review %q admitted", body)
		}
	})
}

// hidden hides pods and migrations from the cache, as a cache that has not
// caught up with objects created a moment ago.
type hidden struct{ client.Reader }

func (h hidden) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	if _, ok := obj.(*corev1.Pod); ok {
		return apierrors.NewNotFound(corev1.Resource("pods"), key.Name)
	}
	return h.Reader.Get(ctx, key, obj, opts...)
}

func (h hidden) List(ctx context.Context, list client.ObjectList, opts ...client.ListOption) error {
	if _, ok := list.(*kubevirtv1.VirtualMachineInstanceMigrationList); ok {
		return nil
	}
	return h.Reader.List(ctx, list, opts...)
}

func TestHandlerReadsLiveWhenCacheLags(t *testing.T) {
	w := heldWorld()
	floating := pod("floating", "", "data")
	floating.UID = "uid-floating"
	w.pods = append(w.pods, floating)
	h, _, _ := handlerWith(t, w, ModeEnforce, func(c client.Client) client.Reader { return hidden{c} })
	binding := &corev1.Binding{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Binding"},
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "floating", UID: "uid-floating"}, Target: corev1.ObjectReference{Kind: "Node", Name: "b"}}
	if r := review(t, h, reviewOf(t, "pods", "binding", "system:kube-scheduler", binding, false)); r.Allowed ||
		!strings.Contains(r.Result.Message, "cannot run on node b") {
		t.Fatalf("binding of a pod only the API server has: %+v", r.Result)
	}
	// A binding for another incarnation of the pod (same name, other UID).
	binding.UID = "uid-recreated"
	if r := review(t, h, reviewOf(t, "pods", "binding", "system:kube-scheduler", binding, false)); r.Allowed ||
		!strings.Contains(r.Result.Message, "has uid uid-floating, but the binding is for uid uid-recreated") {
		t.Fatalf("binding with a stale UID: %+v", r.Result)
	}

	// A migration the cache has not seen yet is found in the API server.
	mw := newWorld().node("a", nil).node("b", nil).volume("disk", true, true, "a")
	mw.vmis = []*kubevirtv1.VirtualMachineInstance{vmi("vm1", "vmi-uid", kubevirtv1.Running, "disk")}
	mw.migs = []*kubevirtv1.VirtualMachineInstanceMigration{{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "mig1", UID: "mig-uid"},
		Spec: kubevirtv1.VirtualMachineInstanceMigrationSpec{VMIName: "vm1"}}}
	h, _, _ = handlerWith(t, mw, ModeEnforce, func(c client.Client) client.Reader { return hidden{c} })
	target := pod("virt-launcher-vm1-x", "", "disk")
	target.Labels = map[string]string{LabelMigrationJobUID: "mig-uid", LabelCreatedBy: "vmi-uid"}
	if r := review(t, h, reviewOf(t, "pods", "", DefaultKubeVirtUser, typedPod(target), false)); !r.Allowed {
		t.Fatalf("migration target with a migration only the API server has: %+v", r.Result)
	}
}

func TestHandlerMigrationLabelUpdate(t *testing.T) {
	w := newWorld().node("a", nil).volume("disk", true, true, "a")
	h, _, _ := handlerWith(t, w, ModeEnforce, nil)
	old := typedPod(pod("p", "", "disk"))
	labelled := typedPod(pod("p", "", "disk"))
	labelled.Labels = map[string]string{LabelMigrationJobUID: "m", LabelCreatedBy: "v"}
	update := func(user string, oldPod, newPod *corev1.Pod) *admissionv1.AdmissionResponse {
		var ar admissionv1.AdmissionReview
		_ = json.Unmarshal(reviewOf(t, "pods", "", user, newPod, false), &ar)
		ar.Request.Operation = admissionv1.Update
		ar.Request.OldObject.Raw, _ = json.Marshal(oldPod)
		body, _ := json.Marshal(ar)
		return review(t, h, body)
	}
	if r := update("mallory", old, labelled); r.Allowed || !strings.Contains(r.Result.Message, "may only be set by KubeVirt") {
		t.Fatalf("labels added by mallory: %+v", r.Result)
	}
	if r := update(DefaultKubeVirtUser, old, labelled); !r.Allowed {
		t.Fatalf("labels added by KubeVirt: %+v", r.Result)
	}
	if r := update("mallory", labelled, labelled); !r.Allowed {
		t.Fatalf("an update that leaves the labels alone: %+v", r.Result)
	}
}
