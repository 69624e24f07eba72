package csi

import (
	"context"
	"fmt"

	"github.com/rds-fence/rds-fence/attachment"
	"github.com/rds-fence/rds-fence/rds"
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

// FenceStorage is what the fence needs from the RDS.
type FenceStorage interface {
	SetAllowedHost(ctx context.Context, slot, hostNQN string) error
	ListDisks(ctx context.Context, prefix string) ([]rds.Disk, error)
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
	Storage FenceStorage
	// Prefix is the slot prefix of the driver's disks (State lists them).
	Prefix string
}

var _ attachment.Fence = (*Fencer)(nil)

// Allow makes the RDS accept exactly hostNQNs on the volume's export.
func (f *Fencer) Allow(ctx context.Context, volumeID string, hostNQNs []string) error {
	if f.Mode == FenceOff {
		return nil
	}
	if len(hostNQNs) == 1 && hostNQNs[0] == "" {
		return fmt.Errorf("refusing to fence volume %s to an empty host NQN (that would allow every host)", volumeID)
	}
	if len(hostNQNs) > attachment.MaxHolders {
		return fmt.Errorf("refusing to fence volume %s to %d hosts", volumeID, len(hostNQNs))
	}
	return f.Storage.SetAllowedHost(ctx, volumeID, f.Value(hostNQNs))
}

// Value is the allowed-host property for these holders: NobodyNQN for none,
// the NQN for one, "" (any host) for a two-node migration window.
func (f *Fencer) Value(hostNQNs []string) string {
	switch len(hostNQNs) {
	case 0:
		return NobodyNQN
	case 1:
		return hostNQNs[0]
	}
	return "" // migration window: see the type's comment
}

// State reads every driver disk's allowed host in one listing; nil when
// the fence is off.
func (f *Fencer) State(ctx context.Context) (map[string]string, error) {
	if f.Mode == FenceOff {
		return nil, nil
	}
	disks, err := f.Storage.ListDisks(ctx, f.Prefix)
	if err != nil {
		return nil, err
	}
	out := make(map[string]string, len(disks))
	for _, d := range disks {
		out[d.Slot] = d.AllowedHost
	}
	return out, nil
}

// initialFence is the allowed host of a new disk: nobody until its first
// publish, unless the fence is off.
func (d *Driver) initialFence() string {
	if d.opts.FenceMode == FenceOff {
		return ""
	}
	return NobodyNQN
}
