package csi

import (
	"fmt"
	"net"
	"strings"
	"testing"

	csipb "github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/go-logr/logr"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/rds-fence/rds-fence/rds"
	"github.com/rds-fence/rds-fence/rds/rdssim"
	"github.com/rds-fence/rds-fence/rds/rdssim/simtest"
)

func newTestDriver(t *testing.T, simOpts rdssim.Options, mutate ...func(*rds.Config)) (*Driver, *simtest.Env) {
	t.Helper()
	env := simtest.Start(t, simOpts, rdssim.ServerOptions{})
	d, err := NewDriver(Options{TargetAddress: "192.0.2.10"}, env.Client(t, mutate...), logr.Discard())
	if err != nil {
		t.Fatal(err)
	}
	return d, env
}

func mountCap(mode csipb.VolumeCapability_AccessMode_Mode, fs string) *csipb.VolumeCapability {
	return &csipb.VolumeCapability{
		AccessType: &csipb.VolumeCapability_Mount{Mount: &csipb.VolumeCapability_MountVolume{FsType: fs}},
		AccessMode: &csipb.VolumeCapability_AccessMode{Mode: mode},
	}
}

func blockCap(mode csipb.VolumeCapability_AccessMode_Mode) *csipb.VolumeCapability {
	return &csipb.VolumeCapability{
		AccessType: &csipb.VolumeCapability_Block{Block: &csipb.VolumeCapability_BlockVolume{}},
		AccessMode: &csipb.VolumeCapability_AccessMode{Mode: mode},
	}
}

const rwo = csipb.VolumeCapability_AccessMode_SINGLE_NODE_WRITER
const rwx = csipb.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER

func createReq(name string, required, limit int64, caps ...*csipb.VolumeCapability) *csipb.CreateVolumeRequest {
	if len(caps) == 0 {
		caps = []*csipb.VolumeCapability{mountCap(rwo, "ext4")}
	}
	return &csipb.CreateVolumeRequest{Name: name, VolumeCapabilities: caps,
		CapacityRange: &csipb.CapacityRange{RequiredBytes: required, LimitBytes: limit}}
}

func wantCode(t *testing.T, err error, code codes.Code, msgParts ...string) {
	t.Helper()
	if status.Code(err) != code {
		t.Fatalf("error = %v, want code %s", err, code)
	}
	for _, p := range msgParts {
		if !strings.Contains(err.Error(), p) {
			t.Fatalf("error %q does not mention %q", err, p)
		}
	}
}

func TestCreateVolumeRoundsUpAndReportsRealSize(t *testing.T) {
	d, env := newTestDriver(t, rdssim.Options{})
	name := "pvc-5c1e7d42-8f0b-4a53-9a41-2f0c7a1b9e11"
	resp, err := d.CreateVolume(t.Context(), createReq(name, 3*rds.GiB/2+1, 0))
	if err != nil {
		t.Fatal(err)
	}
	v := resp.GetVolume()
	if want := int64(3*rds.GiB/2 + rds.MiB); v.GetCapacityBytes() != want {
		t.Fatalf("capacity = %d, want %d (1.5 GiB + 1 byte rounded up to the next MiB)", v.GetCapacityBytes(), want)
	}
	if v.GetVolumeId() != "pvc-5c1e7d428f0b4a539a412f0c7a1b" {
		t.Fatalf("volume ID = %q, want the PVC UID's digits", v.GetVolumeId())
	}
	info, ok := env.Sim.Disk(v.GetVolumeId())
	if !ok || info.Size != v.GetCapacityBytes() {
		t.Fatalf("RDS disk = %+v, want size %d", info, v.GetCapacityBytes())
	}
	ctx := v.GetVolumeContext()
	if ctx[CtxNQN] != "nqn.2000-02.com.mikrotik:"+v.GetVolumeId() || ctx[CtxTargetAddress] != "192.0.2.10" || ctx[CtxTargetPort] != "4420" {
		t.Fatalf("volume context = %v", ctx)
	}
	if got := v.GetAccessibleTopology(); len(got) != 1 || got[0].GetSegments()[DefaultTopologyKey] != "rds" {
		t.Fatalf("topology = %v", got)
	}
}

func TestCreateVolumeCapacityRange(t *testing.T) {
	d, _ := newTestDriver(t, rdssim.Options{})
	cases := []struct {
		name          string
		required, lim int64
		wantSize      int64
		wantCode      codes.Code
	}{
		{"default size", 0, 0, rds.GiB, codes.OK},
		{"limit below default", 0, 100 * rds.MiB, 100 * rds.MiB, codes.OK},
		{"limit only, not a whole MiB", 0, 100*rds.MiB + 1, 100 * rds.MiB, codes.OK},
		{"limit below one MiB", 0, rds.MiB - 1, 0, codes.OutOfRange},
		{"exact MiB", 10 * rds.MiB, 10 * rds.MiB, 10 * rds.MiB, codes.OK},
		{"rounding passes the limit", 10*rds.MiB + 1, 10*rds.MiB + 1, 0, codes.OutOfRange},
		{"required above limit", 2 * rds.GiB, rds.GiB, 0, codes.InvalidArgument},
		{"negative", -1, 0, 0, codes.InvalidArgument},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			resp, err := d.CreateVolume(t.Context(), createReq(fmt.Sprintf("range-%d", i), c.required, c.lim))
			if status.Code(err) != c.wantCode {
				t.Fatalf("error = %v, want %s", err, c.wantCode)
			}
			if err == nil && resp.GetVolume().GetCapacityBytes() != c.wantSize {
				t.Fatalf("size = %d, want %d", resp.GetVolume().GetCapacityBytes(), c.wantSize)
			}
		})
	}
}

func TestCreateVolumeIdempotency(t *testing.T) {
	d, env := newTestDriver(t, rdssim.Options{})
	first, err := d.CreateVolume(t.Context(), createReq("idem", rds.GiB, 0))
	if err != nil {
		t.Fatal(err)
	}
	before := len(env.Sim.Commands())
	again, err := d.CreateVolume(t.Context(), createReq("idem", rds.GiB, 0))
	if err != nil || again.GetVolume().GetVolumeId() != first.GetVolume().GetVolumeId() ||
		again.GetVolume().GetCapacityBytes() != rds.GiB {
		t.Fatalf("retry = %v, %v", again, err)
	}
	if n := len(env.Sim.Commands()) - before; n != 2 {
		t.Fatalf("a retry issued %d commands, want 2 (add, then print)", n)
	}
	_, err = d.CreateVolume(t.Context(), createReq("idem", 2*rds.GiB, 0))
	wantCode(t, err, codes.AlreadyExists, first.GetVolume().GetVolumeId(), "does not satisfy")
	if n := len(env.Sim.Disks()); n != 1 {
		t.Fatalf("%d disks after retries, want 1", n)
	}
}

func TestCreateVolumeFastPathIsOneCommand(t *testing.T) {
	d, env := newTestDriver(t, rdssim.Options{})
	if _, err := d.CreateVolume(t.Context(), createReq("fast", rds.GiB, 0)); err != nil {
		t.Fatal(err)
	}
	if cmds := env.Sim.Commands(); len(cmds) != 1 || !strings.HasPrefix(cmds[0], "/disk add") {
		t.Fatalf("commands = %q, want exactly one /disk add", cmds)
	}
}

func TestCreateVolumeRefusals(t *testing.T) {
	d, env := newTestDriver(t, rdssim.Options{PoolSize: 10 * rds.GiB})
	cases := []struct {
		name  string
		req   *csipb.CreateVolumeRequest
		code  codes.Code
		parts []string
	}{
		{"no name", createReq("", rds.GiB, 0), codes.InvalidArgument, []string{"name is required"}},
		{"no capabilities", &csipb.CreateVolumeRequest{Name: "x"}, codes.InvalidArgument, []string{"capabilities are required"}},
		{"RWX filesystem", createReq("rwx-fs", rds.GiB, 0, mountCap(rwx, "ext4")), codes.InvalidArgument, []string{"raw block volumes only"}},
		{"unsupported fs", createReq("btrfs", rds.GiB, 0, mountCap(rwo, "btrfs")), codes.InvalidArgument, []string{`"btrfs" is not supported`}},
		{"multi-node single writer", createReq("mnsw", rds.GiB, 0, blockCap(csipb.VolumeCapability_AccessMode_MULTI_NODE_SINGLE_WRITER)), codes.InvalidArgument, []string{"not supported"}},
		{"unknown parameter", func() *csipb.CreateVolumeRequest {
			r := createReq("param", rds.GiB, 0)
			r.Parameters = map[string]string{"fsTyp": "ext4"}
			return r
		}(), codes.InvalidArgument, []string{"unknown StorageClass parameter(s) fsTyp"}},
		{"out of space", createReq("big", 11*rds.GiB, 0), codes.ResourceExhausted, []string{"not enough space"}},
		{"topology excluded", func() *csipb.CreateVolumeRequest {
			r := createReq("topo", rds.GiB, 0)
			r.AccessibilityRequirements = &csipb.TopologyRequirement{Requisite: []*csipb.Topology{{Segments: map[string]string{DefaultTopologyKey: "other-rds"}}}}
			return r
		}(), codes.ResourceExhausted, []string{"topology"}},
		{"snapshot source", func() *csipb.CreateVolumeRequest {
			r := createReq("snap", rds.GiB, 0)
			r.VolumeContentSource = &csipb.VolumeContentSource{Type: &csipb.VolumeContentSource_Snapshot{Snapshot: &csipb.VolumeContentSource_SnapshotSource{SnapshotId: "s"}}}
			return r
		}(), codes.InvalidArgument, []string{"no snapshots"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := d.CreateVolume(t.Context(), c.req)
			wantCode(t, err, c.code, c.parts...)
		})
	}
	if n := len(env.Sim.Disks()); n != 0 {
		t.Fatalf("refused creates left %d disks", n)
	}
	// RWX block (KubeVirt live migration) is accepted.
	if _, err := d.CreateVolume(t.Context(), createReq("rwx-block", rds.GiB, 0, blockCap(rwx))); err != nil {
		t.Fatalf("RWX block: %v", err)
	}
}

// Hostile CSI names are hashed into a safe slot; they never reach the RDS.
func TestHostileVolumeNamesAreHashed(t *testing.T) {
	d, env := newTestDriver(t, rdssim.Options{})
	for _, name := range []string{`a"; /disk remove [find]; "`, "x\n/system reboot", "$(reboot)", "[/file remove [find]]"} {
		resp, err := d.CreateVolume(t.Context(), createReq(name, rds.MiB, 0))
		if err != nil {
			t.Fatalf("%q: %v", name, err)
		}
		if id := resp.GetVolume().GetVolumeId(); !d.opts.IDs.Owns(id) {
			t.Fatalf("%q got volume ID %q", name, id)
		}
	}
	for _, c := range env.Sim.Commands() {
		if strings.Contains(c, "reboot") || strings.Contains(c, "remove") {
			t.Fatalf("a hostile name reached the RDS: %q", c)
		}
	}
	if n := len(env.Sim.Disks()); n != 4 {
		t.Fatalf("%d disks, want 4", n)
	}
	// A hostile volume ID is not ours: delete is a no-op, others are NotFound.
	if _, err := d.DeleteVolume(t.Context(), &csipb.DeleteVolumeRequest{VolumeId: `pvc-x"; /disk remove [find]`}); err != nil {
		t.Fatal(err)
	}
	_, err := d.ControllerExpandVolume(t.Context(), &csipb.ControllerExpandVolumeRequest{VolumeId: "pvc-$x", CapacityRange: &csipb.CapacityRange{RequiredBytes: rds.GiB}})
	wantCode(t, err, codes.NotFound)
	if n := len(env.Sim.Disks()); n != 4 {
		t.Fatalf("%d disks after hostile delete, want 4", n)
	}
}

func TestConcurrentOperationOnOneVolumeIsAborted(t *testing.T) {
	d, env := newTestDriver(t, rdssim.Options{})
	slot := d.opts.IDs.Slot("race")
	if !d.inflight.tryLock(slot) { // an operation on the volume is in progress
		t.Fatal("lock")
	}
	_, err := d.CreateVolume(t.Context(), createReq("race", rds.GiB, 0))
	wantCode(t, err, codes.Aborted, "already in progress")
	_, err = d.DeleteVolume(t.Context(), &csipb.DeleteVolumeRequest{VolumeId: slot})
	wantCode(t, err, codes.Aborted)
	d.inflight.unlock(slot)
	src, err := d.CreateVolume(t.Context(), createReq("race", rds.GiB, 0))
	if err != nil {
		t.Fatal(err)
	}
	// A clone locks its source: a concurrent delete of the source is refused.
	srcID := src.GetVolume().GetVolumeId()
	d.inflight.tryLock(d.opts.IDs.Slot("clone"))
	_, err = d.CreateVolume(t.Context(), func() *csipb.CreateVolumeRequest {
		r := createReq("clone", 0, 0)
		r.VolumeContentSource = &csipb.VolumeContentSource{Type: &csipb.VolumeContentSource_Volume{Volume: &csipb.VolumeContentSource_VolumeSource{VolumeId: srcID}}}
		return r
	}())
	wantCode(t, err, codes.Aborted)
	d.inflight.unlock(d.opts.IDs.Slot("clone"))
	if n := len(env.Sim.Disks()); n != 1 {
		t.Fatalf("%d disks, want 1", n)
	}
}

func TestCloneDefaultsToSourceSizeAndNewDisksAreFenced(t *testing.T) {
	d, env := newTestDriver(t, rdssim.Options{})
	src, err := d.CreateVolume(t.Context(), createReq("src", 3*rds.GiB, 0))
	if err != nil {
		t.Fatal(err)
	}
	srcID := src.GetVolume().GetVolumeId()
	info, _ := env.Sim.Disk(srcID)
	if info.AllowedHost != NobodyNQN {
		t.Fatalf("new disk allows %q, want %q until its first publish", info.AllowedHost, NobodyNQN)
	}
	if _, err := env.Sim.Connect(srcID, "nqn.2014-08.org.nvmexpress:uuid:any"); err == nil {
		t.Fatal("a never-published volume accepted a connect")
	}
	clone := createReq("clone", 0, 0)
	clone.VolumeContentSource = &csipb.VolumeContentSource{Type: &csipb.VolumeContentSource_Volume{Volume: &csipb.VolumeContentSource_VolumeSource{VolumeId: srcID}}}
	resp, err := d.CreateVolume(t.Context(), clone)
	if err != nil || resp.GetVolume().GetCapacityBytes() != 3*rds.GiB {
		t.Fatalf("clone without size = %v, %v; want the source's 3 GiB", resp, err)
	}
	small := createReq("small-clone", rds.GiB, 0)
	small.VolumeContentSource = clone.VolumeContentSource
	_, err = d.CreateVolume(t.Context(), small)
	wantCode(t, err, codes.OutOfRange, "more than the")
}

func TestUnreachableRDSIsUnavailable(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	_ = ln.Close()
	d, _ := newTestDriver(t, rdssim.Options{}, func(c *rds.Config) { c.Address = addr })
	_, err := d.CreateVolume(t.Context(), createReq("x", rds.GiB, 0))
	wantCode(t, err, codes.Unavailable, "cannot connect to "+addr)
	probe, err := d.Probe(t.Context(), &csipb.ProbeRequest{})
	if err != nil || probe.GetReady().GetValue() {
		t.Fatalf("probe = %v, %v; want not ready", probe, err)
	}
}

func TestDeleteVolume(t *testing.T) {
	d, env := newTestDriver(t, rdssim.Options{})
	resp, err := d.CreateVolume(t.Context(), createReq("del", rds.GiB, 0))
	if err != nil {
		t.Fatal(err)
	}
	id := resp.GetVolume().GetVolumeId()
	env.Sim.FailCommands("/file remove", "failure: file is busy", 1)
	_, err = d.DeleteVolume(t.Context(), &csipb.DeleteVolumeRequest{VolumeId: id})
	wantCode(t, err, codes.Internal, "file is busy")
	// The retry finishes the half-done deletion: the disk is gone, the file is removed now.
	if _, err := d.DeleteVolume(t.Context(), &csipb.DeleteVolumeRequest{VolumeId: id}); err != nil {
		t.Fatalf("retry: %v", err)
	}
	if got := env.Sim.Exec(`/file print detail where name~"` + id + `"`); strings.Contains(got, id) {
		t.Fatalf("backing file left behind:\n%s", got)
	}
	if _, err := d.DeleteVolume(t.Context(), &csipb.DeleteVolumeRequest{VolumeId: id}); err != nil {
		t.Fatalf("delete of a gone volume: %v", err)
	}
}

func TestExpandVolume(t *testing.T) {
	d, env := newTestDriver(t, rdssim.Options{PoolSize: 10 * rds.GiB})
	resp, _ := d.CreateVolume(t.Context(), createReq("grow", rds.GiB, 0))
	id := resp.GetVolume().GetVolumeId()
	exp, err := d.ControllerExpandVolume(t.Context(), &csipb.ControllerExpandVolumeRequest{VolumeId: id,
		CapacityRange: &csipb.CapacityRange{RequiredBytes: 2*rds.GiB + 1}})
	if err != nil || exp.GetCapacityBytes() != 2*rds.GiB+rds.MiB || !exp.GetNodeExpansionRequired() {
		t.Fatalf("expand = %v, %v", exp, err)
	}
	if info, _ := env.Sim.Disk(id); info.Size != 2*rds.GiB+rds.MiB {
		t.Fatalf("RDS size = %d", info.Size)
	}
	// Smaller request: no shrink, current size reported.
	exp, err = d.ControllerExpandVolume(t.Context(), &csipb.ControllerExpandVolumeRequest{VolumeId: id,
		CapacityRange: &csipb.CapacityRange{RequiredBytes: rds.GiB}, VolumeCapability: blockCap(rwo)})
	if err != nil || exp.GetCapacityBytes() != 2*rds.GiB+rds.MiB || exp.GetNodeExpansionRequired() {
		t.Fatalf("shrink request = %v, %v", exp, err)
	}
	_, err = d.ControllerExpandVolume(t.Context(), &csipb.ControllerExpandVolumeRequest{VolumeId: id,
		CapacityRange: &csipb.CapacityRange{RequiredBytes: 20 * rds.GiB}})
	wantCode(t, err, codes.ResourceExhausted)
}

func TestListVolumesPaging(t *testing.T) {
	d, _ := newTestDriver(t, rdssim.Options{})
	var ids []string
	for i := range 7 {
		resp, err := d.CreateVolume(t.Context(), createReq(fmt.Sprintf("page-%d", i), rds.MiB, 0))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, resp.GetVolume().GetVolumeId())
	}
	seen := map[string]int{}
	token, pages := "", 0
	for {
		resp, err := d.ListVolumes(t.Context(), &csipb.ListVolumesRequest{MaxEntries: 3, StartingToken: token})
		if err != nil {
			t.Fatal(err)
		}
		pages++
		for _, e := range resp.GetEntries() {
			seen[e.GetVolume().GetVolumeId()]++
		}
		if pages == 1 { // delete the last volume of the first page: paging must carry on
			last := resp.GetEntries()[len(resp.GetEntries())-1].GetVolume().GetVolumeId()
			if _, err := d.DeleteVolume(t.Context(), &csipb.DeleteVolumeRequest{VolumeId: last}); err != nil {
				t.Fatal(err)
			}
		}
		if token = resp.GetNextToken(); token == "" {
			break
		}
	}
	if pages != 3 || len(seen) != 7 {
		t.Fatalf("pages = %d, seen = %v; want 3 pages covering 7 volumes once each", pages, seen)
	}
	for _, id := range ids {
		if seen[id] != 1 {
			t.Fatalf("volume %s was listed %d times", id, seen[id])
		}
	}
	for id, n := range seen {
		if n != 1 {
			t.Fatalf("volume %s listed %d times", id, n)
		}
	}
	_, err := d.ListVolumes(t.Context(), &csipb.ListVolumesRequest{StartingToken: "bogus"})
	wantCode(t, err, codes.Aborted)
}

func TestSlotScheme(t *testing.T) {
	ids := VolumeIDs{SlotPrefix: "pvc-", NQNPrefix: "nqn.2000-02.com.mikrotik:", BasePath: "/storage-pool/kubernetes-volumes"}
	if err := ids.Validate(); err != nil {
		t.Fatal(err)
	}
	seen := map[string]string{}
	for i := range 10000 {
		name := fmt.Sprintf("volume-%d", i)
		s := ids.Slot(name)
		if len(s) != rds.MaxSlotLen || !ids.Owns(s) || rds.ValidateSlot(s) != nil {
			t.Fatalf("slot %q for %q is not a valid owned slot", s, name)
		}
		if other, dup := seen[s]; dup {
			t.Fatalf("%q and %q share slot %q", name, other, s)
		}
		seen[s] = name
	}
	for name, want := range map[string]string{
		"pvc-5c1e7d42-8f0b-4a53-9a41-2f0c7a1b9e11": "pvc-5c1e7d428f0b4a539a412f0c7a1b", // the UID's own digits
		"volume-0": "pvc-4c8c790c532bace762998f1b569a", // SHA-256 of the name
	} {
		if got := ids.Slot(name); got != want {
			t.Fatalf("Slot(%q) = %q, want %q", name, got, want)
		}
	}
	for _, bad := range []VolumeIDs{{SlotPrefix: "", NQNPrefix: ids.NQNPrefix, BasePath: ids.BasePath},
		{SlotPrefix: "much-too-long-", NQNPrefix: ids.NQNPrefix, BasePath: ids.BasePath},
		{SlotPrefix: "pvc-", NQNPrefix: "nqn.bad", BasePath: ids.BasePath},
		{SlotPrefix: "pvc-", NQNPrefix: ids.NQNPrefix, BasePath: "relative"}} {
		if bad.Validate() == nil {
			t.Errorf("%+v validated", bad)
		}
	}
}
