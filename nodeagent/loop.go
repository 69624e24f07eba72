package nodeagent

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"github.com/rds-fence/rds-fence/rds/rdssim"
)

// ErrFenced: the storage-side fence refused this node's host NQN.
var ErrFenced = rdssim.ErrFenced

// LoopConnector is the loop transport for hosts without NVMe (this
// machine, CI, the local environment): it asks the RDS simulator's fabric
// endpoint to "connect" (the simulator applies the host-NQN fence exactly
// as the RDS does) and attaches the volume's backing file as a loop
// device. It remembers which file backs which subsystem in StateDir, so a
// restarted node plugin finds and detaches what it attached. Only
// subsystems whose NQN starts with Prefix are ever touched.
type LoopConnector struct {
	Exec     Exec
	StateDir string
	Prefix   string

	mu sync.Mutex // one attach/detach at a time: losetup --find races itself
}

var _ Connector = (*LoopConnector)(nil)

func (c *LoopConnector) check(nqn string) error {
	if c.Prefix == "" || !strings.HasPrefix(nqn, c.Prefix) {
		return fmt.Errorf("subsystem %q is not this driver's (prefix %q): not touching it", nqn, c.Prefix)
	}
	return nil
}

// stateFile names the subsystem's record without using the NQN as a path.
func (c *LoopConnector) stateFile(nqn string) string {
	sum := sha256.Sum256([]byte(nqn))
	return filepath.Join(c.StateDir, "loop-"+hex.EncodeToString(sum[:12]))
}

// Connect implements Connector.
func (c *LoopConnector) Connect(ctx context.Context, t Target) (string, error) {
	if err := c.check(t.SubsystemNQN); err != nil {
		return "", err
	}
	if err := ValidateHostNQN(t.HostNQN); err != nil {
		return "", err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if dev, err := c.device(ctx, t.SubsystemNQN); err == nil {
		return dev, nil
	} else if !errors.Is(err, ErrNotConnected) {
		return "", err
	}
	file, err := rdssim.FabricConnect(ctx, net.JoinHostPort(t.Address, strconv.Itoa(t.Port)), t.SubsystemNQN, t.HostNQN)
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(c.StateDir, 0o700); err != nil {
		return "", err
	}
	if err := writeAtomic(c.stateFile(t.SubsystemNQN), []byte(file+"\n")); err != nil {
		return "", err
	}
	out, err := c.Exec.Output(ctx, "losetup", "--find", "--show", "--", file)
	if err != nil {
		_ = os.Remove(c.stateFile(t.SubsystemNQN))
		return "", fmt.Errorf("losetup %s: %w: %s", file, err, strings.TrimSpace(string(out)))
	}
	dev := strings.TrimSpace(string(out))
	if !strings.HasPrefix(dev, "/dev/loop") {
		return "", fmt.Errorf("losetup printed %q, not a loop device", dev)
	}
	return dev, nil
}

// Device implements Connector.
func (c *LoopConnector) Device(ctx context.Context, nqn string) (string, error) {
	if err := c.check(nqn); err != nil {
		return "", err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.device(ctx, nqn)
}

func (c *LoopConnector) device(ctx context.Context, nqn string) (string, error) {
	devs, _, err := c.attached(ctx, nqn)
	if err != nil {
		return "", err
	}
	if len(devs) == 0 {
		return "", fmt.Errorf("subsystem %s: %w", nqn, ErrNotConnected)
	}
	return devs[0], nil
}

// attached lists the loop devices backed by the subsystem's file.
func (c *LoopConnector) attached(ctx context.Context, nqn string) ([]string, string, error) {
	b, err := os.ReadFile(c.stateFile(nqn))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, "", nil
	}
	if err != nil {
		return nil, "", err
	}
	file := strings.TrimSpace(string(b))
	out, err := c.Exec.Output(ctx, "losetup", "--noheadings", "--output", "NAME", "--associated", file)
	if err != nil {
		return nil, file, fmt.Errorf("losetup --associated %s: %w: %s", file, err, strings.TrimSpace(string(out)))
	}
	var devs []string
	for _, l := range strings.Split(string(out), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			devs = append(devs, l)
		}
	}
	return devs, file, nil
}

// Disconnect implements Connector.
func (c *LoopConnector) Disconnect(ctx context.Context, nqn string) error {
	if err := c.check(nqn); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	devs, _, err := c.attached(ctx, nqn)
	if err != nil {
		return err
	}
	for _, d := range devs {
		if out, err := c.Exec.Output(ctx, "losetup", "--detach", d); err != nil {
			return fmt.Errorf("losetup --detach %s: %w: %s", d, err, strings.TrimSpace(string(out)))
		}
	}
	if err := os.Remove(c.stateFile(nqn)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// Refresh implements Connector: the loop device re-reads its backing
// file's size.
func (c *LoopConnector) Refresh(ctx context.Context, nqn string) error {
	dev, err := c.Device(ctx, nqn)
	if err != nil {
		return err
	}
	if out, err := c.Exec.Output(ctx, "losetup", "--set-capacity", dev); err != nil {
		return fmt.Errorf("losetup --set-capacity %s: %w: %s", dev, err, strings.TrimSpace(string(out)))
	}
	return nil
}

func writeAtomic(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-")
	if err != nil {
		return err
	}
	defer func() { _ = os.Remove(tmp.Name()) }()
	if _, err := tmp.Write(data); err != nil {
		_ = tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
