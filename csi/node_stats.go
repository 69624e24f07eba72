package csi

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	csipb "github.com/container-storage-interface/spec/lib/go/csi"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	mount "k8s.io/mount-utils"

	"github.com/rds-fence/rds-fence/nodeagent"
)

// NodeGetVolumeStats reports capacity and inodes of a published file
// system, or the size of a published block device. When the volume's
// device is no longer attached or the mount cannot be read (a stale mount
// after a lost connection) it fails with a message saying so — never
// silent stats of a dead mount. (The CSI spec module in use, v1.13.0 as
// served by the module proxy, has no VolumeCondition field to carry it.)
func (n *NodeServer) NodeGetVolumeStats(ctx context.Context, req *csipb.NodeGetVolumeStatsRequest) (*csipb.NodeGetVolumeStatsResponse, error) {
	id, path := req.GetVolumeId(), req.GetVolumePath()
	v, err := n.volumeAnd(id, path, "volume path")
	if err != nil {
		return nil, err
	}
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil, status.Errorf(codes.NotFound, "volume %s: %s does not exist", id, path)
		}
		return nil, abnormal(id, fmt.Sprintf("%s cannot be read: %v", path, err))
	}
	if v.Watcher != nil {
		if h, ok := v.Watcher.Health(v.NQNPrefix + id); ok && h.State != nodeagent.StateLive && !h.Since.IsZero() {
			return nil, abnormal(id, healthMessage(h))
		}
	}
	if _, err := v.Connector.Device(ctx, v.NQNPrefix+id); err != nil {
		return nil, abnormal(id, fmt.Sprintf("its device is not attached on this node (%v)", err))
	}
	if st.Mode&unix.S_IFMT == unix.S_IFBLK {
		size, err := blockSize(path)
		if err != nil {
			return nil, abnormal(id, fmt.Sprintf("device node %s cannot be read: %v", path, err))
		}
		return &csipb.NodeGetVolumeStatsResponse{Usage: []*csipb.VolumeUsage{{Unit: csipb.VolumeUsage_BYTES, Total: size}}}, nil
	}
	if notMnt, err := v.Mounter.IsLikelyNotMountPoint(path); err != nil || notMnt {
		if mount.IsCorruptedMnt(err) {
			return nil, abnormal(id, fmt.Sprintf("the mount at %s is stale: %v", path, err))
		}
		return nil, status.Errorf(codes.NotFound, "volume %s is not published at %s", id, path)
	}
	var fs unix.Statfs_t
	if err := unix.Statfs(path, &fs); err != nil {
		return nil, abnormal(id, fmt.Sprintf("the file system at %s cannot be read: %v", path, err))
	}
	bs := fs.Bsize
	return &csipb.NodeGetVolumeStatsResponse{Usage: []*csipb.VolumeUsage{
		{Unit: csipb.VolumeUsage_BYTES, Total: int64(fs.Blocks) * bs, Available: int64(fs.Bavail) * bs, Used: int64(fs.Blocks-fs.Bfree) * bs},
		{Unit: csipb.VolumeUsage_INODES, Total: int64(fs.Files), Available: int64(fs.Ffree), Used: int64(fs.Files - fs.Ffree)},
	}}, nil
}

// healthMessage says what the monitor knows of a volume that is not live,
// in words an operator can act on.
func healthMessage(h nodeagent.Health) string {
	since := h.Since.UTC().Format(time.RFC3339)
	switch h.State {
	case nodeagent.StateFenced:
		return fmt.Sprintf("the storage refuses this node since %s (the volume was given to another node): its I/O waits and can never complete here; delete the pod (%v)", since, h.Err)
	case nodeagent.StateLost:
		return fmt.Sprintf("its NVMe/TCP connection is gone since %s and reconnecting fails; I/O waits for the storage to answer again (%v)", since, h.Err)
	default:
		return fmt.Sprintf("its NVMe/TCP connection is %s since %s; I/O waits", h.State, since)
	}
}

func abnormal(id, msg string) error {
	return status.Errorf(codes.Internal, "volume %s is abnormal: %s", id, msg)
}

// waitForSize waits (up to 10s) until dev is at least want bytes.
func waitForSize(ctx context.Context, dev string, want int64) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		size, err := blockSize(dev)
		if err != nil {
			return err
		}
		if size >= want {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s is still %d bytes, %d asked for, 10s after the rescan", dev, size, want)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// blockSize is the size of a block device in bytes (BLKGETSIZE64).
func blockSize(path string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer func() { _ = f.Close() }()
	var size uint64
	if err := ioctlGetSize(f.Fd(), &size); err != nil {
		return 0, err
	}
	return int64(size), nil
}

// NodeExpandVolume makes the attached device pick up the volume's new
// size (the controller grew it on the RDS) and grows the file system
// online (resize2fs, xfs_growfs); a block volume only needs the device.
func (n *NodeServer) NodeExpandVolume(ctx context.Context, req *csipb.NodeExpandVolumeRequest) (*csipb.NodeExpandVolumeResponse, error) {
	id, path := req.GetVolumeId(), req.GetVolumePath()
	v, err := n.volumeAnd(id, path, "volume path")
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(path); err != nil {
		return nil, status.Errorf(codes.NotFound, "volume %s: %s: %v", id, path, err)
	}
	unlock, err := n.lock(id)
	if err != nil {
		return nil, err
	}
	defer unlock()
	nqn := v.NQNPrefix + id
	dev, err := v.Connector.Device(ctx, nqn)
	if errors.Is(err, nodeagent.ErrNotConnected) {
		return nil, status.Errorf(codes.NotFound, "volume %s is not attached on this node", id)
	}
	if err != nil {
		return nil, status.Errorf(codes.Internal, "volume %s: %v", id, err)
	}
	if err := v.Connector.Refresh(ctx, nqn); err != nil {
		return nil, status.Errorf(codes.Internal, "volume %s: %v", id, err)
	}
	// A rescan is asynchronous: wait for the device to show the size asked
	// for before growing what sits on it (else it "succeeds" at the old size).
	if want := req.GetCapacityRange().GetRequiredBytes(); want > 0 {
		if err := waitForSize(ctx, dev, want); err != nil {
			return nil, status.Errorf(codes.Unavailable, "volume %s: %v", id, err)
		}
	}
	if v.Mapper != nil { // the stable device takes the new size too
		if dev, err = v.Mapper.Map(ctx, MapName(id), dev); err != nil {
			return nil, status.Errorf(codes.Internal, "volume %s: growing its stable device: %v", id, err)
		}
	}
	size, err := blockSize(dev)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "volume %s: %v", id, err)
	}
	if req.GetVolumeCapability().GetBlock() == nil {
		if st, err := os.Lstat(path); err == nil && st.Mode()&os.ModeDevice != 0 {
			return &csipb.NodeExpandVolumeResponse{CapacityBytes: size}, nil // a block volume's node
		}
		// Grow the file system where it is mounted (the staging path, or the
		// published path, which is the same file system).
		mnt := req.GetStagingTargetPath()
		if mnt == "" {
			mnt = path
		}
		if _, err := mount.NewResizeFs(v.Mounter.Exec).Resize(dev, mnt); err != nil {
			return nil, status.Errorf(codes.Internal, "volume %s: growing the file system on %s: %v", id, dev, err)
		}
	}
	return &csipb.NodeExpandVolumeResponse{CapacityBytes: size}, nil
}
