package envtest

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/rds-fence/rds-fence/csi"
)

// assets returns KUBEBUILDER_ASSETS, defaulting to the repository's bin/.
func assets(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("KUBEBUILDER_ASSETS")
	if dir == "" {
		_, file, _, _ := runtime.Caller(0)
		dir = filepath.Join(filepath.Dir(file), "..", "..", "bin")
	}
	for _, b := range []string{"kube-apiserver", "etcd"} {
		if _, err := os.Stat(filepath.Join(dir, b)); err != nil {
			t.Fatalf("%s not found in %s: run `make test` (it builds the control plane into bin/) or set KUBEBUILDER_ASSETS", b, dir)
		}
	}
	return dir
}

func TestControlPlaneVersion(t *testing.T) {
	out, err := exec.Command(filepath.Join(assets(t), "kube-apiserver"), "--version").CombinedOutput()
	if err != nil || !strings.HasPrefix(strings.TrimSpace(string(out)), "Kubernetes v1.37.") {
		t.Fatalf("kube-apiserver --version = %q, %v; want v1.37.x", out, err)
	}
}

// TestControlPlaneServesDriverObjects starts the real apiserver and etcd and
// stores what a cluster running this driver holds: its CSIDriver object and
// a PV whose handle is a volume ID of the driver's scheme.
func TestControlPlaneServesDriverObjects(t *testing.T) {
	env := &envtest.Environment{BinaryAssetsDirectory: assets(t)}
	cfg, err := env.Start()
	if err != nil {
		t.Fatalf("starting envtest: %v", err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	c, err := client.New(cfg, client.Options{Scheme: scheme.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	attach := true
	drv := &storagev1.CSIDriver{ObjectMeta: metav1.ObjectMeta{Name: csi.DefaultDriverName},
		Spec: storagev1.CSIDriverSpec{AttachRequired: &attach}}
	if err := c.Create(t.Context(), drv); err != nil {
		t.Fatalf("creating CSIDriver: %v", err)
	}
	ids := csi.VolumeIDs{SlotPrefix: "pvc-", NQNPrefix: "nqn.2000-02.com.mikrotik:", BasePath: "/storage-pool/v"}
	handle := ids.Slot("pvc-5c1e7d42-8f0b-4a53-9a41-2f0c7a1b9e11")
	pv := &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: "pvc-5c1e7d42-8f0b-4a53-9a41-2f0c7a1b9e11"},
		Spec: corev1.PersistentVolumeSpec{
			Capacity:    corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")},
			AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			PersistentVolumeSource: corev1.PersistentVolumeSource{CSI: &corev1.CSIPersistentVolumeSource{
				Driver: csi.DefaultDriverName, VolumeHandle: handle}},
		},
	}
	if err := c.Create(t.Context(), pv); err != nil {
		t.Fatalf("creating PV: %v", err)
	}
	var got corev1.PersistentVolume
	if err := c.Get(t.Context(), client.ObjectKeyFromObject(pv), &got); err != nil {
		t.Fatal(err)
	}
	if got.Spec.CSI.VolumeHandle != handle || !ids.Owns(got.Spec.CSI.VolumeHandle) {
		t.Fatalf("stored handle %q, want %q", got.Spec.CSI.VolumeHandle, handle)
	}
}
