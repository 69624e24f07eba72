package app

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/rds-fence/rds-fence/csi"
	"github.com/rds-fence/rds-fence/nodeagent"
)

// NodeOptions are the node subcommand's settings.
type NodeOptions struct {
	Endpoint   string
	Kubeconfig string
	CSI        csi.NodeOptions
	// HostRoot is where the host's file system is mounted ("" or "/" on
	// the host itself); HostNQNPath is relative to it.
	HostRoot    string
	HostNQNPath string
	// SysRoot and DevRoot: where sysfs and /dev are (defaults /sys, /dev).
	SysRoot, DevRoot string
	MetricsAddress   string
	// Reannotate: how often the host NQN annotation is re-asserted.
	Reannotate time.Duration
	// Transport attaches volumes: "nvme" (NVMe/TCP, watched by the node
	// agent's monitor), "loop" (the RDS simulator's fabric endpoint and
	// loop devices) or "none".
	Transport  string
	StateDir   string
	NQNPrefix  string
	SlotPrefix string
	// NVMe/TCP: kernel connect options and the monitor's period.
	CtrlLossTmo, ReconnectDelay, KeepAliveTmo int
	MonitorInterval                           time.Duration
	FenceConfirmWindow                        time.Duration
}

// ParseNodeFlags parses args into options and validates them.
func ParseNodeFlags(args []string, version string) (*NodeOptions, func() logr.Logger, error) {
	o := &NodeOptions{}
	fs := flag.NewFlagSet("node", flag.ContinueOnError)
	newLog := logFlags(fs)
	fs.StringVar(&o.Endpoint, "endpoint", "unix:///csi/csi.sock", "CSI endpoint")
	fs.StringVar(&o.Kubeconfig, "kubeconfig", "", "kubeconfig file (default: in-cluster configuration)")
	fs.StringVar(&o.CSI.NodeID, "node-name", os.Getenv("NODE_NAME"), "this node's Kubernetes name (default $NODE_NAME)")
	fs.StringVar(&o.CSI.Name, "driver-name", csi.DefaultDriverName, "CSI driver name")
	fs.StringVar(&o.CSI.TopologyKey, "topology-key", csi.DefaultTopologyKey, "topology key of the RDS this node reaches")
	fs.StringVar(&o.CSI.TopologyValue, "topology-value", "rds", "topology value of the RDS this node reaches (the controller's --topology-value)")
	fs.StringVar(&o.HostRoot, "host-root", "", "where the host's file system is mounted in this container (empty: the host itself)")
	fs.StringVar(&o.SysRoot, "sys-root", "/sys", "where sysfs is mounted")
	fs.StringVar(&o.DevRoot, "dev-root", "/dev", "where the host's /dev is mounted")
	fs.StringVar(&o.MetricsAddress, "metrics-address", ":9812", `Prometheus metrics address ("0" disables)`)
	fs.StringVar(&o.HostNQNPath, "host-nqn-file", nodeagent.DefaultHostNQNPath, "the host's NVMe host NQN file (created with a stable random NQN if absent)")
	fs.DurationVar(&o.Reannotate, "host-nqn-reannotate", 5*time.Minute, "how often the host NQN annotation on the Node is re-asserted")
	fs.StringVar(&o.Transport, "transport", "none", "how volumes are attached: nvme (NVMe/TCP through the kernel), loop (the RDS simulator's fabric endpoint; test and local environments) or none (NodeGetInfo only)")
	fs.IntVar(&o.CtrlLossTmo, "nvme-ctrl-loss-tmo", nodeagent.DefaultCtrlLossTmo, "seconds the kernel keeps reconnecting a lost controller before the node agent's monitor takes over (it never gives up, and it can tell a fenced volume from an unreachable one; -1: the kernel retries forever and a fenced volume is never detected)")
	fs.IntVar(&o.ReconnectDelay, "nvme-reconnect-delay", 2, "seconds between the kernel's reconnect attempts")
	fs.IntVar(&o.KeepAliveTmo, "nvme-keep-alive-tmo", 5, "NVMe keep-alive timeout in seconds (detects a silent partition)")
	fs.DurationVar(&o.MonitorInterval, "monitor-interval", 2*time.Second, "how often the node agent checks that every staged volume is connected")
	fs.DurationVar(&o.FenceConfirmWindow, "fence-confirm-window", 2*time.Minute, "how long the storage must keep refusing this node (at least 3 refusals) before a volume counts as fenced: its waiting I/O is then failed and it is never connected here again until unstaged")
	fs.StringVar(&o.StateDir, "state-dir", "/var/lib/rds-fence", "where the node plugin remembers what it attached")
	fs.StringVar(&o.NQNPrefix, "nqn-prefix", "nqn.2000-02.com.mikrotik:", "subsystem NQN prefix (the controller's --nqn-prefix)")
	fs.StringVar(&o.SlotPrefix, "slot-prefix", "pvc-", "slot prefix of this driver's volumes (the controller's --slot-prefix)")
	if err := fs.Parse(args); err != nil {
		return nil, nil, err
	}
	o.CSI.Version = version
	var errs []error
	if o.CSI.NodeID == "" {
		errs = append(errs, errors.New("--node-name (or $NODE_NAME) is required"))
	}
	if o.CSI.TopologyValue == "" {
		errs = append(errs, errors.New("--topology-value must not be empty"))
	}
	if o.Transport != "nvme" && o.Transport != "loop" && o.Transport != "none" {
		errs = append(errs, fmt.Errorf("--transport must be nvme, loop or none, got %q", o.Transport))
	}
	if o.ReconnectDelay <= 0 || o.KeepAliveTmo <= 0 || o.MonitorInterval <= 0 || o.FenceConfirmWindow <= 0 || o.CtrlLossTmo < -1 || o.CtrlLossTmo == 0 {
		errs = append(errs, errors.New("--nvme-reconnect-delay, --nvme-keep-alive-tmo, --monitor-interval and --fence-confirm-window must be positive, --nvme-ctrl-loss-tmo positive or -1"))
	}
	if o.Reannotate <= 0 {
		errs = append(errs, fmt.Errorf("--host-nqn-reannotate must be positive, got %s", o.Reannotate))
	}
	return o, newLog, errors.Join(errs...)
}

// RunNode runs the node plugin until ctx is done: it makes sure the host
// has a host NQN, publishes it on the Node object (retrying until the API
// server takes it, then re-asserting it), and serves CSI.
func RunNode(ctx context.Context, args []string, version string) error {
	o, newLog, err := ParseNodeFlags(args, version)
	if err != nil {
		return err
	}
	log := newLog()
	ctrllog.SetLogger(log)
	nqn, created, err := nodeagent.EnsureHostNQN(o.HostRoot, o.HostNQNPath)
	if err != nil {
		return err
	}
	log.Info("host NQN", "nqn", nqn, "created", created, "file", o.HostNQNPath)
	cfg, err := restConfig(o.Kubeconfig)
	if err != nil {
		return fmt.Errorf("kubernetes configuration: %w", err)
	}
	c, err := client.New(cfg, client.Options{Scheme: newScheme()})
	if err != nil {
		return err
	}
	go keepHostNQN(ctx, c, o, nqn, log)
	srv, err := csi.NewNodeServer(o.CSI, log)
	if err != nil {
		return err
	}
	reg := prometheus.NewRegistry()
	vols, err := nodeVolumes(ctx, o, nqn, cfg, reg, log)
	if err != nil {
		return err
	}
	if vols != nil {
		srv.WithVolumes(vols)
	}
	if err := serveMetrics(ctx, o.MetricsAddress, reg, log); err != nil {
		return err
	}
	lis, err := csi.Listen(o.Endpoint)
	if err != nil {
		return err
	}
	return srv.Run(ctx, lis)
}

// keepHostNQN publishes the annotation with backoff until it succeeds, then
// re-asserts it every o.Reannotate (someone may have removed it).
func keepHostNQN(ctx context.Context, c client.Client, o *NodeOptions, nqn string, log logr.Logger) {
	backoff := time.Second
	for {
		wait := o.Reannotate
		if err := nodeagent.PublishHostNQN(ctx, c, o.CSI.NodeID, nqn); err != nil {
			log.Error(err, "publishing the host NQN; the controller refuses this node's volumes until it is there", "retryIn", backoff)
			wait, backoff = backoff, min(2*backoff, time.Minute)
		} else {
			backoff = time.Second
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}
