package admission

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	kubevirtv1 "kubevirt.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/yaml"

	"github.com/rds-fence/rds-fence/attachment"
	"github.com/rds-fence/rds-fence/cmd/rds-fence/app"
	"github.com/rds-fence/rds-fence/csi"
	"github.com/rds-fence/rds-fence/test/manifests"
)

// One control plane and one webhook (as `rds-fence webhook` wires it, in
// self-signed mode) for the package; the real API server calls it over
// TLS on loopback through the configuration in manifests/base.
var (
	restCfg *rest.Config
	scheme  = k8sruntime.NewScheme()
	direct  client.Client
	hook    *app.WebhookParts
	reg     *prometheus.Registry
	port    int
	root    string
	// refusedAsSA: every request of the webhook (running as its ServiceAccount
	// with the shipped RBAC) that the API server refused; the suite fails
	// unless it stays empty.
	refusedAsSA *manifests.Denials
)

const webhookNamespace = "rds-fence"

func TestMain(m *testing.M) { os.Exit(run(m)) }

func run(m *testing.M) int {
	_, file, _, _ := runtime.Caller(0)
	root = filepath.Join(filepath.Dir(file), "..", "..")
	assets := os.Getenv("KUBEBUILDER_ASSETS")
	if assets == "" {
		assets = filepath.Join(root, "bin")
	}
	env := &envtest.Environment{BinaryAssetsDirectory: assets, CRDDirectoryPaths: []string{filepath.Join(root, "test", "crds")},
		ErrorIfCRDPathMissing: true}
	var err error
	if restCfg, err = env.Start(); err != nil {
		fmt.Fprintf(os.Stderr, "starting envtest from %s (run `make test` to build it): %v\n", assets, err)
		return 1
	}
	defer func() { _ = env.Stop() }()
	ctrllog.SetLogger(logr.Discard())
	_ = clientgoscheme.AddToScheme(scheme)
	_ = kubevirtv1.AddToScheme(scheme)
	if direct, err = client.New(restCfg, client.Options{Scheme: scheme}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := startWebhook(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "starting the webhook:", err)
		return 1
	}
	code := m.Run()
	if d := refusedAsSA.List(); len(d) > 0 {
		fmt.Fprintf(os.Stderr, "FAIL: the webhook, running as ServiceAccount %s/rds-fence-webhook with the RBAC of manifests/, was refused %d requests: %v\n",
			webhookNamespace, len(d), d)
		return 1
	}
	return code
}

// startWebhook runs the webhook and registers the shipped configuration,
// pointed at loopback, and waits until the API server calls it.
func startWebhook(ctx context.Context) error {
	var ns corev1.Namespace // the shipped one, with its admission=skip label
	raw, err := os.ReadFile(filepath.Join(root, "manifests", "base", "namespace.yaml"))
	if err != nil {
		return err
	}
	if err := yaml.UnmarshalStrict(raw, &ns); err != nil {
		return fmt.Errorf("manifests/base/namespace.yaml: %w", err)
	}
	for _, o := range []client.Object{
		&ns,
		// KubeVirt's controller creates migration target pods (impersonated here).
		&rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "kubevirt-controller-test"},
			RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "cluster-admin"},
			Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Namespace: "kubevirt", Name: "kubevirt-controller"}, {Kind: "User", Name: "mallory"}}},
	} {
		if err := direct.Create(ctx, o); err != nil {
			return err
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	port = l.Addr().(*net.TCPAddr).Port
	_ = l.Close()
	certDir, err := os.MkdirTemp("", "rds-fence-webhook-certs-")
	if err != nil {
		return err
	}
	o := &app.WebhookOptions{Driver: csi.DefaultDriverName, Mode: "enforce", KubeVirt: "true", Host: "127.0.0.1", Port: port,
		CertDir: certDir, CertMode: app.CertModeSelfSigned, Namespace: webhookNamespace, SecretName: "rds-fence-webhook-tls",
		ServiceName: "rds-fence-webhook", WebhookConfigName: "rds-fence-webhook", ExtraIPs: []string{"127.0.0.1"},
		MetricsAddress: "0", HealthAddress: "0"}
	if err := o.Validate(); err != nil {
		return err
	}
	objs, err := manifests.Render("overlays/self-signed")
	if err != nil {
		return err
	}
	if err := manifests.ApplyRBAC(ctx, direct, objs, webhookNamespace, "rds-fence-webhook"); err != nil {
		return err
	}
	var asSA *rest.Config
	asSA, refusedAsSA = manifests.AsServiceAccount(restCfg, webhookNamespace, "rds-fence-webhook")
	reg = prometheus.NewRegistry()
	if hook, err = app.NewWebhookManager(asSA, o, reg, logr.Discard()); err != nil {
		return err
	}
	go func() { _ = hook.Manager.Start(ctx) }()
	vwc, err := shippedConfiguration(fmt.Sprintf("https://127.0.0.1:%d", port))
	if err != nil {
		return err
	}
	if err := direct.Create(ctx, vwc); err != nil {
		return err
	}
	// Ready: caBundle injected, caches synced, and the API server calls
	// the webhook (a pod on a claim that does not exist gets a decision).
	return wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 60*time.Second, true, func(ctx context.Context) (bool, error) {
		var got admissionregistrationv1.ValidatingWebhookConfiguration
		if err := direct.Get(ctx, client.ObjectKeyFromObject(vwc), &got); err != nil || len(got.Webhooks[0].ClientConfig.CABundle) == 0 {
			return false, nil
		}
		if !hook.State.Synced() {
			return false, nil
		}
		before := decisions("pods")
		p := podUsing("default", "probe", "", "no-such-claim")
		p.GenerateName = "probe-"
		if err := direct.Create(ctx, p, client.DryRunAll); err != nil {
			return false, nil
		}
		return decisions("pods") > before, nil
	})
}

// shippedConfiguration reads manifests/base/webhook-configuration.yaml and
// points its webhooks at url instead of the in-cluster Service.
func shippedConfiguration(url string) (*admissionregistrationv1.ValidatingWebhookConfiguration, error) {
	raw, err := os.ReadFile(filepath.Join(root, "manifests", "base", "webhook-configuration.yaml"))
	if err != nil {
		return nil, err
	}
	var vwc admissionregistrationv1.ValidatingWebhookConfiguration
	if err := yaml.UnmarshalStrict(raw, &vwc); err != nil {
		return nil, fmt.Errorf("manifests/base/webhook-configuration.yaml: %w", err)
	}
	for i := range vwc.Webhooks {
		cc := &vwc.Webhooks[i].ClientConfig
		u := url + *cc.Service.Path
		cc.URL, cc.Service = &u, nil
	}
	return &vwc, nil
}

// decisions is the webhook's count of decisions on resource.
func decisions(resource string) float64 {
	mfs, _ := reg.Gather()
	var n float64
	for _, mf := range mfs {
		if mf.GetName() != "rds_fence_admission_decisions_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "resource" && l.GetValue() == resource {
					n += m.GetCounter().GetValue()
				}
			}
		}
	}
	return n
}

// warnings collects the API server's warnings for one client.
type warnings struct {
	mu  sync.Mutex
	all []string
}

func (w *warnings) HandleWarningHeaderWithContext(_ context.Context, _ int, _ string, text string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.all = append(w.all, text)
}

func (w *warnings) take() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := w.all
	w.all = nil
	return out
}

// clientAs returns a client acting as user (empty: admin), collecting warnings.
func clientAs(t testing.TB, user string) (client.Client, *warnings) {
	t.Helper()
	cfg := rest.CopyConfig(restCfg)
	w := &warnings{}
	cfg.WarningHandlerWithContext = w
	if user != "" {
		cfg.Impersonate = rest.ImpersonationConfig{UserName: user}
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	return c, w
}

// fixture is one test's namespace and nodes.
type fixture struct {
	t  testing.TB
	ns string
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "adm-"}}
	if err := direct.Create(t.Context(), ns); err != nil {
		t.Fatal(err)
	}
	return &fixture{t: t, ns: ns.Name}
}

func (f *fixture) node(name string, labels map[string]string) string {
	f.t.Helper()
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: f.ns + "-" + name, Labels: labels}}
	if err := direct.Create(f.t.Context(), n); err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() { _ = direct.Delete(context.Background(), n) })
	f.cached(&corev1.Node{}, client.ObjectKeyFromObject(n)) // a holder must be known to be live
	return n.Name
}

// volume creates a bound claim and its PV of the driver, held by holders
// as the controller records it on the PV.
func (f *fixture) volume(claim string, block bool, holders ...string) {
	f.t.Helper()
	ctx := f.t.Context()
	mode, access, recMode := corev1.PersistentVolumeFilesystem, corev1.ReadWriteOnce, attachment.ModeSingleNode
	if block {
		mode, access, recMode = corev1.PersistentVolumeBlock, corev1.ReadWriteMany, attachment.ModeMultiNodeBlock
	}
	pvName := f.ns + "-" + claim
	pv := &corev1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: pvName},
		Spec: corev1.PersistentVolumeSpec{
			Capacity:    corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")},
			AccessModes: []corev1.PersistentVolumeAccessMode{access}, VolumeMode: &mode,
			ClaimRef: &corev1.ObjectReference{Kind: "PersistentVolumeClaim", Namespace: f.ns, Name: claim},
			PersistentVolumeSource: corev1.PersistentVolumeSource{CSI: &corev1.CSIPersistentVolumeSource{
				Driver: csi.DefaultDriverName, VolumeHandle: "pvc-" + pvName}}}}
	if len(holders) > 0 {
		rec := attachment.Record{VolumeID: "pvc-" + pvName, PV: pvName, PVC: f.ns + "/" + claim, Mode: recMode}
		for _, h := range holders {
			rec.Holders = append(rec.Holders, attachment.Holder{Node: h, Since: time.Now().UTC().Truncate(time.Second)})
		}
		ann, err := attachment.Annotations(rec)
		if err != nil {
			f.t.Fatal(err)
		}
		pv.Annotations = map[string]string{}
		for k, v := range ann {
			if v != nil {
				pv.Annotations[k] = *v
			}
		}
	}
	if err := direct.Create(ctx, pv); err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() { _ = direct.Delete(context.Background(), pv) })
	pvc := &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Namespace: f.ns, Name: claim},
		Spec: corev1.PersistentVolumeClaimSpec{AccessModes: []corev1.PersistentVolumeAccessMode{access}, VolumeMode: &mode, VolumeName: pvName,
			Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}}}}
	if err := direct.Create(ctx, pvc); err != nil {
		f.t.Fatal(err)
	}
	f.cached(&corev1.PersistentVolume{}, client.ObjectKeyFromObject(pv))
	f.cached(&corev1.PersistentVolumeClaim{}, client.ObjectKeyFromObject(pvc))
}

// cached waits until the webhook's cache holds the object.
func (f *fixture) cached(obj client.Object, key client.ObjectKey) {
	f.t.Helper()
	err := wait.PollUntilContextTimeout(f.t.Context(), 10*time.Millisecond, 10*time.Second, true, func(ctx context.Context) (bool, error) {
		return hook.Manager.GetCache().Get(ctx, key, obj) == nil, nil
	})
	if err != nil {
		f.t.Fatalf("the webhook's cache never saw %T %s", obj, key)
	}
}

func podUsing(ns, name, node string, claims ...string) *corev1.Pod {
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "c", Image: "registry.k8s.io/pause:3.10"}}}}
	for _, c := range claims {
		p.Spec.Volumes = append(p.Spec.Volumes, corev1.Volume{Name: c, VolumeSource: corev1.VolumeSource{
			PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: c}}})
	}
	return p
}

// event waits for an events.k8s.io event with reason on the claim and
// returns its note.
func (f *fixture) event(claim, reason string) string {
	f.t.Helper()
	return f.eventFor(claim, reason, "")
}

// eventFor is event restricted to notes containing substr.
func (f *fixture) eventFor(claim, reason, substr string) string {
	f.t.Helper()
	var note string
	err := wait.PollUntilContextTimeout(f.t.Context(), 50*time.Millisecond, 10*time.Second, true, func(ctx context.Context) (bool, error) {
		var list corev1.EventList
		if err := direct.List(ctx, &list, client.InNamespace(f.ns)); err != nil {
			return false, nil
		}
		for _, e := range list.Items {
			if e.InvolvedObject.Kind == "PersistentVolumeClaim" && e.InvolvedObject.Name == claim && e.Reason == reason && strings.Contains(e.Message, substr) {
				note = e.Message
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		f.t.Fatalf("no %s event on claim %s/%s mentioning %q", reason, f.ns, claim, substr)
	}
	return note
}

func mustContain(t testing.TB, what, text string, parts ...string) {
	t.Helper()
	for _, p := range parts {
		if !strings.Contains(text, p) {
			t.Fatalf("%s %q does not mention %q", what, text, p)
		}
	}
}
