package csi

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	csipb "github.com/container-storage-interface/spec/lib/go/csi"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	mount "k8s.io/mount-utils"

	"github.com/rds-fence/rds-fence/nodeagent"
)

// NodeVolumes is what staging and publishing need besides the options:
// the transport that attaches a volume, this node's host NQN (the storage
// fence admits it), and the mounter (mount-utils' SafeFormatAndMount,
// which formats only a device blkid reports as empty; a failed or
// ambiguous probe is an error, never "empty").
type NodeVolumes struct {
	Connector nodeagent.Connector
	HostNQN   string
	Mounter   *mount.SafeFormatAndMount
	// NQNPrefix makes a volume ID its subsystem NQN (the controller's --nqn-prefix).
	NQNPrefix string
	// Mapper, when set, puts a stable device above the attached one
	// (nodeagent.DMMultipath for NVMe/TCP): file systems are mounted from
	// it and block volumes published as its device node, so a renumbered
	// namespace is swapped in underneath. Nil: the attached device is used
	// directly (the loop transport, whose device never changes).
	Mapper nodeagent.Mapper
	// Watcher, when set, is told what is staged (the node agent's monitor,
	// which keeps it connected and reports its health).
	Watcher Watcher
	// Staged, when set, remembers what is staged across restarts of the
	// node plugin (Resume watches it again).
	Staged *nodeagent.StagedStore
}

// MapPrefix starts the name of every stable device this driver creates.
const MapPrefix = "rds-fence-"

// MapName is volume id's stable device name.
func MapName(id string) string { return MapPrefix + id }

// Watcher follows the staged volumes (nodeagent.Monitor).
type Watcher interface {
	Expect(t nodeagent.Target)
	ExpectFenced(t nodeagent.Target, since time.Time)
	Forget(subsystemNQN string)
	Health(subsystemNQN string) (nodeagent.Health, bool)
}

// stable is the device a volume is used through: the Mapper's stable
// device, or the attached device itself.
func (v *NodeVolumes) stable(ctx context.Context, id string) (string, error) {
	if v.Mapper != nil {
		return v.Mapper.Path(ctx, MapName(id))
	}
	return v.Connector.Device(ctx, v.NQNPrefix+id)
}

// Keep points volume t's stable device at dev (the monitor's hook after a
// reconnect or renumbering).
func (v *NodeVolumes) Keep(ctx context.Context, t nodeagent.Target, dev string) error {
	if v.Mapper == nil {
		return nil
	}
	id, ok := strings.CutPrefix(t.SubsystemNQN, v.NQNPrefix)
	if !ok {
		return fmt.Errorf("subsystem %s is not this driver's", t.SubsystemNQN)
	}
	_, err := v.Mapper.Map(ctx, MapName(id), dev)
	return err
}

// Resume watches every volume staged before this process started (the
// node plugin restarted): the monitor reconnects what needs it and points
// the stable devices at the current devices before the kubelet calls
// anything. A record that cannot be read is reported, the rest resumed.
func (v *NodeVolumes) Resume() ([]nodeagent.Staged, error) {
	if v.Staged == nil || v.Watcher == nil {
		return nil, nil
	}
	recs, err := v.Staged.List()
	for _, r := range recs {
		v.watch(r)
	}
	return recs, err
}

// watch hands a recorded volume to the monitor, fenced if it was.
func (v *NodeVolumes) watch(r nodeagent.Staged) {
	if r.FencedSince != nil {
		v.Watcher.ExpectFenced(r.Target, *r.FencedSince)
		return
	}
	v.Watcher.Expect(r.Target)
}

// fencedSince: when the volume of subsystem nqn was found fenced on this
// node (by the monitor, or recorded before a restart); nil when it was not.
func (v *NodeVolumes) fencedSince(nqn string) *time.Time {
	if v.Watcher != nil {
		if h, ok := v.Watcher.Health(nqn); ok && h.State == nodeagent.StateFenced {
			return &h.Since
		}
	}
	if v.Staged != nil {
		recs, _ := v.Staged.List()
		for _, r := range recs {
			if r.Target.SubsystemNQN == nqn && r.FencedSince != nil {
				return r.FencedSince
			}
		}
	}
	return nil
}

func fencedError(id string, since time.Time) error {
	return status.Errorf(codes.FailedPrecondition, "volume %s: the storage has refused this node since %s (the volume was given to another node) and its waiting I/O was failed; it stays unusable here until it is unstaged: delete the pods on this node that use it",
		id, since.UTC().Format(time.RFC3339))
}

func (n *NodeServer) volumes() (*NodeVolumes, error) {
	if n.vols == nil {
		return nil, status.Error(codes.Unimplemented, "this node plugin has no volume transport configured")
	}
	return n.vols, nil
}

// volumeAnd checks that a transport is configured and that the request
// names a volume and the path it is about.
func (n *NodeServer) volumeAnd(id, path, pathName string) (*NodeVolumes, error) {
	v, err := n.volumes()
	if err != nil {
		return nil, err
	}
	if id == "" || path == "" {
		return nil, status.Errorf(codes.InvalidArgument, "volume ID and %s are required", pathName)
	}
	return v, nil
}

func (n *NodeServer) lock(id string) (func(), error) {
	if !n.inflight.tryLock(id) {
		return nil, status.Errorf(codes.Aborted, "an operation on volume %s is already in progress", id)
	}
	return func() { n.inflight.unlock(id) }, nil
}

// NodeStageVolume attaches the volume to this node and, for a filesystem
// volume, formats it if (and only if) it is empty and mounts it on the
// staging path. A volume whose publish context names another holder is
// refused: the controller granted it to that node, not this one.
func (n *NodeServer) NodeStageVolume(ctx context.Context, req *csipb.NodeStageVolumeRequest) (*csipb.NodeStageVolumeResponse, error) {
	v, err := n.volumes()
	if err != nil {
		return nil, err
	}
	id, staging, vc := req.GetVolumeId(), req.GetStagingTargetPath(), req.GetVolumeContext()
	switch {
	case id == "":
		return nil, status.Error(codes.InvalidArgument, "volume ID is required")
	case staging == "":
		return nil, status.Error(codes.InvalidArgument, "staging target path is required")
	case req.GetVolumeCapability() == nil:
		return nil, status.Error(codes.InvalidArgument, "volume capability is required")
	}
	if err := validateCapabilities([]*csipb.VolumeCapability{req.GetVolumeCapability()}); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "volume %s: %v", id, err)
	}
	if h := req.GetPublishContext()[PubCtxHolder]; h != "" && h != n.opts.NodeID {
		return nil, status.Errorf(codes.FailedPrecondition, "volume %s was published to node %s, not to this node %s: refusing to connect", id, h, n.opts.NodeID)
	}
	port, perr := strconv.Atoi(vc[CtxTargetPort])
	if vc[CtxNQN] == "" || vc[CtxTargetAddress] == "" || perr != nil {
		return nil, status.Errorf(codes.InvalidArgument, "volume %s: the volume context lacks %s, %s or a numeric %s", id, CtxNQN, CtxTargetAddress, CtxTargetPort)
	}
	if vc[CtxNQN] != v.NQNPrefix+id {
		return nil, status.Errorf(codes.InvalidArgument, "volume %s: subsystem %q is not this volume's (%s%s)", id, vc[CtxNQN], v.NQNPrefix, id)
	}
	fsType := ""
	if m := req.GetVolumeCapability().GetMount(); m != nil {
		fsType = m.GetFsType()
		if fsType == "" {
			fsType = "ext4"
		}
		if !supportedFS[fsType] {
			return nil, status.Errorf(codes.InvalidArgument, "volume %s: file system %q is not supported (ext4, xfs)", id, fsType)
		}
	}
	unlock, err := n.lock(id)
	if err != nil {
		return nil, err
	}
	defer unlock()
	tgt := nodeagent.Target{Address: vc[CtxTargetAddress], Port: port, SubsystemNQN: vc[CtxNQN], HostNQN: v.HostNQN}
	if since := v.fencedSince(tgt.SubsystemNQN); since != nil {
		return nil, fencedError(id, *since)
	}
	dev, undo, err := v.attach(ctx, id, tgt)
	if err != nil {
		return nil, err
	}
	if fsType == "" {
		return &csipb.NodeStageVolumeResponse{}, nil // block: published from the device itself
	}
	fail := func(err error) (*csipb.NodeStageVolumeResponse, error) {
		undo()
		return nil, err
	}
	if err := os.MkdirAll(staging, 0o750); err != nil {
		return fail(status.Errorf(codes.Internal, "volume %s: %v", id, err))
	}
	notMnt, err := v.Mounter.IsLikelyNotMountPoint(staging)
	if err != nil {
		return fail(status.Errorf(codes.Internal, "volume %s: checking %s: %v", id, staging, err))
	}
	if !notMnt {
		return &csipb.NodeStageVolumeResponse{}, nil // already staged
	}
	opts := req.GetVolumeCapability().GetMount().GetMountFlags()
	if err := v.Mounter.FormatAndMount(dev, staging, fsType, opts); err != nil {
		return fail(status.Errorf(codes.Internal, "volume %s: formatting (only if empty) and mounting %s on %s: %v", id, dev, staging, err))
	}
	return &csipb.NodeStageVolumeResponse{}, nil
}

// attach connects the volume (recorded first, so a restarted plugin keeps
// watching it), puts the stable device above it and has the monitor watch
// it. It returns the stable device and an undo that takes back what this
// call created — the record, the stable device, the connection — for a
// stage that fails later (a failed stage is final for the kubelet, which
// then never unstages). A volume that was already attached or recorded
// before this call is left as it was: it is someone's staged volume.
func (v *NodeVolumes) attach(ctx context.Context, id string, tgt nodeagent.Target) (string, func(), error) {
	nqn := tgt.SubsystemNQN
	hadRecord := false
	if v.Staged != nil {
		recs, lerr := v.Staged.List()
		hadRecord = lerr != nil // unsure: treat it as someone's staged volume
		for _, r := range recs {
			hadRecord = hadRecord || r.Target.SubsystemNQN == nqn
		}
		if err := v.Staged.Put(nodeagent.Staged{VolumeID: id, Target: tgt, MapName: MapName(id)}); err != nil {
			return "", nil, status.Errorf(codes.Internal, "volume %s: recording it as staged: %v", id, err)
		}
	}
	_, derr := v.Connector.Device(ctx, nqn)
	fresh := errors.Is(derr, nodeagent.ErrNotConnected)
	_, merr := v.stable(ctx, id)
	freshMap := v.Mapper != nil && errors.Is(merr, nodeagent.ErrNotConnected)
	undo := func() {
		if hadRecord {
			return // a staged volume (perhaps lost right now): keep everything
		}
		ctx := context.WithoutCancel(ctx)
		if v.Watcher != nil {
			v.Watcher.Forget(nqn)
		}
		// stop at the first failure: keep the record of what is still there
		if freshMap {
			if err := v.Mapper.Unmap(ctx, MapName(id)); err != nil {
				return
			}
		}
		if fresh {
			if err := v.Connector.Disconnect(ctx, nqn); err != nil {
				return
			}
		}
		if v.Staged != nil {
			_ = v.Staged.Delete(nqn)
		}
	}
	dev, err := v.Connector.Connect(ctx, tgt)
	if err != nil {
		undo()
		if errors.Is(err, nodeagent.ErrFenced) {
			return "", nil, status.Errorf(codes.FailedPrecondition, "volume %s: the storage refused this node (host NQN %s): %v", id, v.HostNQN, err)
		}
		return "", nil, status.Errorf(codes.Unavailable, "volume %s: attaching it: %v", id, err)
	}
	if v.Mapper != nil {
		if dev, err = v.Mapper.Map(ctx, MapName(id), dev); err != nil {
			undo()
			return "", nil, status.Errorf(codes.Internal, "volume %s: creating its stable device: %v", id, err)
		}
	}
	if v.Watcher != nil {
		v.Watcher.Expect(tgt)
	}
	return dev, undo, nil
}

// FailQueued fails the I/O waiting on volume t's stable device (the
// monitor's hook when the storage fence refuses this node).
func (v *NodeVolumes) FailQueued(ctx context.Context, t nodeagent.Target) error {
	id, ok := strings.CutPrefix(t.SubsystemNQN, v.NQNPrefix)
	if !ok {
		return fmt.Errorf("subsystem %s is not this driver's", t.SubsystemNQN)
	}
	var errs []error
	if v.Staged != nil { // first: a restarted plugin must know it is fenced
		since := time.Now()
		if v.Watcher != nil {
			if h, ok := v.Watcher.Health(t.SubsystemNQN); ok && h.State == nodeagent.StateFenced && !h.Since.IsZero() {
				since = h.Since
			}
		}
		if err := v.Staged.MarkFenced(t, id, MapName(id), since); err != nil {
			errs = append(errs, fmt.Errorf("recording volume %s as fenced: %w", id, err))
		}
	}
	if v.Mapper != nil {
		errs = append(errs, v.Mapper.FailQueued(ctx, MapName(id)))
	}
	return errors.Join(errs...)
}

// NodeUnstageVolume unmounts the staging path (if mounted) and detaches
// the volume. Unstaging what is not staged succeeds.
func (n *NodeServer) NodeUnstageVolume(ctx context.Context, req *csipb.NodeUnstageVolumeRequest) (*csipb.NodeUnstageVolumeResponse, error) {
	id, staging := req.GetVolumeId(), req.GetStagingTargetPath()
	v, err := n.volumeAnd(id, staging, "staging target path")
	if err != nil {
		return nil, err
	}
	unlock, err := n.lock(id)
	if err != nil {
		return nil, err
	}
	defer unlock()
	nqn := v.NQNPrefix + id
	if err := v.failIfGone(ctx, id); err != nil {
		return nil, status.Errorf(codes.Internal, "volume %s: %v", id, err)
	}
	if err := mount.CleanupMountPoint(staging, v.Mounter, true); err != nil {
		return nil, status.Errorf(codes.Internal, "volume %s: unmounting %s: %v", id, staging, err)
	}
	if v.Watcher != nil {
		v.Watcher.Forget(nqn) // before the disconnect: the monitor must not reconnect it
	}
	if v.Mapper != nil {
		if err := v.Mapper.Unmap(ctx, MapName(id)); err != nil {
			v.rewatch(id)
			return nil, status.Errorf(codes.Internal, "volume %s: removing its stable device (still open?): %v", id, err)
		}
	}
	if err := v.Connector.Disconnect(ctx, nqn); err != nil {
		v.rewatch(id)
		return nil, status.Errorf(codes.Internal, "volume %s: detaching it: %v", id, err)
	}
	if v.Staged != nil {
		if err := v.Staged.Delete(nqn); err != nil {
			return nil, status.Errorf(codes.Internal, "volume %s: forgetting its record: %v", id, err)
		}
	}
	return &csipb.NodeUnstageVolumeResponse{}, nil
}

// failIfGone: a volume the monitor reports lost or fenced has its waiting
// I/O failed, so the unmount finishes instead of hanging on a device that
// is not coming back (fenced: it was given to another node, and its
// writes must never land anyway). A volume that is live or that the
// kernel is still reconnecting keeps its queue.
func (v *NodeVolumes) failIfGone(ctx context.Context, id string) error {
	if v.Mapper == nil || v.Watcher == nil {
		return nil
	}
	h, ok := v.Watcher.Health(v.NQNPrefix + id)
	if !ok || (h.State != nodeagent.StateLost && h.State != nodeagent.StateFenced) {
		return nil
	}
	return v.Mapper.FailQueued(ctx, MapName(id))
}

// rewatch puts a volume whose unstage failed half-way back under the
// monitor (it is still staged as far as the kubelet knows).
func (v *NodeVolumes) rewatch(id string) {
	if v.Watcher == nil || v.Staged == nil {
		return
	}
	recs, _ := v.Staged.List()
	for _, r := range recs {
		if r.VolumeID == id {
			v.watch(r)
		}
	}
}

// NodePublishVolume bind-mounts the staged file system on the target path,
// or, for a block volume, creates the target as a device node of the
// attached device (mknod with its major:minor; no bind mount of /dev).
func (n *NodeServer) NodePublishVolume(ctx context.Context, req *csipb.NodePublishVolumeRequest) (*csipb.NodePublishVolumeResponse, error) {
	v, err := n.volumes()
	if err != nil {
		return nil, err
	}
	id, staging, target := req.GetVolumeId(), req.GetStagingTargetPath(), req.GetTargetPath()
	switch {
	case id == "":
		return nil, status.Error(codes.InvalidArgument, "volume ID is required")
	case target == "":
		return nil, status.Error(codes.InvalidArgument, "target path is required")
	case staging == "":
		return nil, status.Error(codes.InvalidArgument, "staging target path is required (the driver stages volumes)")
	case req.GetVolumeCapability() == nil:
		return nil, status.Error(codes.InvalidArgument, "volume capability is required")
	}
	if err := validateCapabilities([]*csipb.VolumeCapability{req.GetVolumeCapability()}); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "volume %s: %v", id, err)
	}
	unlock, err := n.lock(id)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if since := v.fencedSince(v.NQNPrefix + id); since != nil {
		return nil, fencedError(id, *since) // the kubelet then unstages and stages anew
	}
	if req.GetVolumeCapability().GetBlock() != nil {
		dev, err := v.stable(ctx, id)
		if errors.Is(err, nodeagent.ErrNotConnected) {
			return nil, status.Errorf(codes.FailedPrecondition, "volume %s is not staged on this node", id)
		}
		if err != nil {
			return nil, status.Errorf(codes.Internal, "volume %s: %v", id, err)
		}
		if err := deviceNode(dev, target); err != nil {
			return nil, status.Errorf(codes.Internal, "volume %s: %v", id, err)
		}
		return &csipb.NodePublishVolumeResponse{}, nil
	}
	notMnt, err := v.Mounter.IsLikelyNotMountPoint(staging)
	if err != nil || notMnt {
		return nil, status.Errorf(codes.FailedPrecondition, "volume %s is not staged at %s", id, staging)
	}
	if err := os.MkdirAll(target, 0o750); err != nil {
		return nil, status.Errorf(codes.Internal, "volume %s: %v", id, err)
	}
	if notMnt, err := v.Mounter.IsLikelyNotMountPoint(target); err != nil {
		return nil, status.Errorf(codes.Internal, "volume %s: checking %s: %v", id, target, err)
	} else if !notMnt {
		return &csipb.NodePublishVolumeResponse{}, nil // already published
	}
	opts := []string{"bind"}
	if req.GetReadonly() {
		opts = append(opts, "ro")
	}
	if err := v.Mounter.Mount(staging, target, "", opts); err != nil {
		return nil, status.Errorf(codes.Internal, "volume %s: bind-mounting %s on %s: %v", id, staging, target, err)
	}
	return &csipb.NodePublishVolumeResponse{}, nil
}

// deviceNode makes target a block device node for dev's major:minor
// (idempotent when it already is one).
func deviceNode(dev, target string) error {
	var st unix.Stat_t
	if err := unix.Stat(dev, &st); err != nil {
		return fmt.Errorf("%s: %w", dev, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFBLK {
		return fmt.Errorf("%s is not a block device", dev)
	}
	var cur unix.Stat_t
	if err := unix.Stat(target, &cur); err == nil {
		if cur.Mode&unix.S_IFMT == unix.S_IFBLK && cur.Rdev == st.Rdev {
			return nil
		}
		return fmt.Errorf("target %s exists and is not the device node of %s", target, dev)
	}
	if err := os.MkdirAll(filepath.Dir(target), 0o750); err != nil {
		return err
	}
	if err := unix.Mknod(target, unix.S_IFBLK|0o660, int(st.Rdev)); err != nil {
		return fmt.Errorf("mknod %s: %w", target, err)
	}
	return nil
}

// NodeUnpublishVolume unmounts (file system) or removes (block device
// node) the target. Unpublishing what is not published succeeds.
func (n *NodeServer) NodeUnpublishVolume(_ context.Context, req *csipb.NodeUnpublishVolumeRequest) (*csipb.NodeUnpublishVolumeResponse, error) {
	id, target := req.GetVolumeId(), req.GetTargetPath()
	v, err := n.volumeAnd(id, target, "target path")
	if err != nil {
		return nil, err
	}
	unlock, err := n.lock(id)
	if err != nil {
		return nil, err
	}
	defer unlock()
	var st unix.Stat_t
	if err := unix.Lstat(target, &st); err == nil && st.Mode&unix.S_IFMT == unix.S_IFBLK {
		if err := os.Remove(target); err != nil {
			return nil, status.Errorf(codes.Internal, "volume %s: %v", id, err)
		}
		return &csipb.NodeUnpublishVolumeResponse{}, nil
	}
	if err := mount.CleanupMountPoint(target, v.Mounter, true); err != nil {
		return nil, status.Errorf(codes.Internal, "volume %s: unmounting %s: %v", id, target, err)
	}
	return &csipb.NodeUnpublishVolumeResponse{}, nil
}
