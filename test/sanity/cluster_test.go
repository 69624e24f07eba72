package sanity

import (
	"context"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	csipb "github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/rds-fence/rds-fence/attachment"
	"github.com/rds-fence/rds-fence/attachment/kube"
	"github.com/rds-fence/rds-fence/csi"
	"github.com/rds-fence/rds-fence/rds"
)

// sanityNode is the node csi-sanity publishes to (from NodeGetInfo), and
// the host NQN its node plugin connects with.
const (
	sanityNode    = "sanity-node"
	sanityHostNQN = "nqn.2014-08.org.nvmexpress:uuid:sanity"
)

// startCluster starts the test control plane and returns the fencing core
// wired to it as the controller wires it, plus a gRPC interceptor that
// plays the external-provisioner: after each CreateVolume it creates the
// PV for the volume (publish finds volumes through their PV), after each
// DeleteVolume it deletes it.
func startCluster(t *testing.T, storage *rds.Client) (*attachment.Manager, grpc.ServerOption) {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	assets := os.Getenv("KUBEBUILDER_ASSETS")
	if assets == "" {
		assets = filepath.Join(filepath.Dir(file), "..", "..", "bin")
	}
	env := &envtest.Environment{BinaryAssetsDirectory: assets}
	cfg, err := env.Start()
	if err != nil {
		t.Fatalf("starting envtest from %s (run `make test` to build it): %v", assets, err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	scheme := k8sruntime.NewScheme()
	_ = clientgoscheme.AddToScheme(scheme)
	direct, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	cached, err := cache.New(cfg, cache.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	if err := cached.IndexField(ctx, &corev1.PersistentVolume{}, kube.IndexVolumeHandle, kube.IndexPVByHandle); err != nil {
		t.Fatal(err)
	}
	go func() { _ = cached.Start(ctx) }()
	b := events.NewBroadcaster(&events.EventSinkImpl{Interface: kubernetes.NewForConfigOrDie(cfg).EventsV1()})
	b.StartRecordingToSink(ctx.Done())
	t.Cleanup(b.Shutdown)

	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: sanityNode,
		Annotations: map[string]string{kube.AnnotationHostNQN: sanityHostNQN}}}
	if err := direct.Create(ctx, node); err != nil {
		t.Fatal(err)
	}
	cluster := &kube.Cluster{Driver: csi.DefaultDriverName, Reader: cached, Writer: direct}
	store := attachment.NewStore()
	mgr := &attachment.Manager{Store: store, Cluster: cluster,
		Fence:   &csi.Fencer{Mode: csi.FenceHostNQN, Storage: storage, Prefix: "pvc-"},
		Events:  &kube.Events{Recorder: b.NewRecorder(scheme, "rds-fence-sanity"), Reader: cached, Log: logr.Discard()},
		Metrics: attachment.NewMetrics(prometheus.NewRegistry(), store), Log: logr.Discard(), RequireHostNQN: true}

	provisioner := func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		resp, err := handler(ctx, req)
		if err != nil {
			return resp, err
		}
		switch r := resp.(type) {
		case *csipb.CreateVolumeResponse:
			id := r.GetVolume().GetVolumeId()
			pv := &corev1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: id}, Spec: corev1.PersistentVolumeSpec{
				Capacity:    corev1.ResourceList{corev1.ResourceStorage: *resource.NewQuantity(r.GetVolume().GetCapacityBytes(), resource.BinarySI)},
				AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
				PersistentVolumeSource: corev1.PersistentVolumeSource{CSI: &corev1.CSIPersistentVolumeSource{
					Driver: csi.DefaultDriverName, VolumeHandle: id}}}}
			if err := direct.Create(ctx, pv); err != nil && !isAlreadyExists(err) {
				t.Errorf("provisioner stand-in: %v", err)
			}
			_ = wait.PollUntilContextTimeout(ctx, 10*time.Millisecond, 10*time.Second, true, func(ctx context.Context) (bool, error) {
				return cached.Get(ctx, client.ObjectKey{Name: id}, &corev1.PersistentVolume{}) == nil, nil
			})
		case *csipb.DeleteVolumeResponse:
			id := req.(*csipb.DeleteVolumeRequest).GetVolumeId()
			_ = direct.Delete(ctx, &corev1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: id}})
		}
		return resp, nil
	}
	return mgr, grpc.ChainUnaryInterceptor(provisioner)
}

func isAlreadyExists(err error) bool { return apierrors.IsAlreadyExists(err) }
