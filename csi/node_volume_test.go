package csi

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	csipb "github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/go-logr/logr"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	mount "k8s.io/mount-utils"
	utilexec "k8s.io/utils/exec"

	"github.com/rds-fence/rds-fence/nodeagent"
	"github.com/rds-fence/rds-fence/rds/rdssim"
)

const (
	testHost = "nqn.2014-08.org.nvmexpress:uuid:node-test"
	testNQNs = "nqn.2000-02.com.mikrotik:"
)

// nodeWithDisk runs the node service over the loop transport against an
// in-process simulator holding one 64 MiB volume whose fence admits
// allowed. It returns the server, the volume ID and its volume context.
func nodeWithDisk(t *testing.T, allowed string) (*NodeServer, string, map[string]string) {
	n, id, vc, _ := nodeWithSim(t, allowed, "64M")
	return n, id, vc
}

func nodeWithSim(t *testing.T, allowed, size string) (*NodeServer, string, map[string]string, *rdssim.Simulator) {
	t.Helper()
	sim, err := rdssim.New(rdssim.Options{Root: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := rdssim.ServeFabric(sim, lis)
	t.Cleanup(func() { _ = f.Close() })
	port := lis.Addr().(*net.TCPAddr).Port
	id := "pvc-000000000000000000000000beef"
	sim.Exec(fmt.Sprintf(`/disk add type=file file-path="/storage-pool/kubernetes-volumes/%s.img" file-size=%s slot="%s" nvme-tcp-export=yes nvme-tcp-server-port=%d nvme-tcp-server-nqn="%s%s" nvme-tcp-server-allow-host-name="%s"`,
		id, size, id, port, testNQNs, id, allowed))
	n, err := NewNodeServer(NodeOptions{NodeID: "node-test", TopologyValue: "rds"}, logr.Discard())
	if err != nil {
		t.Fatal(err)
	}
	conn := &nodeagent.LoopConnector{Exec: nodeagent.HostExec{}, StateDir: t.TempDir(), Prefix: testNQNs + "pvc-"}
	t.Cleanup(func() { _ = conn.Disconnect(context.Background(), testNQNs+id) })
	n.WithVolumes(&NodeVolumes{Connector: conn, HostNQN: testHost, NQNPrefix: testNQNs,
		Mounter: &mount.SafeFormatAndMount{Interface: mount.New(""), Exec: utilexec.New()}})
	vc := map[string]string{CtxNQN: testNQNs + id, CtxTargetAddress: "127.0.0.1", CtxTargetPort: strconv.Itoa(port)}
	return n, id, vc, sim
}

func fsCap(fs string) *csipb.VolumeCapability {
	return &csipb.VolumeCapability{AccessType: &csipb.VolumeCapability_Mount{Mount: &csipb.VolumeCapability_MountVolume{FsType: fs}},
		AccessMode: &csipb.VolumeCapability_AccessMode{Mode: csipb.VolumeCapability_AccessMode_SINGLE_NODE_WRITER}}
}

func rawCap() *csipb.VolumeCapability {
	return &csipb.VolumeCapability{AccessType: &csipb.VolumeCapability_Block{Block: &csipb.VolumeCapability_BlockVolume{}},
		AccessMode: &csipb.VolumeCapability_AccessMode{Mode: csipb.VolumeCapability_AccessMode_SINGLE_NODE_WRITER}}
}

func wantNodeCode(t *testing.T, err error, code codes.Code, part string) {
	t.Helper()
	if status.Code(err) != code || !strings.Contains(err.Error(), part) {
		t.Fatalf("error %v, want %s mentioning %q", err, code, part)
	}
}

// TestNodeStageNeverReformats: data written through a staged file system
// survives unstage and restage; a restage asking for another file system
// fails instead of formatting over the data.
func TestNodeStageNeverReformats(t *testing.T) {
	n, id, vc := nodeWithDisk(t, testHost)
	ctx := t.Context()
	staging, target := filepath.Join(t.TempDir(), "staging"), filepath.Join(t.TempDir(), "target")
	stage := func(c *csipb.VolumeCapability) error {
		_, err := n.NodeStageVolume(ctx, &csipb.NodeStageVolumeRequest{VolumeId: id, StagingTargetPath: staging, VolumeCapability: c,
			VolumeContext: vc, PublishContext: map[string]string{PubCtxHolder: "node-test"}})
		return err
	}
	unstage := func() {
		t.Helper()
		if _, err := n.NodeUnstageVolume(ctx, &csipb.NodeUnstageVolumeRequest{VolumeId: id, StagingTargetPath: staging}); err != nil {
			t.Fatal(err)
		}
	}
	if err := stage(fsCap("")); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = n.NodeUnstageVolume(context.Background(), &csipb.NodeUnstageVolumeRequest{VolumeId: id, StagingTargetPath: staging})
	})
	if err := stage(fsCap("")); err != nil { // idempotent
		t.Fatal(err)
	}
	if _, err := n.NodePublishVolume(ctx, &csipb.NodePublishVolumeRequest{VolumeId: id, StagingTargetPath: staging, TargetPath: target,
		VolumeCapability: fsCap(""), VolumeContext: vc}); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(target, "data"), []byte("precious"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := n.NodeUnpublishVolume(ctx, &csipb.NodeUnpublishVolumeRequest{VolumeId: id, TargetPath: target}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(target); !os.IsNotExist(err) {
		t.Fatalf("target left behind: %v", err)
	}
	unstage()
	// Restaged: the data is there (no format of a disk that has one).
	if err := stage(fsCap("ext4")); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(staging, "data")); err != nil || string(b) != "precious" {
		t.Fatalf("data after restage: %q, %v", b, err)
	}
	unstage()
	// Another file system asked for: refused, the data untouched, and
	// nothing the failed stage attached is left behind (the kubelet never
	// unstages after a final error).
	if err := stage(fsCap("xfs")); err == nil {
		t.Fatal("an ext4 volume was staged as xfs")
	}
	if _, err := n.vols.Connector.Device(ctx, testNQNs+id); !errors.Is(err, nodeagent.ErrNotConnected) {
		t.Fatalf("a failed stage left the volume attached: %v", err)
	}
	if err := stage(fsCap("ext4")); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(staging, "data")); err != nil || string(b) != "precious" {
		t.Fatalf("data after a refused xfs stage: %q, %v", b, err)
	}
}

// TestNodeBlockPublishIsADeviceNode: a block volume is published as a
// device node with the attached device's major:minor, not a bind mount.
func TestNodeBlockPublishIsADeviceNode(t *testing.T) {
	n, id, vc := nodeWithDisk(t, testHost)
	ctx := t.Context()
	staging, target := t.TempDir(), filepath.Join(t.TempDir(), "dev", "block")
	if _, err := n.NodeStageVolume(ctx, &csipb.NodeStageVolumeRequest{VolumeId: id, StagingTargetPath: staging, VolumeCapability: rawCap(), VolumeContext: vc}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = n.NodeUnstageVolume(context.Background(), &csipb.NodeUnstageVolumeRequest{VolumeId: id, StagingTargetPath: staging})
	})
	pub := &csipb.NodePublishVolumeRequest{VolumeId: id, StagingTargetPath: staging, TargetPath: target, VolumeCapability: rawCap(), VolumeContext: vc}
	for range 2 { // idempotent
		if _, err := n.NodePublishVolume(ctx, pub); err != nil {
			t.Fatal(err)
		}
	}
	dev, err := n.vols.Connector.Device(ctx, testNQNs+id)
	if err != nil {
		t.Fatal(err)
	}
	var d, p unix.Stat_t
	if unix.Stat(dev, &d) != nil || unix.Lstat(target, &p) != nil || p.Mode&unix.S_IFMT != unix.S_IFBLK || p.Rdev != d.Rdev {
		t.Fatalf("target %s is not the device node of %s", target, dev)
	}
	if _, err := n.NodeUnpublishVolume(ctx, &csipb.NodeUnpublishVolumeRequest{VolumeId: id, TargetPath: target}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(target); !os.IsNotExist(err) {
		t.Fatalf("device node left behind: %v", err)
	}
}

// TestNodeStageRefusals: a volume published to another node, or one the
// storage's fence does not admit this node to, is never attached.
func TestNodeStageRefusals(t *testing.T) {
	n, id, vc := nodeWithDisk(t, "nqn.2014-08.org.nvmexpress:uuid:someone-else")
	ctx := t.Context()
	req := &csipb.NodeStageVolumeRequest{VolumeId: id, StagingTargetPath: t.TempDir(), VolumeCapability: fsCap(""), VolumeContext: vc,
		PublishContext: map[string]string{PubCtxHolder: "node-other"}}
	_, err := n.NodeStageVolume(ctx, req)
	wantNodeCode(t, err, codes.FailedPrecondition, "published to node node-other, not to this node node-test")
	req.PublishContext[PubCtxHolder] = "node-test"
	_, err = n.NodeStageVolume(ctx, req)
	wantNodeCode(t, err, codes.FailedPrecondition, "the storage refused this node")
	if _, err := n.vols.Connector.Device(ctx, testNQNs+id); err == nil {
		t.Fatal("a refused volume is attached")
	}
	bad := map[string]string{CtxNQN: testNQNs + "pvc-other", CtxTargetAddress: "127.0.0.1", CtxTargetPort: vc[CtxTargetPort]}
	_, err = n.NodeStageVolume(ctx, &csipb.NodeStageVolumeRequest{VolumeId: id, StagingTargetPath: t.TempDir(), VolumeCapability: fsCap(""), VolumeContext: bad})
	wantNodeCode(t, err, codes.InvalidArgument, "is not this volume's")
}

// TestNodeExpandAndStats: after the volume grows on the RDS,
// NodeExpandVolume makes the attached device pick up the new size (block
// volume); a published file system reports stats, which turn into a clear
// error once the device is gone behind the plugin's back. (Growing a
// mounted ext4 online cannot be exercised on this machine: its kernel
// answers resize2fs "Permission denied to resize filesystem".)
func TestNodeExpandAndStats(t *testing.T) {
	n, id, vc, sim := nodeWithSim(t, testHost, "64M")
	ctx := t.Context()
	staging, node := t.TempDir(), filepath.Join(t.TempDir(), "block")
	if _, err := n.NodeStageVolume(ctx, &csipb.NodeStageVolumeRequest{VolumeId: id, StagingTargetPath: staging, VolumeCapability: rawCap(), VolumeContext: vc}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = n.NodeUnpublishVolume(context.Background(), &csipb.NodeUnpublishVolumeRequest{VolumeId: id, TargetPath: node})
		_, _ = n.NodeUnstageVolume(context.Background(), &csipb.NodeUnstageVolumeRequest{VolumeId: id, StagingTargetPath: staging})
	})
	if _, err := n.NodePublishVolume(ctx, &csipb.NodePublishVolumeRequest{VolumeId: id, StagingTargetPath: staging, TargetPath: node, VolumeCapability: rawCap(), VolumeContext: vc}); err != nil {
		t.Fatal(err)
	}
	size := func() int64 {
		t.Helper()
		st, err := n.NodeGetVolumeStats(ctx, &csipb.NodeGetVolumeStatsRequest{VolumeId: id, VolumePath: node})
		if err != nil {
			t.Fatal(err)
		}
		return st.GetUsage()[0].GetTotal()
	}
	if got := size(); got != 64<<20 {
		t.Fatalf("block size %d, want 64 MiB", got)
	}
	if out := sim.Exec(fmt.Sprintf(`/disk set [find slot="%s"] file-size=128M`, id)); strings.TrimSpace(out) != "" {
		t.Fatalf("resize: %q", out)
	}
	resp, err := n.NodeExpandVolume(ctx, &csipb.NodeExpandVolumeRequest{VolumeId: id, VolumePath: node, StagingTargetPath: staging, VolumeCapability: rawCap()})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetCapacityBytes() != 128<<20 || size() != 128<<20 {
		t.Fatalf("after expand: capacity %d, device %d; want 128 MiB", resp.GetCapacityBytes(), size())
	}
	// The device disappears behind the plugin's back.
	dev, err := n.vols.Connector.Device(ctx, testNQNs+id)
	if err != nil {
		t.Fatal(err)
	}
	if out, err := (nodeagent.HostExec{}).Output(ctx, "losetup", "--detach", dev); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	_, err = n.NodeGetVolumeStats(ctx, &csipb.NodeGetVolumeStatsRequest{VolumeId: id, VolumePath: node})
	wantNodeCode(t, err, codes.Internal, "is abnormal")
}

// TestNodeStageXFS: an empty volume asked for as xfs is formatted xfs
// (mkfs.xfs wants at least 300 MB; the file is sparse).
func TestNodeStageXFS(t *testing.T) {
	n, id, vc, _ := nodeWithSim(t, testHost, "512M")
	staging := filepath.Join(t.TempDir(), "staging")
	if _, err := n.NodeStageVolume(t.Context(), &csipb.NodeStageVolumeRequest{VolumeId: id, StagingTargetPath: staging, VolumeCapability: fsCap("xfs"), VolumeContext: vc}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = n.NodeUnstageVolume(context.Background(), &csipb.NodeUnstageVolumeRequest{VolumeId: id, StagingTargetPath: staging})
	})
	mps, err := mount.New("").List()
	if err != nil {
		t.Fatal(err)
	}
	for _, mp := range mps {
		if mp.Path == staging {
			if mp.Type != "xfs" {
				t.Fatalf("staged as %s, want xfs", mp.Type)
			}
			return
		}
	}
	t.Fatalf("%s is not mounted", staging)
}

type recordingWatcher struct {
	calls  []string
	health *nodeagent.Health
}

func (r *recordingWatcher) Expect(t nodeagent.Target) {
	r.calls = append(r.calls, "expect "+t.SubsystemNQN+" "+t.HostNQN)
}
func (r *recordingWatcher) Forget(nqn string) { r.calls = append(r.calls, "forget "+nqn) }
func (r *recordingWatcher) ExpectFenced(t nodeagent.Target, _ time.Time) {
	r.calls = append(r.calls, "expect-fenced "+t.SubsystemNQN)
}
func (r *recordingWatcher) Health(string) (nodeagent.Health, bool) {
	if r.health == nil {
		return nodeagent.Health{}, false
	}
	return *r.health, true
}

// TestNodeStageTellsTheMonitor: what is staged is handed to the node
// agent's monitor (to keep it connected), and taken back at unstage.
func TestNodeStageTellsTheMonitor(t *testing.T) {
	n, id, vc := nodeWithDisk(t, testHost)
	w := &recordingWatcher{}
	n.vols.Watcher = w
	staging := t.TempDir()
	if _, err := n.NodeStageVolume(t.Context(), &csipb.NodeStageVolumeRequest{VolumeId: id, StagingTargetPath: staging, VolumeCapability: rawCap(), VolumeContext: vc}); err != nil {
		t.Fatal(err)
	}
	if _, err := n.NodeUnstageVolume(t.Context(), &csipb.NodeUnstageVolumeRequest{VolumeId: id, StagingTargetPath: staging}); err != nil {
		t.Fatal(err)
	}
	want := []string{"expect " + testNQNs + id + " " + testHost, "forget " + testNQNs + id}
	if strings.Join(w.calls, "|") != strings.Join(want, "|") {
		t.Fatalf("monitor calls %q, want %q", w.calls, want)
	}
}

// TestNodeStagedRecordsAndHealth: a staged volume is recorded (a
// restarted plugin resumes watching it), a refused stage leaves no record,
// unstage removes it, and a volume the monitor reports lost or fenced
// gets a stats error saying so.
func TestNodeStagedRecordsAndHealth(t *testing.T) {
	n, id, vc := nodeWithDisk(t, testHost)
	w := &recordingWatcher{}
	n.vols.Watcher = w
	n.vols.Staged = &nodeagent.StagedStore{Dir: t.TempDir()}
	ctx := t.Context()
	staging := t.TempDir()
	if _, err := n.NodeStageVolume(ctx, &csipb.NodeStageVolumeRequest{VolumeId: id, StagingTargetPath: staging, VolumeCapability: rawCap(), VolumeContext: vc}); err != nil {
		t.Fatal(err)
	}
	recs, err := n.vols.Staged.List()
	if err != nil || len(recs) != 1 || recs[0].VolumeID != id || recs[0].Target.HostNQN != testHost || recs[0].MapName != MapName(id) {
		t.Fatalf("records after stage: %+v, %v", recs, err)
	}
	w.calls = nil
	if got, err := n.vols.Resume(); err != nil || len(got) != 1 || len(w.calls) != 1 || w.calls[0] != "expect "+testNQNs+id+" "+testHost {
		t.Fatalf("resume: %+v, %v, watcher calls %q", got, err, w.calls)
	}
	node := filepath.Join(t.TempDir(), "dev")
	if _, err := n.NodePublishVolume(ctx, &csipb.NodePublishVolumeRequest{VolumeId: id, StagingTargetPath: staging, TargetPath: node, VolumeCapability: rawCap()}); err != nil {
		t.Fatal(err)
	}
	since := time.Date(2026, 11, 29, 8, 0, 0, 0, time.UTC)
	for state, words := range map[string]string{
		nodeagent.StateLost:   "connection is gone since 2026-11-29T08:00:00Z",
		nodeagent.StateFenced: "given to another node",
	} {
		w.health = &nodeagent.Health{State: state, Since: since, Err: errors.New("kernel says no")}
		_, err := n.NodeGetVolumeStats(ctx, &csipb.NodeGetVolumeStatsRequest{VolumeId: id, VolumePath: node})
		if status.Code(err) != codes.Internal || !strings.Contains(err.Error(), "abnormal") || !strings.Contains(err.Error(), words) || !strings.Contains(err.Error(), "kernel says no") {
			t.Fatalf("stats of a %s volume: %v", state, err)
		}
	}
	w.health = &nodeagent.Health{State: nodeagent.StateLive, Since: since}
	if _, err := n.NodeGetVolumeStats(ctx, &csipb.NodeGetVolumeStatsRequest{VolumeId: id, VolumePath: node}); err != nil {
		t.Fatalf("stats of a live volume: %v", err)
	}
	// Found fenced: recorded, so a restarted plugin watches it as fenced,
	// and staging or publishing it again is refused until it is unstaged.
	w.health = nil
	if err := n.vols.FailQueued(ctx, nodeagent.Target{SubsystemNQN: testNQNs + id, HostNQN: testHost}); err != nil {
		t.Fatal(err)
	}
	w.calls = nil
	if _, err := n.vols.Resume(); err != nil || len(w.calls) != 1 || w.calls[0] != "expect-fenced "+testNQNs+id {
		t.Fatalf("resume of a fenced volume: %v, watcher calls %q", err, w.calls)
	}
	if _, err := n.NodeStageVolume(ctx, &csipb.NodeStageVolumeRequest{VolumeId: id, StagingTargetPath: staging, VolumeCapability: rawCap(), VolumeContext: vc}); status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "given to another node") {
		t.Fatalf("restage of a fenced volume: %v", err)
	}
	if _, err := n.NodePublishVolume(ctx, &csipb.NodePublishVolumeRequest{VolumeId: id, StagingTargetPath: staging, TargetPath: node + "2", VolumeCapability: rawCap()}); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("publish of a fenced volume: %v", err)
	}
	if _, err := n.NodeUnpublishVolume(ctx, &csipb.NodeUnpublishVolumeRequest{VolumeId: id, TargetPath: node}); err != nil {
		t.Fatal(err)
	}
	if _, err := n.NodeUnstageVolume(ctx, &csipb.NodeUnstageVolumeRequest{VolumeId: id, StagingTargetPath: staging}); err != nil {
		t.Fatal(err)
	}
	if recs, err := n.vols.Staged.List(); err != nil || len(recs) != 0 {
		t.Fatalf("records after unstage: %+v, %v", recs, err)
	}

	// a stage the storage fence refuses leaves no record
	fenced, fid, fvc := nodeWithDisk(t, "nqn.2014-08.org.nvmexpress:uuid:bbbbbbbb-0000-4000-8000-00000000000b")
	fenced.vols.Staged = &nodeagent.StagedStore{Dir: t.TempDir()}
	if _, err := fenced.NodeStageVolume(ctx, &csipb.NodeStageVolumeRequest{VolumeId: fid, StagingTargetPath: t.TempDir(), VolumeCapability: rawCap(), VolumeContext: fvc}); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("fenced stage: %v", err)
	}
	if recs, err := fenced.vols.Staged.List(); err != nil || len(recs) != 0 {
		t.Fatalf("records after a refused stage: %+v, %v", recs, err)
	}
}
