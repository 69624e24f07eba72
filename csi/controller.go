package csi

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	csipb "github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/rds-fence/rds-fence/rds"
)

// CreateVolume creates a file-backed disk exported over NVMe/TCP. It is
// idempotent by name: the name maps to one slot, and an existing disk of a
// compatible size is returned as is. On the fast path it costs one RouterOS
// command (`/disk add`); only a retry pays for a second (`print`).
func (d *Driver) CreateVolume(ctx context.Context, req *csipb.CreateVolumeRequest) (*csipb.CreateVolumeResponse, error) {
	name := req.GetName()
	if name == "" {
		return nil, status.Error(codes.InvalidArgument, "volume name is required")
	}
	if err := validateCapabilities(req.GetVolumeCapabilities()); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "volume %q: %v", name, err)
	}
	if err := validateParams(req.GetParameters()); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "volume %q: %v", name, err)
	}
	topo, err := d.accessibleTopology(req.GetAccessibilityRequirements())
	if err != nil {
		return nil, err
	}
	slot := d.opts.IDs.Slot(name)
	locks := []string{slot}
	src := req.GetVolumeContentSource()
	if src.GetVolume() != nil {
		locks = append(locks, src.GetVolume().GetVolumeId()) // no delete of the source mid-copy
	}
	if !d.inflight.tryLock(locks...) {
		return nil, status.Errorf(codes.Aborted, "an operation on volume %s (%q) or its clone source is already in progress", slot, name)
	}
	defer d.inflight.unlock(locks...)

	opts := rds.CreateOptions{Slot: slot, FilePath: d.opts.IDs.FilePath(slot),
		NQN: d.opts.IDs.NQN(slot), Port: d.opts.TargetPort, AllowedHost: d.initialFence()}
	def := d.opts.DefaultSize
	if src != nil {
		srcSize, err := d.cloneSource(ctx, src, &opts)
		if err != nil {
			return nil, err
		}
		def = srcSize // a clone without a size is as large as its source
	}
	if opts.SizeBytes, err = sizeFor(req.GetCapacityRange(), def); err != nil {
		code := codes.InvalidArgument
		if errors.As(err, new(errOutOfRange)) {
			code = codes.OutOfRange
		}
		return nil, status.Errorf(code, "volume %q: %v", name, err)
	}
	if opts.CopyFrom != "" && opts.SizeBytes < def {
		return nil, status.Errorf(codes.OutOfRange, "source volume %s has %d bytes, more than the %d requested", opts.CopyFrom, def, opts.SizeBytes)
	}
	size := opts.SizeBytes
	err = d.storage.CreateDisk(ctx, opts)
	switch {
	case errors.Is(err, rds.ErrAlreadyExists):
		existing, gerr := d.storage.GetDisk(ctx, slot)
		if gerr != nil {
			if errors.Is(gerr, rds.ErrNotFound) {
				return nil, status.Errorf(codes.AlreadyExists,
					"volume %q: backing file %s exists on the RDS without a disk entry; remove the file after checking it holds no data you need", name, opts.FilePath)
			}
			return nil, toStatus(gerr, "reading existing volume "+slot)
		}
		if !fits(existing.Size, req.GetCapacityRange()) {
			return nil, status.Errorf(codes.AlreadyExists,
				"volume %q already exists as %s with %d bytes, which does not satisfy the requested range", name, slot, existing.Size)
		}
		size = existing.Size
	case err != nil:
		return nil, toStatus(err, fmt.Sprintf("creating volume %q as %s", name, slot))
	}
	d.log.Info("volume created", "name", name, "volumeID", slot, "bytes", size, "cloneOf", opts.CopyFrom)
	return &csipb.CreateVolumeResponse{Volume: &csipb.Volume{
		VolumeId:           slot,
		CapacityBytes:      size,
		VolumeContext:      d.volumeContext(slot, req.GetParameters()),
		ContentSource:      req.GetVolumeContentSource(),
		AccessibleTopology: topo,
	}}, nil
}

// cloneSource fills CopyFrom for a volume clone and returns the source's
// size. Snapshots are not offered.
func (d *Driver) cloneSource(ctx context.Context, src *csipb.VolumeContentSource, o *rds.CreateOptions) (int64, error) {
	vol := src.GetVolume()
	if vol == nil {
		return 0, status.Error(codes.InvalidArgument, "only volume clones are supported as content source (no snapshots)")
	}
	id := vol.GetVolumeId()
	if !d.opts.IDs.Owns(id) {
		return 0, status.Errorf(codes.NotFound, "source volume %q does not exist", id)
	}
	srcDisk, err := d.storage.GetDisk(ctx, id)
	if err != nil {
		return 0, toStatus(err, "reading source volume "+id)
	}
	o.CopyFrom = id
	return srcDisk.Size, nil
}

func (d *Driver) volumeContext(slot string, params map[string]string) map[string]string {
	vc := map[string]string{
		CtxNQN:           d.opts.IDs.NQN(slot),
		CtxTargetAddress: d.opts.TargetAddress,
		CtxTargetPort:    strconv.Itoa(d.opts.TargetPort),
	}
	if v := params[ParamPVCName]; v != "" {
		vc[CtxPVCName] = v
	}
	if v := params[ParamPVCNamespace]; v != "" {
		vc[CtxPVCNamespace] = v
	}
	if v := params[ParamMigrationTimeout]; v != "" {
		vc[CtxMigrationTmo] = v
	}
	return vc
}

// accessibleTopology returns the RDS's segment, or ResourceExhausted when
// the requirements exclude it.
func (d *Driver) accessibleTopology(req *csipb.TopologyRequirement) ([]*csipb.Topology, error) {
	ours := &csipb.Topology{Segments: map[string]string{d.opts.TopologyKey: d.opts.TopologyValue}}
	if req == nil || (len(req.GetRequisite()) == 0 && len(req.GetPreferred()) == 0) {
		return []*csipb.Topology{ours}, nil
	}
	for _, list := range [][]*csipb.Topology{req.GetRequisite(), req.GetPreferred()} {
		for _, t := range list {
			if v, ok := t.GetSegments()[d.opts.TopologyKey]; ok && v == d.opts.TopologyValue {
				return []*csipb.Topology{ours}, nil
			}
		}
	}
	return nil, status.Errorf(codes.ResourceExhausted,
		"no requested topology contains %s=%s, the only segment this RDS serves", d.opts.TopologyKey, d.opts.TopologyValue)
}

// DeleteVolume removes the disk and its backing file. A volume that does
// not exist, or an ID this driver never issues, is already deleted.
func (d *Driver) DeleteVolume(ctx context.Context, req *csipb.DeleteVolumeRequest) (*csipb.DeleteVolumeResponse, error) {
	id := req.GetVolumeId()
	if id == "" {
		return nil, status.Error(codes.InvalidArgument, "volume ID is required")
	}
	if !d.opts.IDs.Owns(id) {
		d.log.Info("delete of a volume ID this driver never issues; nothing to do", "volumeID", id)
		return &csipb.DeleteVolumeResponse{}, nil
	}
	if !d.inflight.tryLock(id) {
		return nil, status.Errorf(codes.Aborted, "an operation on volume %s is already in progress", id)
	}
	defer d.inflight.unlock(id)
	del := func() error { return d.deleteDisk(ctx, id) }
	if d.attacher != nil {
		if err := d.attacher.WhileReleased(ctx, id, del); err != nil {
			return nil, publishStatus(err)
		}
	} else if err := del(); err != nil {
		return nil, err
	}
	d.log.Info("volume deleted", "volumeID", id)
	return &csipb.DeleteVolumeResponse{}, nil
}

// deleteDisk removes the file the disk really uses (the base path may have
// changed since it was created); when the disk entry is already gone, the
// file can only be at the path this driver derives.
func (d *Driver) deleteDisk(ctx context.Context, id string) error {
	path := d.opts.IDs.FilePath(id)
	switch disk, err := d.storage.GetDisk(ctx, id); {
	case err == nil && disk.FilePath != "":
		path = disk.FilePath
	case err != nil && !errors.Is(err, rds.ErrNotFound):
		return toStatus(err, "reading volume "+id)
	}
	if err := d.storage.DeleteDisk(ctx, id, path); err != nil {
		return toStatus(err, "deleting volume "+id)
	}
	return nil
}

// ControllerExpandVolume grows the backing file. Shrinking is never done:
// a request at or below the current size returns the current size.
func (d *Driver) ControllerExpandVolume(ctx context.Context, req *csipb.ControllerExpandVolumeRequest) (*csipb.ControllerExpandVolumeResponse, error) {
	id := req.GetVolumeId()
	if id == "" {
		return nil, status.Error(codes.InvalidArgument, "volume ID is required")
	}
	if req.GetCapacityRange() == nil {
		return nil, status.Error(codes.InvalidArgument, "capacity range is required")
	}
	if c := req.GetVolumeCapability(); c != nil {
		if err := validateCapabilities([]*csipb.VolumeCapability{c}); err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "volume %s: %v", id, err)
		}
	}
	if !d.opts.IDs.Owns(id) {
		return nil, status.Errorf(codes.NotFound, "volume %s does not exist", id)
	}
	size, err := sizeFor(req.GetCapacityRange(), 0)
	if err != nil {
		code := codes.InvalidArgument
		if errors.As(err, new(errOutOfRange)) {
			code = codes.OutOfRange
		}
		return nil, status.Errorf(code, "volume %s: %v", id, err)
	}
	if !d.inflight.tryLock(id) {
		return nil, status.Errorf(codes.Aborted, "an operation on volume %s is already in progress", id)
	}
	defer d.inflight.unlock(id)
	disk, err := d.storage.GetDisk(ctx, id)
	if err != nil {
		return nil, toStatus(err, "reading volume "+id)
	}
	nodeExpansion := req.GetVolumeCapability().GetBlock() == nil
	if disk.Size >= size {
		return &csipb.ControllerExpandVolumeResponse{CapacityBytes: disk.Size, NodeExpansionRequired: nodeExpansion}, nil
	}
	if err := d.storage.ResizeDisk(ctx, id, size); err != nil {
		return nil, toStatus(err, "expanding volume "+id)
	}
	d.log.Info("volume expanded", "volumeID", id, "fromBytes", disk.Size, "toBytes", size)
	return &csipb.ControllerExpandVolumeResponse{CapacityBytes: size, NodeExpansionRequired: nodeExpansion}, nil
}
