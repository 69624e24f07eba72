package csi

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	csipb "github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/go-logr/logr"
	"github.com/kubernetes-csi/csi-lib-utils/protosanitizer"
	"google.golang.org/grpc"

	"github.com/rds-fence/rds-fence/rds"
)

// Storage is what the controller needs from the RDS. *rds.Client
// implements it; every error wraps one of the rds sentinels.
type Storage interface {
	CreateDisk(ctx context.Context, o rds.CreateOptions) error
	GetDisk(ctx context.Context, slot string) (*rds.Disk, error)
	ListDisks(ctx context.Context, prefix string) ([]rds.Disk, error)
	ResizeDisk(ctx context.Context, slot string, sizeBytes int64) error
	DeleteDisk(ctx context.Context, slot, filePath string) error
	Capacity(ctx context.Context, pool string) (rds.Capacity, error)
	Ping(ctx context.Context) error
}

var _ Storage = (*rds.Client)(nil)

// Options configure the driver. Defaults are set by SetDefaults.
type Options struct {
	// Name is the CSI driver name.
	Name string
	// Version is reported by GetPluginInfo.
	Version string
	// IDs is the volume ID scheme.
	IDs VolumeIDs
	// Pool is the RDS mount point that holds the backing files.
	Pool string
	// TargetAddress and TargetPort are where nodes reach the NVMe/TCP
	// exports (often a storage network address, not the SSH address).
	TargetAddress string
	TargetPort    int
	// TopologyKey/TopologyValue form the one topology segment this RDS
	// serves; nodes that can reach it report the same segment.
	TopologyKey, TopologyValue string
	// DefaultSize is used when CreateVolume asks for no size (default 1 GiB).
	DefaultSize int64
	// ProbeTimeout bounds the RDS check of Probe (default 5s).
	ProbeTimeout time.Duration
	// FenceMode selects the storage-side fence (default FenceHostNQN).
	FenceMode FenceMode
}

// Default driver identity.
const (
	DefaultDriverName  = "rds-fence.csi.dev"
	DefaultTopologyKey = "topology.rds-fence.csi.dev/rds"
)

// SetDefaults fills unset fields.
func (o *Options) SetDefaults() {
	if o.Name == "" {
		o.Name = DefaultDriverName
	}
	if o.Version == "" {
		o.Version = "dev"
	}
	if o.IDs.SlotPrefix == "" {
		o.IDs.SlotPrefix = "pvc-"
	}
	if o.IDs.NQNPrefix == "" {
		o.IDs.NQNPrefix = "nqn.2000-02.com.mikrotik:"
	}
	if o.Pool == "" {
		o.Pool = "storage-pool"
	}
	if o.IDs.BasePath == "" {
		o.IDs.BasePath = "/" + o.Pool + "/kubernetes-volumes"
	}
	if o.TargetPort == 0 {
		o.TargetPort = 4420
	}
	if o.TopologyKey == "" {
		o.TopologyKey = DefaultTopologyKey
	}
	if o.TopologyValue == "" {
		o.TopologyValue = "rds"
	}
	if o.DefaultSize == 0 {
		o.DefaultSize = rds.GiB
	}
	if o.ProbeTimeout == 0 {
		o.ProbeTimeout = 5 * time.Second
	}
	if o.FenceMode == "" {
		o.FenceMode = FenceHostNQN
	}
}

// Validate checks the options after SetDefaults.
func (o *Options) Validate() error {
	var errs []error
	if err := o.IDs.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := rds.ValidatePool(o.Pool); err != nil {
		errs = append(errs, err)
	}
	if !strings.HasPrefix(o.IDs.BasePath, "/"+o.Pool+"/") {
		errs = append(errs, fmt.Errorf("base path %q must be inside the pool /%s", o.IDs.BasePath, o.Pool))
	}
	if o.TargetAddress == "" {
		errs = append(errs, errors.New("the NVMe/TCP target address is required"))
	}
	if o.FenceMode != FenceHostNQN && o.FenceMode != FenceOff {
		errs = append(errs, fmt.Errorf("fence mode %q must be %q or %q", o.FenceMode, FenceHostNQN, FenceOff))
	}
	if o.TargetPort <= 0 || o.TargetPort > 65535 {
		errs = append(errs, fmt.Errorf("target port %d out of range", o.TargetPort))
	}
	return errors.Join(errs...)
}

// Driver serves the CSI services over gRPC.
type Driver struct {
	csipb.UnimplementedIdentityServer
	csipb.UnimplementedControllerServer

	opts     Options
	storage  Storage
	log      logr.Logger
	inflight *inFlight
	attacher Attacher // nil: no Kubernetes, no publish
}

// WithAttacher enables ControllerPublish/Unpublish through the fencing core.
func (d *Driver) WithAttacher(a Attacher) *Driver {
	d.attacher = a
	return d
}

// NewDriver builds a driver; opts are defaulted and validated.
func NewDriver(opts Options, storage Storage, log logr.Logger) (*Driver, error) {
	opts.SetDefaults()
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	if storage == nil {
		return nil, errors.New("storage is required")
	}
	return &Driver{opts: opts, storage: storage, log: log.WithName("csi"), inflight: newInFlight()}, nil
}

// Listen opens a CSI endpoint: "unix:///path/csi.sock" (a stale socket file
// is removed) or "tcp://host:port".
func Listen(endpoint string) (net.Listener, error) {
	u, err := url.Parse(endpoint)
	if err != nil {
		return nil, fmt.Errorf("endpoint %q: %w", endpoint, err)
	}
	switch u.Scheme {
	case "unix":
		path := u.Path
		if u.Host != "" {
			path = filepath.Join(u.Host, u.Path)
		}
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("removing stale socket %s: %w", path, err)
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
			return nil, err
		}
		return net.Listen("unix", path)
	case "tcp":
		return net.Listen("tcp", u.Host)
	}
	return nil, fmt.Errorf("endpoint %q: scheme must be unix or tcp", endpoint)
}

// NewGRPCServer returns a gRPC server with the driver's services registered
// and every call logged (requests sanitised of secrets). Extra options (for
// example more interceptors, chained after the logger) are appended.
func (d *Driver) NewGRPCServer(extra ...grpc.ServerOption) *grpc.Server {
	srv := grpc.NewServer(append([]grpc.ServerOption{grpc.ChainUnaryInterceptor(d.logCall)}, extra...)...)
	csipb.RegisterIdentityServer(srv, d)
	csipb.RegisterControllerServer(srv, d)
	return srv
}

// Run serves on lis until ctx is done.
func (d *Driver) Run(ctx context.Context, lis net.Listener) error {
	srv := d.NewGRPCServer()
	go func() {
		<-ctx.Done()
		srv.GracefulStop()
	}()
	d.log.Info("serving CSI", "address", lis.Addr().String(), "driver", d.opts.Name)
	return srv.Serve(lis)
}

func (d *Driver) logCall(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	start := time.Now()
	log := d.log.WithValues("method", info.FullMethod)
	log.V(4).Info("grpc request", "request", protosanitizer.StripSecrets(req).String())
	resp, err := handler(ctx, req)
	if err != nil {
		log.Error(err, "grpc call failed", "duration", time.Since(start))
	} else {
		log.V(2).Info("grpc call succeeded", "duration", time.Since(start))
	}
	return resp, err
}
