package app

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"time"

	"github.com/go-logr/logr"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/rds-fence/rds-fence/csi"
	"github.com/rds-fence/rds-fence/rds"
	"github.com/rds-fence/rds-fence/reconciler"
)

// ControllerOptions are the controller subcommand's settings.
type ControllerOptions struct {
	Endpoint  string
	RDS       RDSOptions
	Driver    csi.Options
	Kube      KubeOptions
	Reconcile ReconcileOptions
}

// ReconcileOptions tune the node-loss reconciler.
type ReconcileOptions struct {
	NotReadyWarnAfter time.Duration
	SweepInterval     time.Duration
	ReleaseWorkers    int
	// Orphaned RDS disks: scanned every OrphanScanInterval, deleted only
	// with OrphanDelete, after OrphanMinAge orphaned.
	OrphanScanInterval time.Duration
	OrphanDelete       bool
	OrphanMinAge       time.Duration
	// Drift checks: every DriftInterval and on DriftTrigger (the RDS
	// connection came back); a holder without an attached VolumeAttachment
	// is reported after NoAttachmentAfter.
	DriftInterval     time.Duration
	DriftMinSpacing   time.Duration
	NoAttachmentAfter time.Duration
	DriftTrigger      <-chan struct{}
}

// RDSOptions say how to reach and trust the RDS over SSH.
type RDSOptions struct {
	Address        string
	User           string
	KeyFile        string
	HostKey        rds.HostKeyOptions
	MaxSessions    int
	CommandTimeout time.Duration
}

// AddFlags registers the RDS connection flags.
func (o *RDSOptions) AddFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.Address, "rds-address", "", "RDS SSH address host:port (required)")
	fs.StringVar(&o.User, "rds-user", "admin", "RouterOS user")
	fs.StringVar(&o.KeyFile, "rds-key-file", "", "private key for public-key authentication (required)")
	fs.StringVar(&o.HostKey.KnownHostsFile, "rds-known-hosts", "", "known_hosts file that pins the RDS host key")
	fs.StringVar(&o.HostKey.PinnedKey, "rds-host-key", "", `pinned RDS host public key, authorized_keys format ("ssh-ed25519 AAAA...")`)
	fs.BoolVar(&o.HostKey.InsecureIgnoreHostKey, "rds-insecure-ignore-host-key", false, "accept any RDS host key (INSECURE; test setups only)")
	fs.IntVar(&o.MaxSessions, "rds-max-sessions", 8, "concurrent SSH sessions on the RDS connection")
	fs.DurationVar(&o.CommandTimeout, "rds-command-timeout", 30*time.Second, "timeout of one RouterOS command")
}

// Validate checks the RDS options without connecting.
func (o *RDSOptions) Validate() error {
	var errs []error
	if o.Address == "" {
		errs = append(errs, errors.New("--rds-address is required"))
	}
	if o.KeyFile == "" {
		errs = append(errs, errors.New("--rds-key-file is required"))
	}
	if o.HostKey.KnownHostsFile == "" && o.HostKey.PinnedKey == "" && !o.HostKey.InsecureIgnoreHostKey {
		errs = append(errs, errors.New("the RDS host key must be pinned: set --rds-known-hosts or --rds-host-key"))
	}
	if o.MaxSessions <= 0 {
		errs = append(errs, fmt.Errorf("--rds-max-sessions must be positive, got %d", o.MaxSessions))
	}
	return errors.Join(errs...)
}

// NewClient builds the RDS client (it connects lazily).
func (o *RDSOptions) NewClient(log logr.Logger, onReconnect func()) (*rds.Client, error) {
	signer, err := loadSigner(o.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("RDS key: %w", err)
	}
	hk, err := rds.HostKeyCallback(o.HostKey, log)
	if err != nil {
		return nil, err
	}
	return rds.NewClient(rds.Config{Address: o.Address, User: o.User, Signer: signer, HostKeyCallback: hk,
		MaxSessions: o.MaxSessions, CommandTimeout: o.CommandTimeout, Logger: log, OnReconnect: onReconnect})
}

// ParseControllerFlags parses args into options and validates them.
func ParseControllerFlags(args []string, version string) (*ControllerOptions, func() logr.Logger, error) {
	o := &ControllerOptions{}
	fs := flag.NewFlagSet("controller", flag.ContinueOnError)
	newLog := logFlags(fs)
	fs.StringVar(&o.Endpoint, "endpoint", "unix:///csi/csi.sock", "CSI endpoint")
	o.RDS.AddFlags(fs)
	d := &o.Driver
	fs.StringVar(&d.Name, "driver-name", csi.DefaultDriverName, "CSI driver name")
	fs.StringVar(&d.TargetAddress, "target-address", "", "NVMe/TCP address nodes connect to (default: the host of --rds-address)")
	fs.IntVar(&d.TargetPort, "target-port", 4420, "NVMe/TCP port of the exports")
	fs.StringVar(&d.Pool, "pool", "storage-pool", "RDS mount point holding the backing files")
	fs.StringVar(&d.IDs.BasePath, "base-path", "", "directory of backing files on the RDS (default /<pool>/kubernetes-volumes)")
	fs.StringVar(&d.IDs.SlotPrefix, "slot-prefix", "pvc-", "slot prefix that marks this driver's disks")
	fs.StringVar(&d.IDs.NQNPrefix, "nqn-prefix", "nqn.2000-02.com.mikrotik:", "subsystem NQN prefix")
	fs.StringVar(&d.TopologyValue, "topology-value", "rds", "value of the topology segment this RDS serves")
	fs.StringVar((*string)(&d.FenceMode), "fence-mode", string(csi.FenceHostNQN), "storage-side fence: hostnqn (the RDS admits only the holder's host NQN) or off")
	k := &o.Kube
	fs.StringVar(&k.Kubeconfig, "kubeconfig", "", "kubeconfig file (default: in-cluster configuration)")
	fs.BoolVar(&k.Standalone, "standalone", false, "volume lifecycle only: no Kubernetes, no ControllerPublish (tests of the RDS path)")
	fs.BoolVar(&k.LeaderElect, "leader-elect", true, "serve CSI only while holding the rds-fence-controller lease (the attachment store is in memory: two active controllers could each grant a volume)")
	fs.StringVar(&k.LeaderElectionNamespace, "leader-election-namespace", "", "namespace of the lease (default: the pod's)")
	fs.StringVar(&k.MetricsAddress, "metrics-address", ":9809", `Prometheus metrics address ("0" disables)`)
	fs.StringVar(&k.HealthAddress, "health-address", ":9808", `healthz/readyz address ("0" disables); ready once the store is rebuilt`)
	r := &o.Reconcile
	fs.DurationVar(&r.NotReadyWarnAfter, "node-not-ready-warning-after", 2*time.Minute, "after this long NotReady, a node's claims get a HolderNodeNotReady event (their volumes stay attached)")
	fs.DurationVar(&r.SweepInterval, "node-sweep-interval", 30*time.Second, "how often every holding node is checked (catches nodes deleted while no controller led)")
	fs.IntVar(&r.ReleaseWorkers, "release-workers", 8, "volumes of a lost node released at once")
	fs.DurationVar(&r.OrphanScanInterval, "orphan-scan-interval", 10*time.Minute, "how often RDS disks of this driver without a PV are looked for (reported by event and metric)")
	fs.DurationVar(&r.DriftInterval, "drift-check-interval", 5*time.Minute, "how often PV records, VolumeAttachments and the RDS fence are compared with the controller's records (also after an RDS reconnect)")
	fs.DurationVar(&r.DriftMinSpacing, "drift-check-min-spacing", time.Minute, "a drift check signalled by a PV or VolumeAttachment change, or an RDS reconnect, runs at most this often")
	fs.DurationVar(&r.NoAttachmentAfter, "record-without-attachment-after", 10*time.Minute, "report a holder whose VolumeAttachment has not been attached for this long")
	fs.BoolVar(&r.OrphanDelete, "orphan-delete", false, "delete orphaned disks and their files (default: report only)")
	fs.DurationVar(&r.OrphanMinAge, "orphan-min-age", 24*time.Hour, "with --orphan-delete: how long a disk must have been seen orphaned (by this controller) before it is deleted")
	if err := fs.Parse(args); err != nil {
		return nil, nil, err
	}
	if r.SweepInterval <= 0 || r.ReleaseWorkers <= 0 || r.NotReadyWarnAfter <= 0 || r.OrphanScanInterval <= 0 || r.DriftInterval <= 0 || r.DriftMinSpacing <= 0 || r.NoAttachmentAfter <= 0 {
		return nil, nil, errors.New("--node-not-ready-warning-after, --node-sweep-interval, --release-workers, --orphan-scan-interval, --drift-check-interval, --drift-check-min-spacing and --record-without-attachment-after must be positive")
	}
	if r.OrphanMinAge < time.Hour {
		// A disk is orphaned for a moment between CreateVolume and the
		// provisioner creating its PV; an hour is far beyond that.
		return nil, nil, fmt.Errorf("--orphan-min-age must be at least 1h, got %s", r.OrphanMinAge)
	}
	d.Version = version
	if d.TargetAddress == "" {
		d.TargetAddress = hostOf(o.RDS.Address)
	}
	d.SetDefaults()
	if err := errors.Join(o.RDS.Validate(), d.Validate()); err != nil {
		return nil, nil, err
	}
	return o, newLog, nil
}

// RunController runs the CSI controller until ctx is done.
func RunController(ctx context.Context, args []string, version string) error {
	o, newLog, err := ParseControllerFlags(args, version)
	if err != nil {
		return err
	}
	log := newLog()
	ctrllog.SetLogger(log) // controller-runtime's own components (certwatcher, caches) log through it
	reconnected := make(chan struct{}, 1)
	o.Reconcile.DriftTrigger = reconnected
	client, err := o.RDS.NewClient(log, func() { reconciler.Signal(reconnected) }) // a full drift check
	if err != nil {
		return err
	}
	defer func() { _ = client.Close() }()
	drv, err := csi.NewDriver(o.Driver, client, log)
	if err != nil {
		return err
	}
	serve := func(ctx context.Context, drv *csi.Driver) error {
		lis, err := csi.Listen(o.Endpoint)
		if err != nil {
			return err
		}
		return drv.Run(ctx, lis)
	}
	if o.Kube.Standalone {
		log.Info("standalone: no Kubernetes, ControllerPublish is not offered")
		return serve(ctx, drv)
	}
	cfg, err := restConfig(o.Kube.Kubeconfig)
	if err != nil {
		return fmt.Errorf("kubernetes configuration: %w", err)
	}
	mgr, err := NewControllerManager(cfg, o, client, drv, serve, nil, log)
	if err != nil {
		return err
	}
	return mgr.Start(ctx)
}
