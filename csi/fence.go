package csi

import (
	"context"
	"fmt"

	"github.com/rds-fence/rds-fence/attachment"
)

// FenceMode selects the storage-side fence.
type FenceMode string

const (
	// FenceHostNQN (default): each disk's nvme-tcp-server-allow-host-name
	// names the host NQN of the node holding the volume, or NobodyNQN when
	// no node does, so the RDS itself refuses any other initiator.
	FenceHostNQN FenceMode = "hostnqn"
	// FenceOff leaves the property alone; only the controller's records
	// fence. For RDS firmware without the property.
	FenceOff FenceMode = "off"
)

// NobodyNQN is the allowed host of a volume nobody holds: a well-formed NQN
// no initiator uses, because an empty value would allow every host.
const NobodyNQN = "nqn.2026-11.dev.rds-fence:nobody"

// FenceSetter is the one RDS call the fence needs.
type FenceSetter interface {
	SetAllowedHost(ctx context.Context, slot, hostNQN string) error
}

// Fencer implements attachment.Fence on the RDS.
//
// Two holders (a KubeVirt live migration of an RWX block volume): RouterOS
// documents nvme-tcp-server-allow-host-name as a single value, so both
// hosts cannot be named. The fence is then opened ("" = any host) for the
// migration window only, and closed to the single remaining holder when
// the migration ends. Risk: during that window (bounded by the StorageClass
// migrationTimeout) any initiator that knows the NQN could connect; the
// controller's records and the admission webhook still refuse any third
// node. Operators who cannot accept that window should not offer RWX block.
type Fencer struct {
	Mode    FenceMode
	Storage FenceSetter
}

var _ attachment.Fence = (*Fencer)(nil)

// Allow makes the RDS accept exactly hostNQNs on the volume's export.
func (f *Fencer) Allow(ctx context.Context, volumeID string, hostNQNs []string) error {
	if f.Mode == FenceOff {
		return nil
	}
	var allowed string
	switch len(hostNQNs) {
	case 0:
		allowed = NobodyNQN
	case 1:
		if hostNQNs[0] == "" {
			return fmt.Errorf("refusing to fence volume %s to an empty host NQN (that would allow every host)", volumeID)
		}
		allowed = hostNQNs[0]
	case 2:
		allowed = "" // migration window: see the type's comment
	default:
		return fmt.Errorf("refusing to fence volume %s to %d hosts", volumeID, len(hostNQNs))
	}
	return f.Storage.SetAllowedHost(ctx, volumeID, allowed)
}

// initialFence is the allowed host of a new disk: nobody until its first
// publish, unless the fence is off.
func (d *Driver) initialFence() string {
	if d.opts.FenceMode == FenceOff {
		return ""
	}
	return NobodyNQN
}
