package app

import (
	"context"
	"errors"
	"net"
	"net/http"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/events"
	mount "k8s.io/mount-utils"
	utilexec "k8s.io/utils/exec"

	"github.com/rds-fence/rds-fence/csi"
	"github.com/rds-fence/rds-fence/nodeagent"
)

// nodeVolumes builds the transport o.Transport names ("none": nil). For
// NVMe/TCP that is the kernel connector, the device-mapper stable device
// above each namespace, the staged-volume records and the monitor, which
// is started here: it first watches the volumes staged before this
// process started (Resume), then every volume staged from now on.
func nodeVolumes(ctx context.Context, o *NodeOptions, hostNQN string, cfg *rest.Config, reg prometheus.Registerer, log logr.Logger) (*csi.NodeVolumes, error) {
	mounter := &mount.SafeFormatAndMount{Interface: mount.New(""), Exec: utilexec.New()}
	prefix := o.NQNPrefix + o.SlotPrefix
	switch o.Transport {
	case "loop":
		return &csi.NodeVolumes{
			Connector: &nodeagent.LoopConnector{Exec: nodeagent.HostExec{}, StateDir: o.StateDir, Prefix: prefix},
			HostNQN:   hostNQN, NQNPrefix: o.NQNPrefix, Mounter: mounter}, nil
	case "nvme":
	default:
		return nil, nil
	}
	conn := &nodeagent.NVMeConnector{SysfsRoot: o.SysRoot, DevRoot: o.DevRoot, Prefix: prefix,
		CtrlLossTmo: o.CtrlLossTmo, ReconnectDelay: o.ReconnectDelay, KeepAliveTmo: o.KeepAliveTmo}
	vols := &csi.NodeVolumes{Connector: conn, HostNQN: hostNQN, NQNPrefix: o.NQNPrefix, Mounter: mounter,
		Mapper: &nodeagent.DMMultipath{Exec: nodeagent.HostExec{}, Prefix: csi.MapPrefix, SysRoot: o.SysRoot, DevRoot: o.DevRoot},
		Staged: &nodeagent.StagedStore{Dir: o.StateDir}}
	rec, err := nodeEvents(ctx, cfg)
	if err != nil {
		return nil, err
	}
	mon := &nodeagent.Monitor{Fabric: conn, Interval: o.MonitorInterval, Keep: vols.Keep, OnFenced: vols.FailQueued, FenceConfirmWindow: o.FenceConfirmWindow,
		OnChange: nodeagent.NewReporter(reg, rec, o.CSI.NodeID, o.NQNPrefix).OnChange, Log: log.WithName("monitor")}
	vols.Watcher = mon
	recs, err := vols.Resume()
	for _, r := range recs {
		log.Info("watching a volume staged before this start", "volume", r.VolumeID, "nqn", r.Target.SubsystemNQN)
	}
	if err != nil {
		log.Error(err, "some staged-volume records cannot be read; those volumes are not watched until they are staged again")
	}
	go func() {
		mon.Check(ctx) // at once: reconnect and retarget what was staged before
		mon.Run(ctx)
	}()
	return vols, nil
}

// nodeEvents is an events.k8s.io recorder for the node agent's events.
func nodeEvents(ctx context.Context, cfg *rest.Config) (events.EventRecorder, error) {
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	b := events.NewBroadcaster(&events.EventSinkImpl{Interface: cs.EventsV1()})
	b.StartRecordingToSink(ctx.Done())
	return b.NewRecorder(newScheme(), "rds-fence-node"), nil
}

// serveMetrics serves reg on addr ("0": not at all) until ctx ends.
func serveMetrics(ctx context.Context, addr string, reg *prometheus.Registry, log logr.Logger) error {
	if addr == "0" || addr == "" {
		return nil
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: promhttp.HandlerFor(reg, promhttp.HandlerOpts{}), ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		_ = srv.Close()
	}()
	go func() {
		if err := srv.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error(err, "metrics server stopped")
		}
	}()
	log.Info("serving metrics", "address", lis.Addr().String())
	return nil
}
