package nodeagent

import (
	"context"
	"errors"
	"os/exec"
)

// Target is what a node connects to: a volume's NVMe/TCP export, as the
// controller's publish context describes it, and who the node is.
type Target struct {
	Address      string // host of the storage's NVMe/TCP listener
	Port         int
	SubsystemNQN string
	HostNQN      string
}

// Connector attaches a volume's export to this node as a block device.
// Implementations: the loop transport (this file's LoopConnector) and,
// with the node issue, NVMe/TCP.
type Connector interface {
	// Connect attaches the target (idempotent: an attached target returns
	// its device) and returns the block device path. A refusal by the
	// storage-side fence wraps ErrFenced.
	Connect(ctx context.Context, t Target) (device string, err error)
	// Device returns the attached device of a subsystem, or ErrNotConnected.
	Device(ctx context.Context, subsystemNQN string) (string, error)
	// Disconnect detaches the subsystem (idempotent).
	Disconnect(ctx context.Context, subsystemNQN string) error
	// Refresh makes the attached device pick up a new size after the
	// volume was expanded on the storage.
	Refresh(ctx context.Context, subsystemNQN string) error
}

// ErrNotConnected: the subsystem is not attached on this node.
var ErrNotConnected = errors.New("not connected")

// Exec runs host tools (losetup, nvme); injected for tests and VMs.
type Exec interface {
	Output(ctx context.Context, name string, args ...string) ([]byte, error)
}

// HostExec runs tools on this host.
type HostExec struct{}

// Output runs name with args and returns its combined output.
func (HostExec) Output(ctx context.Context, name string, args ...string) ([]byte, error) {
	return exec.CommandContext(ctx, name, args...).CombinedOutput()
}
