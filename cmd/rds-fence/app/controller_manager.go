package app

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
	kubevirtv1 "kubevirt.io/api/core/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/rds-fence/rds-fence/attachment"
	"github.com/rds-fence/rds-fence/attachment/kube"
	"github.com/rds-fence/rds-fence/csi"
	"github.com/rds-fence/rds-fence/rds"
	"github.com/rds-fence/rds-fence/reconciler"
)

// KubeOptions say how the controller reaches Kubernetes.
type KubeOptions struct {
	// Kubeconfig path; empty means in-cluster configuration.
	Kubeconfig string
	// Standalone runs only the volume lifecycle, without Kubernetes and
	// without ControllerPublish (for tests of the RDS path).
	Standalone bool
	// LeaderElect serves CSI only while holding the lease
	// (LeaderElectionNamespace/rds-fence-controller).
	LeaderElect             bool
	LeaderElectionNamespace string
	MetricsAddress          string
	HealthAddress           string
	// AllowSecondManager lets a test process run this manager more than
	// once (controller-runtime refuses a second controller of one name per
	// process). Not a flag: one process runs one controller.
	AllowSecondManager bool
}

func restConfig(kubeconfig string) (*rest.Config, error) {
	if kubeconfig != "" {
		return clientcmd.BuildConfigFromFlags("", kubeconfig)
	}
	return rest.InClusterConfig()
}

// newScheme holds the types the controller reads: core, storage and
// KubeVirt's VMIs and migrations.
func newScheme() *runtime.Scheme {
	s := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(s)
	_ = kubevirtv1.AddToScheme(s)
	return s
}

// NewControllerManager wires the fencing core into a controller-runtime
// manager: a cache with the PV volume-handle index, the events recorder,
// Prometheus metrics on the manager's registry, and one runnable that (as
// leader, when enabled) waits for the cache, rebuilds the attachment store
// until that succeeds, and only then serves CSI on lis.
//
// reg receives the fencing metrics; nil means controller-runtime's registry,
// which the manager serves on the metrics address.
func NewControllerManager(cfg *rest.Config, o *ControllerOptions, storage *rds.Client, drv *csi.Driver,
	serve func(ctx context.Context, drv *csi.Driver) error, reg prometheus.Registerer, log logr.Logger) (manager.Manager, error) {
	if reg == nil {
		reg = metrics.Registry
	}
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                  newScheme(),
		Logger:                  log,
		LeaderElection:          o.Kube.LeaderElect,
		LeaderElectionID:        "rds-fence-controller",
		LeaderElectionNamespace: o.Kube.LeaderElectionNamespace,
		Metrics:                 metricsserver.Options{BindAddress: o.Kube.MetricsAddress},
		HealthProbeBindAddress:  o.Kube.HealthAddress,
		Controller:              config.Controller{SkipNameValidation: &o.Kube.AllowSecondManager},
	})
	if err != nil {
		return nil, err
	}
	ctx := context.Background()
	if err := mgr.GetFieldIndexer().IndexField(ctx, &corev1.PersistentVolume{}, kube.IndexVolumeHandle, kube.IndexPVByHandle); err != nil {
		return nil, err
	}
	store := attachment.NewStore()
	cluster := &kube.Cluster{Driver: o.Driver.Name, Reader: mgr.GetCache(), Writer: mgr.GetClient(), Live: mgr.GetAPIReader()}
	att := &attachment.Manager{
		Store:          store,
		Cluster:        cluster,
		Fence:          &csi.Fencer{Mode: o.Driver.FenceMode, Storage: storage, Prefix: o.Driver.IDs.SlotPrefix},
		Events:         &kube.Events{Recorder: mgr.GetEventRecorder("rds-fence-controller"), Reader: mgr.GetCache(), Log: log},
		Metrics:        attachment.NewMetrics(reg, store),
		Log:            log.WithName("attachment"),
		RequireHostNQN: o.Driver.FenceMode == csi.FenceHostNQN,
	}
	drv.WithAttacher(att)
	ready := make(chan struct{})
	var orphans *reconciler.OrphanScanner
	if o.Reconcile.OrphanScanInterval > 0 {
		ids := o.Driver.IDs
		orphans = &reconciler.OrphanScanner{Storage: storage, Volumes: att, Idle: drv.WhileIdle, Reader: mgr.GetCache(), Live: mgr.GetAPIReader(), Driver: o.Driver.Name,
			Prefix: ids.SlotPrefix, BasePath: ids.BasePath, Owns: ids.Owns, Delete: o.Reconcile.OrphanDelete, MinAge: o.Reconcile.OrphanMinAge,
			Recorder: mgr.GetEventRecorder("rds-fence-controller"), Log: log.WithName("orphans")}
		if err := orphans.RegisterMetrics(reg); err != nil {
			return nil, err
		}
	}
	if o.Kube.HealthAddress != "" && o.Kube.HealthAddress != "0" {
		_ = mgr.AddHealthzCheck("ping", healthz.Ping)
		// Ready once the store is rebuilt and CSI served; a standby replica
		// (leader election on, not elected) is ready as a standby.
		_ = mgr.AddReadyzCheck("serving", func(*http.Request) error {
			select {
			case <-ready:
				return nil
			case <-mgr.Elected():
				return fmt.Errorf("attachment store not rebuilt yet")
			default:
				return nil
			}
		})
	}
	err = mgr.Add(manager.RunnableFunc(func(ctx context.Context) error {
		// Start every informer the fencing core reads before the first
		// publish, so none starts lazily inside a volume lock.
		for _, obj := range []client.Object{&corev1.PersistentVolume{}, &corev1.Node{}, &corev1.PersistentVolumeClaim{}, &corev1.Pod{}, &storagev1.VolumeAttachment{}} {
			if _, err := mgr.GetCache().GetInformer(ctx, obj); err != nil {
				return fmt.Errorf("starting the %T informer: %w", obj, err)
			}
		}
		for _, obj := range []client.Object{&kubevirtv1.VirtualMachineInstance{}, &kubevirtv1.VirtualMachineInstanceMigration{}} {
			if _, err := mgr.GetCache().GetInformer(ctx, obj); err != nil {
				log.Info("KubeVirt informer not started (is KubeVirt installed?); live migrations of RWX block volumes will be refused", "type", fmt.Sprintf("%T", obj), "err", err.Error())
			}
		}
		if !mgr.GetCache().WaitForCacheSync(ctx) {
			return fmt.Errorf("cache did not sync")
		}
		for backoff := time.Second; ; backoff = min(2*backoff, time.Minute) {
			_, err := att.Rebuild(ctx)
			if err == nil {
				break
			}
			log.Error(err, "rebuilding the attachment store failed; not serving CSI yet", "retryIn", backoff)
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(backoff):
			}
		}
		close(ready)
		go att.RunMigrationExpiry(ctx, 15*time.Second)
		if orphans != nil {
			go orphans.Run(ctx, o.Reconcile.OrphanScanInterval)
		}
		if o.Reconcile.DriftInterval > 0 {
			changed := make(chan struct{}, 1)
			signal := driftSignals(o.Driver.Name, changed)
			for _, obj := range []client.Object{&corev1.PersistentVolume{}, &storagev1.VolumeAttachment{}} {
				inf, err := mgr.GetCache().GetInformer(ctx, obj)
				if err != nil {
					return err
				}
				if _, err := inf.AddEventHandler(signal); err != nil {
					return err
				}
			}
			drift := &reconciler.DriftRunner{Check: att.CheckDrift, Checker: &attachment.DriftChecker{NoAttachmentAfter: o.Reconcile.NoAttachmentAfter},
				Interval: o.Reconcile.DriftInterval, MinSpacing: o.Reconcile.DriftMinSpacing,
				Reconnected: o.Reconcile.DriftTrigger, Changed: changed, Log: log.WithName("drift")}
			if err := drift.RegisterMetrics(reg); err != nil {
				return err
			}
			go drift.Run(ctx)
		}
		return serve(ctx, drv)
	}))
	if err != nil {
		return nil, err
	}
	nodes := &reconciler.NodeReconciler{Reader: mgr.GetCache(), Writer: mgr.GetClient(), Live: mgr.GetAPIReader(), Attachments: att, Driver: o.Driver.Name,
		Recorder: mgr.GetEventRecorder("rds-fence-controller"), NotReadyAfter: o.Reconcile.NotReadyWarnAfter,
		Workers: o.Reconcile.ReleaseWorkers, Log: log.WithName("node-loss"),
		Ready: func() bool {
			select {
			case <-ready:
				return true
			default:
				return false
			}
		}}
	if err := nodes.SetupWithManager(mgr, o.Reconcile.SweepInterval); err != nil {
		return nil, err
	}
	return mgr, nil
}

// driftSignals signals changed when something a drift check compares
// changes: this driver's PV attachment annotations and VolumeAttachments'
// attached status (not every status update of every PV).
func driftSignals(driver string, changed chan<- struct{}) toolscache.ResourceEventHandlerFuncs {
	key := func(obj any) (string, bool) {
		switch o := obj.(type) {
		case *corev1.PersistentVolume:
			if o.Spec.CSI == nil || o.Spec.CSI.Driver != driver {
				return "", false
			}
			return o.Annotations[attachment.AnnotationAttachment], true
		case *storagev1.VolumeAttachment:
			if o.Spec.Attacher != driver {
				return "", false
			}
			return fmt.Sprint(o.Status.Attached), true
		}
		return "", false
	}
	return toolscache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) {
			if _, ok := key(obj); ok {
				reconciler.Signal(changed)
			}
		},
		UpdateFunc: func(old, obj any) {
			a, ok := key(old)
			b, _ := key(obj)
			if ok && a != b {
				reconciler.Signal(changed)
			}
		},
	}
}
