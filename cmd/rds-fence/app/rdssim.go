package app

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/rds-fence/rds-fence/rds/rdssim"
)

// SimulatorOptions are the rds-sim subcommand's settings.
type SimulatorOptions struct {
	Listen string
	// FabricListen, when set, serves the fabric endpoint nodes' loop
	// transport connects through (rdssim.ServeFabric).
	FabricListen   string
	HostKeyFile    string
	CreateHostKey  bool
	AuthorizedKeys string
	Sim            rdssim.Options
	MaxSessions    int
	Latency        time.Duration
}

// ParseSimulatorFlags parses and validates the simulator's flags.
func ParseSimulatorFlags(args []string) (*SimulatorOptions, error) {
	o := &SimulatorOptions{}
	fs := flag.NewFlagSet("rds-sim", flag.ContinueOnError)
	fs.StringVar(&o.Listen, "listen", "127.0.0.1:2222", "SSH listen address")
	fs.StringVar(&o.FabricListen, "fabric-listen", "", "address of the stand-in NVMe/TCP listener for the nodes' loop transport, e.g. 127.0.0.1:4420 (empty: off)")
	fs.StringVar(&o.Sim.Root, "root", "", "directory standing for the RDS file system (required)")
	fs.StringVar(&o.HostKeyFile, "host-key", "", "SSH host private key (required)")
	fs.BoolVar(&o.CreateHostKey, "create-host-key", false, "create an ed25519 host key at --host-key if missing")
	fs.StringVar(&o.AuthorizedKeys, "authorized-keys", "", "authorized_keys file of client keys (required)")
	fs.StringVar(&o.Sim.Pool, "pool", "storage-pool", "pool mount point")
	fs.Int64Var(&o.Sim.PoolSize, "pool-size", 1<<40, "pool size in bytes")
	fs.IntVar(&o.Sim.SlotMaxLen, "slot-max-len", 32, "longest accepted slot name (negative: unlimited)")
	fs.IntVar(&o.MaxSessions, "max-sessions", 0, "concurrent sessions per connection (0: unlimited)")
	fs.DurationVar(&o.Latency, "latency", 0, "added latency per command")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	var errs []error
	if o.Sim.Root == "" {
		errs = append(errs, errors.New("--root is required"))
	}
	if o.HostKeyFile == "" {
		errs = append(errs, errors.New("--host-key is required"))
	}
	if o.AuthorizedKeys == "" {
		errs = append(errs, errors.New("--authorized-keys is required"))
	}
	if _, _, err := net.SplitHostPort(o.Listen); err != nil {
		errs = append(errs, fmt.Errorf("--listen: %w", err))
	}
	return o, errors.Join(errs...)
}

// StartSimulator loads the keys and starts serving; the caller closes the
// returned server.
func StartSimulator(o *SimulatorOptions) (*rdssim.Server, ssh.PublicKey, error) {
	hostKey, err := loadOrCreateSigner(o.HostKeyFile, o.CreateHostKey)
	if err != nil {
		return nil, nil, fmt.Errorf("host key: %w", err)
	}
	keys, err := loadAuthorizedKeys(o.AuthorizedKeys)
	if err != nil {
		return nil, nil, fmt.Errorf("authorized keys: %w", err)
	}
	sim, err := rdssim.New(o.Sim)
	if err != nil {
		return nil, nil, err
	}
	sim.SetLatency(o.Latency)
	srv, err := rdssim.Serve(sim, rdssim.ServerOptions{Address: o.Listen, HostKey: hostKey, AuthorizedKeys: keys, MaxSessions: o.MaxSessions})
	if err != nil {
		return nil, nil, err
	}
	return srv, hostKey.PublicKey(), nil
}

// RunSimulator serves the simulator until ctx is done.
func RunSimulator(ctx context.Context, args []string) error {
	o, err := ParseSimulatorFlags(args)
	if err != nil {
		return err
	}
	srv, hostKey, err := StartSimulator(o)
	if err != nil {
		return err
	}
	fmt.Printf("rds-sim listening on %s (host key %s)\n", srv.Addr(), ssh.FingerprintSHA256(hostKey))
	if o.FabricListen != "" {
		lis, err := net.Listen("tcp", o.FabricListen)
		if err != nil {
			_ = srv.Close()
			return fmt.Errorf("fabric endpoint: %w", err)
		}
		fabric := rdssim.ServeFabric(srv.Simulator(), lis)
		defer func() { _ = fabric.Close() }()
		fmt.Printf("rds-sim fabric endpoint (loop transport) on %s\n", fabric.Addr())
	}
	<-ctx.Done()
	return srv.Close()
}
