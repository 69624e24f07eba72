package csi

import (
	"context"
	"errors"
	"time"

	csipb "github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/rds-fence/rds-fence/attachment"
)

// Attacher is the fencing core as the controller uses it
// (*attachment.Manager with its Store).
type Attacher interface {
	Publish(ctx context.Context, volumeID, node string, mode attachment.Mode, migrationTimeout time.Duration) (attachment.Record, error)
	Unpublish(ctx context.Context, volumeID, node string) error
	// Holders returns the nodes holding the volume (nil if none).
	Holders(volumeID string) []string
	// WhileReleased runs fn under the volume's lock when nobody holds it.
	WhileReleased(ctx context.Context, volumeID string, fn func() error) error
}

var _ Attacher = (*attachment.Manager)(nil)

// Publish context keys handed to the node plugin, which refuses to stage a
// volume whose context names another holder.
const (
	PubCtxHolder  = "holder"
	PubCtxHostNQN = "hostNQN"
)

// DefaultMigrationTimeout bounds a two-node window when the StorageClass
// sets no migrationTimeout.
const DefaultMigrationTimeout = 30 * time.Minute

// ControllerPublishVolume makes the node the volume's holder, enforced on
// the RDS, and persisted on the PV before success is returned.
func (d *Driver) ControllerPublishVolume(ctx context.Context, req *csipb.ControllerPublishVolumeRequest) (*csipb.ControllerPublishVolumeResponse, error) {
	id, node := req.GetVolumeId(), req.GetNodeId()
	switch {
	case id == "":
		return nil, status.Error(codes.InvalidArgument, "volume ID is required")
	case node == "":
		return nil, status.Error(codes.InvalidArgument, "node ID is required")
	case req.GetVolumeCapability() == nil:
		return nil, status.Error(codes.InvalidArgument, "volume capability is required")
	}
	if err := validateCapabilities([]*csipb.VolumeCapability{req.GetVolumeCapability()}); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "volume %s: %v", id, err)
	}
	if !d.opts.IDs.Owns(id) {
		return nil, status.Errorf(codes.NotFound, "volume %s does not exist", id)
	}
	if d.attacher == nil {
		return nil, status.Error(codes.Unimplemented, "this controller runs without Kubernetes and cannot publish")
	}
	timeout := DefaultMigrationTimeout
	if v := req.GetVolumeContext()[CtxMigrationTmo]; v != "" {
		t, err := time.ParseDuration(v)
		if err != nil || t <= 0 {
			return nil, status.Errorf(codes.InvalidArgument, "volume %s: migrationTimeout %q is not a positive duration", id, v)
		}
		timeout = t
	}
	rec, err := d.attacher.Publish(ctx, id, node, modeOf(req.GetVolumeCapability()), timeout)
	if err != nil {
		return nil, publishStatus(err)
	}
	pub := map[string]string{PubCtxHolder: node}
	for _, h := range rec.Holders {
		if h.Node == node && h.HostNQN != "" {
			pub[PubCtxHostNQN] = h.HostNQN
		}
	}
	return &csipb.ControllerPublishVolumeResponse{PublishContext: pub}, nil
}

// ControllerUnpublishVolume releases the node's hold and closes the RDS
// fence. Unpublishing what the node does not hold succeeds.
func (d *Driver) ControllerUnpublishVolume(ctx context.Context, req *csipb.ControllerUnpublishVolumeRequest) (*csipb.ControllerUnpublishVolumeResponse, error) {
	id := req.GetVolumeId()
	if id == "" {
		return nil, status.Error(codes.InvalidArgument, "volume ID is required")
	}
	if !d.opts.IDs.Owns(id) || d.attacher == nil {
		return &csipb.ControllerUnpublishVolumeResponse{}, nil
	}
	nodes := []string{req.GetNodeId()}
	if req.GetNodeId() == "" { // CSI: unpublish from every node
		nodes = d.attacher.Holders(id)
	}
	for _, n := range nodes {
		if err := d.attacher.Unpublish(ctx, id, n); err != nil {
			return nil, publishStatus(err)
		}
	}
	return &csipb.ControllerUnpublishVolumeResponse{}, nil
}

func modeOf(c *csipb.VolumeCapability) attachment.Mode {
	if c.GetBlock() != nil && c.GetAccessMode().GetMode() == csipb.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER {
		return attachment.ModeMultiNodeBlock
	}
	return attachment.ModeSingleNode
}

// publishStatus maps fencing errors to gRPC codes. Anything unknown is
// Internal: never "allowed".
func publishStatus(err error) error {
	if _, ok := status.FromError(err); ok {
		return err // already chosen at this boundary (e.g. by deleteDisk)
	}
	var ce *attachment.ConflictError
	switch {
	case errors.As(err, &ce):
		return status.Error(codes.FailedPrecondition, ce.Error())
	case errors.Is(err, attachment.ErrNoVolume), errors.Is(err, attachment.ErrNodeNotFound):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, attachment.ErrNoHostNQN), errors.Is(err, attachment.ErrHeld):
		return status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, attachment.ErrUnavailable):
		return status.Error(codes.Unavailable, err.Error())
	}
	return status.Error(codes.Internal, err.Error())
}
