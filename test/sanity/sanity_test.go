package sanity

import (
	"net"
	"path/filepath"
	"testing"

	csipb "github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/go-logr/logr"
	"github.com/kubernetes-csi/csi-test/v5/pkg/sanity"
	. "github.com/onsi/ginkgo/v2"
	"github.com/onsi/ginkgo/v2/types"
	. "github.com/onsi/gomega"

	mount "k8s.io/mount-utils"
	utilexec "k8s.io/utils/exec"

	"github.com/rds-fence/rds-fence/csi"
	"github.com/rds-fence/rds-fence/nodeagent"
	"github.com/rds-fence/rds-fence/rds"
	"github.com/rds-fence/rds-fence/rds/rdssim"
	"github.com/rds-fence/rds-fence/rds/rdssim/simtest"
)

// skipped names the parts of csi-sanity that are not run yet, and why.
// Every other spec must pass.
var skipped = map[string]string{}

// counts records every spec's final state, to prove the suite ran.
var counts = map[string]int{}

var _ = ReportAfterEach(func(r SpecReport) { counts[r.State.String()]++ })

func TestCSISanity(t *testing.T) {
	env := simtest.Start(t, rdssim.Options{PoolSize: 1 << 40}, rdssim.ServerOptions{})
	client := env.Client(t)
	// The nodes' side of the RDS: the loop transport's fabric endpoint.
	fabricLis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fabric := rdssim.ServeFabric(env.Sim, fabricLis)
	t.Cleanup(func() { _ = fabric.Close() })
	port := fabricLis.Addr().(*net.TCPAddr).Port
	drv, err := csi.NewDriver(csi.Options{TargetAddress: "127.0.0.1", TargetPort: port}, client, logr.Discard())
	if err != nil {
		t.Fatal(err)
	}
	att, provisioner := startCluster(t, client)
	drv.WithAttacher(att)
	sock := filepath.Join(t.TempDir(), "csi.sock")
	lis, err := csi.Listen("unix://" + sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := drv.NewGRPCServer(provisioner)
	// The real node service: real loop devices, real mkfs and mounts,
	// real block device nodes.
	node, err := csi.NewNodeServer(csi.NodeOptions{NodeID: sanityNode, TopologyValue: "rds"}, logr.Discard())
	if err != nil {
		t.Fatal(err)
	}
	node.WithVolumes(&csi.NodeVolumes{
		Connector: &nodeagent.LoopConnector{Exec: nodeagent.HostExec{}, StateDir: t.TempDir(), Prefix: "nqn.2000-02.com.mikrotik:pvc-"},
		HostNQN:   sanityHostNQN, NQNPrefix: "nqn.2000-02.com.mikrotik:",
		Mounter: &mount.SafeFormatAndMount{Interface: mount.New(""), Exec: utilexec.New()}})
	csipb.RegisterNodeServer(srv, node)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)

	cfg := sanity.NewTestConfig()
	cfg.Address = "unix://" + sock
	cfg.ControllerAddress = "unix://" + sock
	cfg.TargetPath = filepath.Join(t.TempDir(), "target")
	cfg.StagingPath = filepath.Join(t.TempDir(), "staging")
	cfg.TestVolumeSize = 1 * rds.GiB
	cfg.TestVolumeExpandSize = 2 * rds.GiB
	cfg.IdempotentCount = 2
	sc := sanity.GinkgoTest(&cfg)

	RegisterFailHandler(Fail)
	suite, rep := GinkgoConfiguration()
	for name, why := range skipped {
		t.Logf("skipping csi-sanity %q: %s", name, why)
		suite.SkipStrings = append(suite.SkipStrings, name)
	}
	RunSpecs(t, "rds-fence csi-sanity", suite, rep)
	sc.Finalize()

	// Guard against a vacuous pass: the controller and identity suites must
	// really have run.
	passed := counts[types.SpecStatePassed.String()]
	t.Logf("csi-sanity spec states: %v", counts)
	if passed < 30 {
		t.Fatalf("only %d csi-sanity specs passed; the suite did not really run", passed)
	}
	if n := len(env.Sim.Disks()); n != 0 {
		t.Fatalf("csi-sanity left %d disks behind on the simulator: %v", n, env.Sim.Disks())
	}
}
