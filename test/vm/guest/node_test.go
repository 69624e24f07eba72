//go:build vmguest

package guest

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	csipb "github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/go-logr/logr/testr"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	mount "k8s.io/mount-utils"
	utilexec "k8s.io/utils/exec"

	"github.com/rds-fence/rds-fence/csi"
	"github.com/rds-fence/rds-fence/nodeagent"
	"github.com/rds-fence/rds-fence/rds/rdssim"
)

const nqnPrefix = "nqn.2000-02.com.mikrotik:"

// simDisk creates a 64 MiB disk on an RDS simulator (its fence admitting
// allowed) and exports the simulator's backing file through the kernel's
// nvmet target the way the RDS exports it, allowed_hosts mirroring
// nvme-tcp-server-allow-host-name.
func simDisk(t *testing.T, slot, allowed, portID string, port int) (*target, map[string]string) {
	tg, vc, _ := simDiskFile(t, slot, allowed, portID, port)
	return tg, vc
}

// simDiskFile is simDisk that also returns the disk's backing file.
func simDiskFile(t *testing.T, slot, allowed, portID string, port int) (*target, map[string]string, string) {
	t.Helper()
	sim, err := rdssim.New(rdssim.Options{Root: t.TempDir()})
	must(t, err)
	nqn := nqnPrefix + slot
	if out := sim.Exec(fmt.Sprintf(`/disk add type=file file-path="/storage-pool/kubernetes-volumes/%s.img" file-size=64M slot="%s" nvme-tcp-export=yes nvme-tcp-server-port=%d nvme-tcp-server-nqn="%s" nvme-tcp-server-allow-host-name="%s"`,
		slot, slot, port, nqn, allowed)); strings.TrimSpace(out) != "" {
		t.Fatalf("disk add: %q", out)
	}
	file, err := sim.ConnectNQN(nqn, allowed, port)
	must(t, err)
	tg := exportFile(t, file, nqn, allowed, portID, strconv.Itoa(port))
	return tg, map[string]string{csi.CtxNQN: nqn, csi.CtxTargetAddress: "127.0.0.1", csi.CtxTargetPort: strconv.Itoa(port)}, file
}

// node is the node plugin as `rds-fence node --transport=nvme` wires it:
// the NVMe/TCP connector, the device-mapper stable device, the staged
// records and the monitor.
type node struct {
	srv    *csi.NodeServer
	vols   *csi.NodeVolumes
	mon    *nodeagent.Monitor
	conn   *nodeagent.NVMeConnector
	states chan string
	stop   context.CancelFunc
}

func startNode(t *testing.T, stateDir, host string) *node {
	t.Helper()
	conn := &nodeagent.NVMeConnector{Prefix: nqnPrefix + "pvc-", CtrlLossTmo: 2, ReconnectDelay: 1, KeepAliveTmo: 2}
	vols := &csi.NodeVolumes{Connector: conn, HostNQN: host, NQNPrefix: nqnPrefix,
		Mounter: &mount.SafeFormatAndMount{Interface: mount.New(""), Exec: utilexec.New()},
		Mapper:  &nodeagent.DMMultipath{Exec: nodeagent.HostExec{}, Prefix: csi.MapPrefix},
		Staged:  &nodeagent.StagedStore{Dir: stateDir}}
	n := &node{vols: vols, conn: conn, states: make(chan string, 100)}
	n.mon = &nodeagent.Monitor{Fabric: conn, Interval: 250 * time.Millisecond, Keep: vols.Keep, OnFenced: vols.FailQueued, FenceConfirmWindow: time.Second, Log: testr.New(t),
		OnChange: func(_ nodeagent.Target, h nodeagent.Health) {
			select {
			case n.states <- h.State:
			default:
			}
		}}
	vols.Watcher = n.mon
	srv, err := csi.NewNodeServer(csi.NodeOptions{NodeID: "node-a", TopologyValue: "rds"}, testr.New(t))
	must(t, err)
	n.srv = srv.WithVolumes(vols)
	if _, err := vols.Resume(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	n.stop = cancel
	n.mon.Check(ctx)
	go n.mon.Run(ctx)
	t.Cleanup(cancel)
	return n
}

// waitState waits for the monitor to report state for any volume.
func (n *node) waitState(t *testing.T, state string, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	deadline := time.After(within)
	for {
		select {
		case s := <-n.states:
			if s == state {
				return time.Since(start)
			}
		case <-deadline:
			t.Fatalf("the monitor did not report %q within %s\n%s", state, within, dmesgTail())
		}
	}
}

func fileCap() *csipb.VolumeCapability {
	return &csipb.VolumeCapability{AccessType: &csipb.VolumeCapability_Mount{Mount: &csipb.VolumeCapability_MountVolume{FsType: "ext4"}},
		AccessMode: &csipb.VolumeCapability_AccessMode{Mode: csipb.VolumeCapability_AccessMode_SINGLE_NODE_WRITER}}
}

func blockCap() *csipb.VolumeCapability {
	return &csipb.VolumeCapability{AccessType: &csipb.VolumeCapability_Block{Block: &csipb.VolumeCapability_BlockVolume{}},
		AccessMode: &csipb.VolumeCapability_AccessMode{Mode: csipb.VolumeCapability_AccessMode_SINGLE_NODE_WRITER}}
}

// writeFile writes size random bytes to path with fsync and returns their digest.
func writeFile(path string, size int) ([32]byte, error) {
	data := make([]byte, size)
	_, _ = rand.Read(data)
	f, err := os.Create(path)
	if err != nil {
		return [32]byte{}, err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return [32]byte{}, err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return [32]byte{}, err
	}
	return sha256.Sum256(data), f.Close()
}

func dropCaches(t *testing.T) {
	t.Helper()
	write(t, "/proc/sys/vm/drop_caches", "3")
}

func checkFile(t *testing.T, path string, want [32]byte) {
	t.Helper()
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("reading %s: %v\n%s", path, err, dmesgTail())
	}
	if sha256.Sum256(got) != want {
		t.Fatalf("%s: data changed (%d bytes read)", path, len(got))
	}
}

// mountSource is the device mounted at dir ("" when not mounted).
func mountSource(t *testing.T, dir string) string {
	t.Helper()
	b, err := os.ReadFile("/proc/mounts")
	must(t, err)
	src := ""
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) > 2 && f[1] == dir {
			src = f[0]
		}
	}
	return src
}

// noFilesystemErrors fails when the kernel logged a file-system error or
// turned a file system read-only (I/O that failed instead of waiting).
func noFilesystemErrors(t *testing.T) {
	t.Helper()
	d := dmesgTail()
	for _, bad := range []string{"EXT4-fs error", "read-only", "Buffer I/O error", "I/O error, dev dm-"} {
		if strings.Contains(d, bad) {
			t.Fatalf("the kernel logged %q: I/O failed instead of waiting\n%s", bad, d)
		}
	}
}

// leftovers lists what a volume left behind: controllers, mounts, dm
// devices, staged records.
func leftovers(t *testing.T, n *node, nqn string, dirs ...string) []string {
	t.Helper()
	var out []string
	if c := n.conn.Controllers(nqn); len(c) > 0 {
		out = append(out, fmt.Sprintf("controllers %v", c))
	}
	for _, d := range dirs {
		if s := mountSource(t, d); s != "" {
			out = append(out, "mount "+d+" from "+s)
		}
	}
	ls, err := nodeagent.HostExec{}.Output(context.Background(), "dmsetup", "ls")
	if err != nil {
		t.Fatalf("dmsetup ls: %v: %s", err, ls)
	}
	if strings.Contains(string(ls), csi.MapName(strings.TrimPrefix(nqn, nqnPrefix))) {
		out = append(out, "device-mapper: "+strings.TrimSpace(string(ls)))
	}
	if recs, err := n.vols.Staged.List(); err != nil || len(recs) > 0 {
		out = append(out, fmt.Sprintf("staged records %v %v", recs, err))
	}
	return out
}

// outage takes the target away until the kernel removes the controller
// (ctrl_loss_tmo=2), runs during while it is away, and brings it back.
func outage(t *testing.T, n *node, tg *target, nqn string, during func()) (detect time.Duration, back time.Time) {
	t.Helper()
	tg.unlink(t)
	detect = n.waitState(t, nodeagent.StateReconnecting, 20*time.Second)
	gone := time.Now()
	for len(n.conn.Controllers(nqn)) > 0 && time.Since(gone) < 30*time.Second {
		time.Sleep(50 * time.Millisecond)
	}
	if len(n.conn.Controllers(nqn)) > 0 {
		t.Fatalf("the kernel kept the controller 30s past ctrl_loss_tmo=2\n%s", dmesgTail())
	}
	n.waitState(t, nodeagent.StateLost, 10*time.Second)
	during()
	tg.link(t)
	return detect, time.Now()
}

// TestNodeFilesystemSurvivesRenumbering drives the node service: stage
// (connect, mkfs, mount through the stable device) and publish; the
// plugin restarts and re-watches the volume from its records; the target
// goes away past ctrl_loss_tmo while a write is in flight, and another
// volume takes the freed device number meanwhile; when the target is back
// the monitor connects the volume under its new name and swaps it in
// below the mount: the write completes, the same mount path serves the
// data (no remount), nothing was logged as an I/O error. A short outage
// after that; then unpublish and unstage leave nothing behind.
func TestNodeFilesystemSurvivesRenumbering(t *testing.T) {
	slot := "pvc-00000000000000000000000000f1"
	tg, vc := simDisk(t, slot, hostA, "10", 4430)
	state := "/tmp/node-state"
	n := startNode(t, state, hostA)
	ctx := context.Background()
	staging, pub := "/tmp/f1/staging", "/tmp/f1/target"
	if _, err := n.srv.NodeStageVolume(ctx, &csipb.NodeStageVolumeRequest{VolumeId: slot, StagingTargetPath: staging,
		VolumeCapability: fileCap(), VolumeContext: vc, PublishContext: map[string]string{csi.PubCtxHolder: "node-a"}}); err != nil {
		t.Fatalf("stage: %v\n%s", err, dmesgTail())
	}
	if _, err := n.srv.NodePublishVolume(ctx, &csipb.NodePublishVolumeRequest{VolumeId: slot, StagingTargetPath: staging, TargetPath: pub,
		VolumeCapability: fileCap()}); err != nil {
		t.Fatalf("publish: %v", err)
	}
	src := mountSource(t, staging)
	if !strings.HasPrefix(src, "/dev/dm-") || mountSource(t, pub) != src {
		t.Fatalf("staged from %q, published from %q: want the stable device-mapper device", src, mountSource(t, pub))
	}
	sumA, err := writeFile(filepath.Join(pub, "a"), 1<<20)
	must(t, err)
	nvmeBefore, err := n.conn.Device(ctx, nqnPrefix+slot)
	must(t, err)

	// the node plugin restarts: a new process knows the volume only from its records
	n.stop()
	n = startNode(t, state, hostA)
	if h, ok := n.mon.Health(nqnPrefix + slot); !ok || h.State != nodeagent.StateLive {
		t.Fatalf("after a restart the volume is not watched live: %+v, %v", h, ok)
	}

	type result struct {
		sum [32]byte
		err error
		at  time.Time
	}
	done := make(chan result, 1)
	var other string
	detect, back := outage(t, n, tg, nqnPrefix+slot, func() {
		go func() {
			s, err := writeFile(filepath.Join(pub, "b"), 1<<20)
			done <- result{s, err, time.Now()}
		}()
		time.Sleep(time.Second)
		select {
		case r := <-done:
			t.Fatalf("a write during the outage returned (%v) instead of waiting for the volume\n%s", r.err, dmesgTail())
		default:
		}
		other = nqnPrefix + "pvc-00000000000000000000000000f9" // takes the freed device number
		newTarget(t, other, hostA, "19", "4439")
		if _, err := n.conn.Connect(ctx, nodeagent.Target{Address: "127.0.0.1", Port: 4439, SubsystemNQN: other, HostNQN: hostA}); err != nil {
			t.Fatalf("connecting another volume during the outage: %v", err)
		}
	})
	defer n.conn.Disconnect(ctx, other)
	var r result
	select {
	case r = <-done:
	case <-time.After(30 * time.Second):
		t.Fatalf("the write did not complete 30s after the target came back\n%s", dmesgTail())
	}
	if r.err != nil {
		t.Fatalf("the write during the outage failed: %v\n%s", r.err, dmesgTail())
	}
	served := r.at.Sub(back)
	nvmeAfter, err := n.conn.Device(ctx, nqnPrefix+slot)
	must(t, err)
	t.Logf("FIGURE long outage (file system): loss detected in %s; write in flight completed %s after the target came back; namespace %s -> %s",
		detect.Round(time.Millisecond), served.Round(time.Millisecond), nvmeBefore, nvmeAfter)
	if nvmeAfter == nvmeBefore {
		t.Fatalf("the volume came back as %s again: the renumbering case was not exercised", nvmeAfter)
	}
	// the target (reconnect_delay + 1 s) is a figure in docs/PERFORMANCE.md, not asserted here: TCG timing is noisy
	if mountSource(t, staging) != src || mountSource(t, pub) != src {
		t.Fatalf("the mounts changed: staging from %q, target from %q, were %q", mountSource(t, staging), mountSource(t, pub), src)
	}
	dropCaches(t)
	checkFile(t, filepath.Join(pub, "a"), sumA)
	checkFile(t, filepath.Join(pub, "b"), r.sum)

	// a short outage (within ctrl_loss_tmo): the kernel reconnects by itself
	tg.unlink(t)
	n.waitState(t, nodeagent.StateReconnecting, 20*time.Second)
	time.Sleep(500 * time.Millisecond)
	tg.link(t)
	shortBack := time.Now()
	n.waitState(t, nodeagent.StateLive, 20*time.Second)
	t.Logf("FIGURE short outage (file system): live again %s after the target came back", time.Since(shortBack).Round(time.Millisecond))
	sumC, err := writeFile(filepath.Join(pub, "c"), 256<<10)
	must(t, err)
	dropCaches(t)
	for f, s := range map[string][32]byte{"a": sumA, "b": r.sum, "c": sumC} {
		checkFile(t, filepath.Join(pub, f), s)
	}
	noFilesystemErrors(t)

	if _, err := n.srv.NodeUnpublishVolume(ctx, &csipb.NodeUnpublishVolumeRequest{VolumeId: slot, TargetPath: pub}); err != nil {
		t.Fatal(err)
	}
	if _, err := n.srv.NodeUnstageVolume(ctx, &csipb.NodeUnstageVolumeRequest{VolumeId: slot, StagingTargetPath: staging}); err != nil {
		t.Fatal(err)
	}
	if left := leftovers(t, n, nqnPrefix+slot, staging, pub); len(left) > 0 {
		t.Fatalf("unstage left %v", left)
	}
}

// TestNodeBlockAcrossReconnect: a raw block volume published as a device
// node keeps working across an outage past ctrl_loss_tmo (the node points
// at the stable device, whose path is swapped), a write in flight waits
// and lands, and unstage leaves nothing behind.
func TestNodeBlockAcrossReconnect(t *testing.T) {
	slot := "pvc-00000000000000000000000000b1"
	tg, vc := simDisk(t, slot, hostA, "11", 4431)
	n := startNode(t, "/tmp/node-state-b", hostA)
	ctx := context.Background()
	staging, pub := "/tmp/b1/staging", "/tmp/b1/dev/volume"
	if _, err := n.srv.NodeStageVolume(ctx, &csipb.NodeStageVolumeRequest{VolumeId: slot, StagingTargetPath: staging,
		VolumeCapability: blockCap(), VolumeContext: vc}); err != nil {
		t.Fatalf("stage: %v\n%s", err, dmesgTail())
	}
	if _, err := n.srv.NodePublishVolume(ctx, &csipb.NodePublishVolumeRequest{VolumeId: slot, StagingTargetPath: staging, TargetPath: pub,
		VolumeCapability: blockCap()}); err != nil {
		t.Fatalf("publish: %v", err)
	}
	one, two := pattern(64<<10), bytes.ToUpper(pattern(64<<10))
	writeRead(t, pub, 0, one)
	done := make(chan error, 1)
	var at time.Time
	_, back := outage(t, n, tg, nqnPrefix+slot, func() {
		go func() {
			f, err := os.OpenFile(pub, os.O_RDWR|os.O_SYNC, 0)
			if err == nil {
				_, err = f.WriteAt(two, 1<<20)
				f.Close()
			}
			at = time.Now()
			done <- err
		}()
		time.Sleep(time.Second)
		select {
		case err := <-done:
			t.Fatalf("a write during the outage returned (%v) instead of waiting\n%s", err, dmesgTail())
		default:
		}
	})
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("the write during the outage failed: %v\n%s", err, dmesgTail())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("the write did not complete 30s after the target came back\n%s", dmesgTail())
	}
	t.Logf("FIGURE long outage (block): write in flight completed %s after the target came back", at.Sub(back).Round(time.Millisecond))
	dropCaches(t)
	f, err := os.Open(pub)
	must(t, err)
	got := make([]byte, len(one))
	_, err1 := f.ReadAt(got, 0)
	got2 := make([]byte, len(two))
	_, err2 := f.ReadAt(got2, 1<<20)
	f.Close()
	if err1 != nil || err2 != nil || !bytes.Equal(got, one) || !bytes.Equal(got2, two) {
		t.Fatalf("data through the device node after the outage: %v %v, equal %v %v", err1, err2, bytes.Equal(got, one), bytes.Equal(got2, two))
	}
	if _, err := n.srv.NodeUnpublishVolume(ctx, &csipb.NodeUnpublishVolumeRequest{VolumeId: slot, TargetPath: pub}); err != nil {
		t.Fatal(err)
	}
	if _, err := n.srv.NodeUnstageVolume(ctx, &csipb.NodeUnstageVolumeRequest{VolumeId: slot, StagingTargetPath: staging}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(pub); !os.IsNotExist(err) {
		t.Fatalf("the device node is still there: %v", err)
	}
	if left := leftovers(t, n, nqnPrefix+slot); len(left) > 0 {
		t.Fatalf("unstage left %v", left)
	}
}

// TestNodeFence: the node service refuses a volume the controller
// published to another node before connecting, and a volume whose storage
// fence does not admit this host fails with a clear error, leaving no
// controller, device-mapper device or record behind.
func TestNodeFence(t *testing.T) {
	slot := "pvc-00000000000000000000000000c1"
	_, vc := simDisk(t, slot, hostB, "12", 4432)
	n := startNode(t, "/tmp/node-state-c", hostA)
	ctx := context.Background()
	req := &csipb.NodeStageVolumeRequest{VolumeId: slot, StagingTargetPath: "/tmp/c1/staging", VolumeCapability: fileCap(), VolumeContext: vc,
		PublishContext: map[string]string{csi.PubCtxHolder: "node-b"}}
	_, err := n.srv.NodeStageVolume(ctx, req)
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "node-b") {
		t.Fatalf("stage of a volume published to node-b: %v", err)
	}
	req.PublishContext = nil
	_, err = n.srv.NodeStageVolume(ctx, req)
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "refused this node") || !strings.Contains(err.Error(), hostA) {
		t.Fatalf("stage on a host the fence does not admit: %v", err)
	}
	t.Logf("fenced stage: %v", err)
	if left := leftovers(t, n, nqnPrefix+slot, "/tmp/c1/staging"); len(left) > 0 {
		t.Fatalf("a refused stage left %v", left)
	}
}

// TestNodeFencedVolumeNeverWrites: the storage fence moves to another
// host while this node has the volume mounted and a write waiting. The
// connection drops; the kernel's reconnects are refused until it gives
// up; the monitor's own connect is refused three times in a row: the
// volume is fenced, the waiting write fails instead of waiting forever, a
// restage is refused, and unstage completes. When the storage admits this
// host again nothing reconnects, and the refused write is nowhere on the
// disk.
func TestNodeFencedVolumeNeverWrites(t *testing.T) {
	slot := "pvc-00000000000000000000000000d1"
	tg, vc, file := simDiskFile(t, slot, hostA, "13", 4433)
	n := startNode(t, "/tmp/node-state-d", hostA)
	ctx := context.Background()
	nqn := nqnPrefix + slot
	staging, pub := "/tmp/d1/staging", "/tmp/d1/target"
	stage := &csipb.NodeStageVolumeRequest{VolumeId: slot, StagingTargetPath: staging, VolumeCapability: fileCap(), VolumeContext: vc}
	if _, err := n.srv.NodeStageVolume(ctx, stage); err != nil {
		t.Fatalf("stage: %v\n%s", err, dmesgTail())
	}
	if _, err := n.srv.NodePublishVolume(ctx, &csipb.NodePublishVolumeRequest{VolumeId: slot, StagingTargetPath: staging, TargetPath: pub,
		VolumeCapability: fileCap()}); err != nil {
		t.Fatal(err)
	}
	if _, err := writeFile(filepath.Join(pub, "before"), 64<<10); err != nil {
		t.Fatal(err)
	}

	tg.allow(t, hostB) // the controller gave the volume to another node
	tg.unlink(t)       // and this node's connection drops
	n.waitState(t, nodeagent.StateReconnecting, 20*time.Second)
	marker := bytes.Repeat([]byte("FENCED-WRITE-MUST-NOT-LAND!"), 4096)
	done := make(chan error, 1)
	go func() {
		f, err := os.Create(filepath.Join(pub, "after"))
		if err == nil {
			if _, err = f.Write(marker); err == nil {
				err = f.Sync()
			}
			f.Close()
		}
		done <- err
	}()
	time.Sleep(300 * time.Millisecond)
	tg.link(t) // the storage answers again, but refuses this host
	start := time.Now()
	n.waitState(t, nodeagent.StateFenced, 30*time.Second)
	t.Logf("FIGURE fenced: detected %s after the target answered again (ctrl_loss_tmo=2; at least 3 refusals over at least 1s, 250ms apart)", time.Since(start).Round(time.Millisecond))
	// a restarted plugin knows from its record that the volume is fenced
	n.stop()
	n = startNode(t, "/tmp/node-state-d", hostA)
	if h, ok := n.mon.Health(nqn); !ok || h.State != nodeagent.StateFenced {
		t.Fatalf("after a plugin restart the fenced volume is %+v (watched %v)", h, ok)
	}
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("the write waiting on a fenced volume succeeded")
		}
		t.Logf("the waiting write failed as it must: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatalf("the write waiting on a fenced volume still waits 30s after the fence was found\n%s", dmesgTail())
	}
	if _, err := n.srv.NodeStageVolume(ctx, stage); status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "given to another node") {
		t.Fatalf("restage of a fenced volume: %v", err)
	}
	unstaged := make(chan error, 1)
	go func() {
		if _, err := n.srv.NodeUnpublishVolume(ctx, &csipb.NodeUnpublishVolumeRequest{VolumeId: slot, TargetPath: pub}); err != nil {
			unstaged <- err
			return
		}
		_, err := n.srv.NodeUnstageVolume(ctx, &csipb.NodeUnstageVolumeRequest{VolumeId: slot, StagingTargetPath: staging})
		unstaged <- err
	}()
	select {
	case err := <-unstaged:
		if err != nil {
			t.Fatalf("unpublish/unstage of a fenced volume: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("unstage of a fenced volume hangs\n%s", dmesgTail())
	}
	if left := leftovers(t, n, nqn, staging, pub); len(left) > 0 {
		t.Fatalf("unstage left %v", left)
	}
	tg.allow(t, hostA) // the storage admits this host again
	time.Sleep(time.Second)
	if c := n.conn.Controllers(nqn); len(c) > 0 {
		t.Fatalf("an unstaged fenced volume was reconnected: %v", c)
	}
	img, err := os.ReadFile(file)
	must(t, err)
	if bytes.Contains(img, marker[:4096]) {
		t.Fatal("the write refused by the fence reached the disk")
	}
}
