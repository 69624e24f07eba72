package fencing

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	csipb "github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	storagev1 "k8s.io/api/storage/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/rds-fence/rds-fence/cmd/rds-fence/app"
	"github.com/rds-fence/rds-fence/csi"
)

// The controller subcommand's wiring: it rebuilds the store from what an
// earlier run persisted before it serves CSI, then fences over its socket.
func TestControllerWiringRebuildsBeforeServing(t *testing.T) {
	f := newFixture(t) // used for its namespace, nodes, volumes and simulator
	a, b := f.node("a"), f.node("b")
	id := f.volume("data", false)
	f.mustPublish(id, a, false) // "the previous controller run"

	cfg, err := clientcmd.RESTConfigFromKubeConfig(kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	sock, mgr, reg := wireController(t, f, cfg, "--leader-elect=false")
	// The RDS cannot be listed at first: the rebuild fails and CSI must not
	// be served from an unverified store.
	f.sim.Sim.FailCommands("/disk print", "failure: device is busy", -1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	waitFor(f, func(context.Context) bool { // the rebuild has been tried
		for _, c := range f.sim.Sim.Commands() {
			if strings.HasPrefix(c, "/disk print") {
				return true
			}
		}
		return false
	})
	if _, err := os.Stat(sock); err == nil {
		t.Fatal("CSI is served although the rebuild failed")
	}
	f.sim.Sim.ClearFaults()

	ctl := controllerClient(t, f, sock)
	caps, err := ctl.ControllerGetCapabilities(t.Context(), &csipb.ControllerGetCapabilitiesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var offered []csipb.ControllerServiceCapability_RPC_Type
	for _, c := range caps.GetCapabilities() {
		offered = append(offered, c.GetRpc().GetType())
	}
	for _, want := range []csipb.ControllerServiceCapability_RPC_Type{csipb.ControllerServiceCapability_RPC_PUBLISH_UNPUBLISH_VOLUME,
		csipb.ControllerServiceCapability_RPC_LIST_VOLUMES_PUBLISHED_NODES} {
		if !slices.Contains(offered, want) {
			t.Fatalf("capabilities %v lack %v", offered, want)
		}
	}
	_, err = ctl.ControllerPublishVolume(t.Context(), &csipb.ControllerPublishVolumeRequest{VolumeId: id, NodeId: b, VolumeCapability: capability(false)})
	wantCode(t, err, codes.FailedPrecondition, "attached to node "+a)
	list, err := ctl.ListVolumes(t.Context(), &csipb.ListVolumesRequest{})
	if err != nil || len(list.GetEntries()) != 1 || strings.Join(list.GetEntries()[0].GetStatus().GetPublishedNodeIds(), ",") != a {
		t.Fatalf("ListVolumes after restart = %v, %v", list, err)
	}
	// Node a goes away; the served controller hands the volume to b.
	if err := direct.Delete(t.Context(), &corev1.Node{ObjectMeta: nodeMeta(a)}); err != nil {
		t.Fatal(err)
	}
	waitFor(f, func(ctx context.Context) bool {
		_, err := ctl.ControllerPublishVolume(ctx, &csipb.ControllerPublishVolumeRequest{VolumeId: id, NodeId: b, VolumeCapability: capability(false)})
		return err == nil
	})
	if rec := f.persisted(id); nodes(rec) != b {
		t.Fatalf("persisted = %+v", rec)
	}
	if got := f.allowed(id); got != hostNQN(b) {
		t.Fatalf("fence = %q", got)
	}

	// Drift, repaired on change: the RDS fence is changed behind the
	// controller's back; the next VolumeAttachment change triggers a check
	// that re-applies the record's fence. First let the checks the
	// publishes above triggered finish, so only the new change can repair.
	checks := func() float64 { return gathered(t, reg, "rds_fence_drift_checks_total", "trigger", "objects-changed") }
	settled := checks()
	for stable := 0; stable < 5; {
		time.Sleep(100 * time.Millisecond)
		if n := checks(); n != settled {
			settled, stable = n, 0
		} else {
			stable++
		}
	}
	if err := f.rds.SetAllowedHost(t.Context(), id, "nqn.2014-08.org.nvmexpress:uuid:mallory"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	if f.allowed(id) == hostNQN(b) || checks() != settled {
		t.Fatal("the fence was repaired without a trigger")
	}
	pv := f.persisted(id).PV
	va := &storagev1.VolumeAttachment{ObjectMeta: metav1.ObjectMeta{Name: f.ns + "-va"},
		Spec: storagev1.VolumeAttachmentSpec{Attacher: csi.DefaultDriverName, NodeName: b, Source: storagev1.VolumeAttachmentSource{PersistentVolumeName: &pv}}}
	if err := direct.Create(t.Context(), va); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = direct.Delete(context.Background(), va) })
	waitFor(f, func(context.Context) bool { return f.allowed(id) == hostNQN(b) })
	if checks() <= settled {
		t.Fatal("repaired, but not by a check the VolumeAttachment change triggered")
	}
}

// wireController builds the controller subcommand's manager on cfg as
// production wires it (flags parsed by the subcommand's own parser), with
// the fixture's simulator, serving CSI on a socket it returns.
func wireController(t *testing.T, f *fixture, cfg *rest.Config, args ...string) (string, manager.Manager, *prometheus.Registry) {
	t.Helper()
	dir := t.TempDir()
	kc := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(kc, kubeconfig, 0o600); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "csi.sock")
	o, _, err := app.ParseControllerFlags(append([]string{"--rds-address=" + f.sim.Server.Addr(), "--rds-key-file=/unused",
		"--rds-insecure-ignore-host-key", "--kubeconfig=" + kc, "--metrics-address=0", "--health-address=0",
		"--endpoint=unix://" + sock, "--drift-check-min-spacing=50ms"}, args...), "test")
	if err != nil {
		t.Fatal(err)
	}
	o.Kube.AllowSecondManager = true // several tests in this process each run one
	drv, err := csi.NewDriver(o.Driver, f.rds, logr.Discard())
	if err != nil {
		t.Fatal(err)
	}
	serve := func(ctx context.Context, drv *csi.Driver) error {
		lis, err := csi.Listen("unix://" + sock)
		if err != nil {
			return err
		}
		return drv.Run(ctx, lis)
	}
	reg := prometheus.NewRegistry()
	mgr, err := app.NewControllerManager(cfg, o, f.rds, drv, serve, reg, logr.Discard())
	if err != nil {
		t.Fatal(err)
	}
	return sock, mgr, reg
}

// controllerClient dials the controller's socket once it is served.
func controllerClient(t *testing.T, f *fixture, sock string) csipb.ControllerClient {
	t.Helper()
	if err := wait.PollUntilContextTimeout(t.Context(), 20*time.Millisecond, 20*time.Second, true, func(context.Context) (bool, error) {
		_, err := os.Stat(sock)
		return err == nil, nil
	}); err != nil {
		t.Fatal("the controller never served its socket")
	}
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	ctl := csipb.NewControllerClient(conn)
	// The socket file appears at bind(), a moment before listen(): retry.
	waitFor(f, func(ctx context.Context) bool {
		_, err := ctl.ControllerGetCapabilities(ctx, &csipb.ControllerGetCapabilitiesRequest{})
		return err == nil
	})
	return ctl
}

// gathered sums the values of a counter's series whose label has value.
func gathered(t *testing.T, reg *prometheus.Registry, name, label, value string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == label && l.GetValue() == value {
					sum += m.GetCounter().GetValue()
				}
			}
		}
	}
	return sum
}
