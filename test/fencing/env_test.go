package fencing

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/events"
	kubevirtv1 "kubevirt.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/rds-fence/rds-fence/attachment"
	"github.com/rds-fence/rds-fence/attachment/kube"
	"github.com/rds-fence/rds-fence/csi"
	"github.com/rds-fence/rds-fence/rds"
	"github.com/rds-fence/rds-fence/rds/rdssim"
	"github.com/rds-fence/rds-fence/rds/rdssim/simtest"
)

// Shared across the package's tests: one control plane, one cache.
var (
	restCfg     *rest.Config
	kubeconfig  []byte // admin kubeconfig of the test control plane
	scheme      = k8sruntime.NewScheme()
	direct      client.Client    // straight to the API server
	directWatch client.WithWatch // the same, for interceptors
	cached      cache.Cache      // informer cache with the PV handle index
	recorder    events.EventRecorder
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Join(filepath.Dir(file), "..", "..")
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
	kubeconfig = env.KubeConfig
	_ = clientgoscheme.AddToScheme(scheme)
	_ = kubevirtv1.AddToScheme(scheme)
	if directWatch, err = client.NewWithWatch(restCfg, client.Options{Scheme: scheme}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	direct = directWatch
	if cached, err = cache.New(restCfg, cache.Options{Scheme: scheme}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := cached.IndexField(ctx, &corev1.PersistentVolume{}, kube.IndexVolumeHandle, kube.IndexPVByHandle); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	go func() { _ = cached.Start(ctx) }()
	cached.WaitForCacheSync(ctx)
	cs := kubernetes.NewForConfigOrDie(restCfg)
	b := events.NewBroadcaster(&events.EventSinkImpl{Interface: cs.EventsV1()})
	b.StartRecordingToSink(ctx.Done())
	defer b.Shutdown()
	recorder = b.NewRecorder(scheme, "rds-fence-controller")
	return m.Run()
}

// fixture is one test's driver, simulator and namespace.
type fixture struct {
	t       testing.TB
	ns      string
	drv     *csi.Driver
	mgr     *attachment.Manager
	sim     *simtest.Env
	metrics *attachment.Metrics
	cluster *kube.Cluster
	rds     *rds.Client
}

// newFixture builds the controller as production wires it, in a fresh
// namespace. mutate may replace the cluster's writer or reader (fault
// injection).
func newFixture(t testing.TB, mutate ...func(*kube.Cluster)) *fixture {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "fence-"}}
	if err := direct.Create(t.Context(), ns); err != nil {
		t.Fatal(err)
	}
	env := simtest.Start(t, rdssim.Options{}, rdssim.ServerOptions{})
	rdsClient := env.Client(t)
	cluster := &kube.Cluster{Driver: csi.DefaultDriverName, Reader: cached, Writer: direct}
	for _, m := range mutate {
		m(cluster)
	}
	store := attachment.NewStore()
	metrics := attachment.NewMetrics(prometheus.NewRegistry(), store)
	mgr := &attachment.Manager{Store: store, Cluster: cluster, Fence: &csi.Fencer{Mode: csi.FenceHostNQN, Storage: rdsClient, Prefix: "pvc-"},
		Events: &kube.Events{Recorder: recorder, Reader: cached, Log: logr.Discard()}, Metrics: metrics,
		Log: logr.Discard(), RequireHostNQN: true}
	drv, err := csi.NewDriver(csi.Options{TargetAddress: "127.0.0.1"}, rdsClient, logr.Discard())
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{t: t, ns: ns.Name, drv: drv.WithAttacher(mgr), mgr: mgr, sim: env, metrics: metrics, cluster: cluster, rds: rdsClient}
}

// env returns the fixture's RDS client (to change the RDS behind the
// controller's back).
func env(f *fixture) *rds.Client { return f.rds }

func hostNQN(node string) string { return "nqn.2014-08.org.nvmexpress:uuid:" + node }

// node creates a Node (names are made unique per test) with its host NQN.
func (f *fixture) node(name string, opts ...func(*corev1.Node)) string {
	f.t.Helper()
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: f.ns + "-" + name,
		Annotations: map[string]string{kube.AnnotationHostNQN: hostNQN(f.ns + "-" + name)}}}
	for _, o := range opts {
		o(n)
	}
	if err := direct.Create(f.t.Context(), n); err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() { _ = direct.Delete(context.Background(), n) })
	f.waitCached(&corev1.Node{}, client.ObjectKeyFromObject(n), true)
	return n.Name
}

// volume creates a volume on the RDS through CreateVolume, and its PVC and
// PV as the external-provisioner would.
func (f *fixture) volume(claim string, block bool) (volumeID string) {
	f.t.Helper()
	ctx := f.t.Context()
	mode := corev1.PersistentVolumeFilesystem
	access := corev1.ReadWriteOnce
	if block {
		mode, access = corev1.PersistentVolumeBlock, corev1.ReadWriteMany
	}
	pvc := &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Namespace: f.ns, Name: claim},
		Spec: corev1.PersistentVolumeClaimSpec{AccessModes: []corev1.PersistentVolumeAccessMode{access}, VolumeMode: &mode,
			Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}}}}
	if err := direct.Create(ctx, pvc); err != nil {
		f.t.Fatal(err)
	}
	name := "pvc-" + string(pvc.UID)
	resp, err := f.drv.CreateVolume(ctx, createReq(name, block))
	if err != nil {
		f.t.Fatal(err)
	}
	id := resp.GetVolume().GetVolumeId()
	pv := &corev1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.PersistentVolumeSpec{
			Capacity:    corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")},
			AccessModes: []corev1.PersistentVolumeAccessMode{access}, VolumeMode: &mode,
			ClaimRef: &corev1.ObjectReference{Kind: "PersistentVolumeClaim", Namespace: f.ns, Name: claim, UID: pvc.UID},
			PersistentVolumeSource: corev1.PersistentVolumeSource{CSI: &corev1.CSIPersistentVolumeSource{
				Driver: csi.DefaultDriverName, VolumeHandle: id, VolumeAttributes: resp.GetVolume().GetVolumeContext()}},
		}}
	if err := direct.Create(ctx, pv); err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() { deletePV(pv.Name) })
	f.waitCached(&corev1.PersistentVolume{}, client.ObjectKeyFromObject(pv), true)
	f.waitCached(&corev1.PersistentVolumeClaim{}, client.ObjectKeyFromObject(pvc), true)
	return id
}

// waitCached waits until the cache has (or no longer has) the object.
func (f *fixture) waitCached(obj client.Object, key client.ObjectKey, present bool) {
	f.t.Helper()
	err := wait.PollUntilContextTimeout(f.t.Context(), 10*time.Millisecond, 10*time.Second, true, func(ctx context.Context) (bool, error) {
		err := cached.Get(ctx, key, obj)
		return (err == nil) == present, nil
	})
	if err != nil {
		f.t.Fatalf("cache never saw %T %s (present=%v)", obj, key, present)
	}
}

// event waits for an event with this reason on the object and returns its message.
func (f *fixture) event(kind, name, reason string) string {
	f.t.Helper()
	return f.eventContaining(kind, name, reason, "")
}

// eventContaining is event restricted to messages containing substr.
func (f *fixture) eventContaining(kind, name, reason, substr string) string {
	f.t.Helper()
	var msg string
	err := wait.PollUntilContextTimeout(f.t.Context(), 20*time.Millisecond, 10*time.Second, true, func(ctx context.Context) (bool, error) {
		var list corev1.EventList
		if err := direct.List(ctx, &list, client.InNamespace(f.ns)); err != nil {
			return false, nil
		}
		for _, e := range list.Items {
			if e.InvolvedObject.Kind == kind && e.InvolvedObject.Name == name && e.Reason == reason && strings.Contains(e.Message, substr) {
				msg = e.Message
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		f.t.Fatalf("no %s event on %s %s/%s", reason, kind, f.ns, name)
	}
	return msg
}

// allowed is the volume's fence on the simulated RDS.
func (f *fixture) allowed(id string) string {
	info, ok := f.sim.Sim.Disk(id)
	if !ok {
		f.t.Fatalf("no disk %s", id)
	}
	return info.AllowedHost
}

// persisted reads the record from the PV in the API server (not the cache).
func (f *fixture) persisted(id string) attachment.Record {
	f.t.Helper()
	var list corev1.PersistentVolumeList
	if err := direct.List(f.t.Context(), &list); err != nil {
		f.t.Fatal(err)
	}
	for i := range list.Items {
		if pv := &list.Items[i]; pv.Spec.CSI != nil && pv.Spec.CSI.VolumeHandle == id {
			rec, _, err := attachment.Decode(pv)
			if err != nil {
				f.t.Fatal(err)
			}
			return rec
		}
	}
	f.t.Fatalf("no PV for %s", id)
	return attachment.Record{}
}

func nodes(r attachment.Record) string { return strings.Join(r.Nodes(), ",") }

// deletePV deletes a PV for good: without kube-controller-manager nobody
// removes the pv-protection finalizer, and a PV left terminating would be
// seen by every later rebuild.
func deletePV(name string) {
	ctx := context.Background()
	var pv corev1.PersistentVolume
	if err := direct.Get(ctx, client.ObjectKey{Name: name}, &pv); err != nil {
		return
	}
	pv.Finalizers = nil
	_ = direct.Update(ctx, &pv)
	_ = direct.Delete(ctx, &pv)
}
