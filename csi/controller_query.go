package csi

import (
	"context"
	"sort"

	csipb "github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// ControllerGetCapabilities lists what the controller service offers.
// Publish and LIST_VOLUMES_PUBLISHED_NODES are offered when the fencing
// core is wired in (WithAttacher).
func (d *Driver) ControllerGetCapabilities(context.Context, *csipb.ControllerGetCapabilitiesRequest) (*csipb.ControllerGetCapabilitiesResponse, error) {
	var caps []*csipb.ControllerServiceCapability
	types := []csipb.ControllerServiceCapability_RPC_Type{
		csipb.ControllerServiceCapability_RPC_CREATE_DELETE_VOLUME,
		csipb.ControllerServiceCapability_RPC_LIST_VOLUMES,
		csipb.ControllerServiceCapability_RPC_GET_CAPACITY,
		csipb.ControllerServiceCapability_RPC_EXPAND_VOLUME,
		csipb.ControllerServiceCapability_RPC_CLONE_VOLUME,
	}
	if d.attacher != nil {
		types = append(types, csipb.ControllerServiceCapability_RPC_PUBLISH_UNPUBLISH_VOLUME,
			csipb.ControllerServiceCapability_RPC_LIST_VOLUMES_PUBLISHED_NODES)
	}
	for _, t := range types {
		caps = append(caps, &csipb.ControllerServiceCapability{Type: &csipb.ControllerServiceCapability_Rpc{
			Rpc: &csipb.ControllerServiceCapability_RPC{Type: t}}})
	}
	return &csipb.ControllerGetCapabilitiesResponse{Capabilities: caps}, nil
}

// ValidateVolumeCapabilities confirms the capabilities when the volume
// exists and every one of them is supported.
func (d *Driver) ValidateVolumeCapabilities(ctx context.Context, req *csipb.ValidateVolumeCapabilitiesRequest) (*csipb.ValidateVolumeCapabilitiesResponse, error) {
	id := req.GetVolumeId()
	if id == "" {
		return nil, status.Error(codes.InvalidArgument, "volume ID is required")
	}
	if len(req.GetVolumeCapabilities()) == 0 {
		return nil, status.Error(codes.InvalidArgument, "volume capabilities are required")
	}
	if !d.opts.IDs.Owns(id) {
		return nil, status.Errorf(codes.NotFound, "volume %s does not exist", id)
	}
	if _, err := d.storage.GetDisk(ctx, id); err != nil {
		return nil, toStatus(err, "reading volume "+id)
	}
	if err := validateCapabilities(req.GetVolumeCapabilities()); err != nil {
		return &csipb.ValidateVolumeCapabilitiesResponse{Message: err.Error()}, nil
	}
	if err := validateParams(req.GetParameters()); err != nil {
		return &csipb.ValidateVolumeCapabilitiesResponse{Message: err.Error()}, nil
	}
	return &csipb.ValidateVolumeCapabilitiesResponse{Confirmed: &csipb.ValidateVolumeCapabilitiesResponse_Confirmed{
		VolumeContext:      req.GetVolumeContext(),
		VolumeCapabilities: req.GetVolumeCapabilities(),
		Parameters:         req.GetParameters(),
	}}, nil
}

// ListVolumes pages through the driver's disks in slot order. The token is
// the last slot of the previous page, so deleting or adding volumes
// between pages never skips or repeats a volume that stayed.
func (d *Driver) ListVolumes(ctx context.Context, req *csipb.ListVolumesRequest) (*csipb.ListVolumesResponse, error) {
	if req.GetMaxEntries() < 0 {
		return nil, status.Error(codes.InvalidArgument, "max_entries must not be negative")
	}
	token := req.GetStartingToken()
	if token != "" && !d.opts.IDs.Owns(token) {
		return nil, status.Errorf(codes.Aborted, "starting token %q is not valid", token)
	}
	disks, err := d.storage.ListDisks(ctx, d.opts.IDs.SlotPrefix)
	if err != nil {
		return nil, toStatus(err, "listing volumes")
	}
	sort.Slice(disks, func(i, j int) bool { return disks[i].Slot < disks[j].Slot })
	resp := &csipb.ListVolumesResponse{}
	for _, disk := range disks {
		if !d.opts.IDs.Owns(disk.Slot) || disk.Slot <= token {
			continue
		}
		if req.GetMaxEntries() > 0 && len(resp.Entries) == int(req.GetMaxEntries()) {
			resp.NextToken = resp.Entries[len(resp.Entries)-1].GetVolume().GetVolumeId()
			break
		}
		entry := &csipb.ListVolumesResponse_Entry{Volume: &csipb.Volume{
			VolumeId:           disk.Slot,
			CapacityBytes:      disk.Size,
			VolumeContext:      d.volumeContext(disk.Slot, nil),
			AccessibleTopology: []*csipb.Topology{{Segments: map[string]string{d.opts.TopologyKey: d.opts.TopologyValue}}},
		}}
		if d.attacher != nil {
			entry.Status = &csipb.ListVolumesResponse_VolumeStatus{PublishedNodeIds: d.attacher.Holders(disk.Slot)}
		}
		resp.Entries = append(resp.Entries, entry)
	}
	return resp, nil
}

// GetCapacity reports the pool's free bytes, or 0 for a topology segment
// this RDS does not serve.
func (d *Driver) GetCapacity(ctx context.Context, req *csipb.GetCapacityRequest) (*csipb.GetCapacityResponse, error) {
	if t := req.GetAccessibleTopology(); t != nil {
		if v, ok := t.GetSegments()[d.opts.TopologyKey]; !ok || v != d.opts.TopologyValue {
			return &csipb.GetCapacityResponse{AvailableCapacity: 0}, nil
		}
	}
	if caps := req.GetVolumeCapabilities(); len(caps) > 0 {
		if err := validateCapabilities(caps); err != nil {
			return &csipb.GetCapacityResponse{AvailableCapacity: 0}, nil
		}
	}
	c, err := d.storage.Capacity(ctx, d.opts.Pool)
	if err != nil {
		return nil, toStatus(err, "reading pool capacity")
	}
	return &csipb.GetCapacityResponse{AvailableCapacity: c.Free, MaximumVolumeSize: wrapInt64(c.Free)}, nil
}
