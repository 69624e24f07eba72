package nodeagent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"time"
)

// NVMeConnector attaches volumes over NVMe/TCP through the kernel's
// fabrics interface, without nvme-cli: a connect is one write of the
// options to /dev/nvme-fabrics, the namespace is found by subsystem NQN
// under /sys/class/nvme-subsystem, and a disconnect writes
// delete_controller. Sysfs and /dev are rooted at SysfsRoot and DevRoot
// (defaults /sys and /dev), so the same code runs on a host, in a VM and
// against a fake tree. Only subsystems whose NQN starts with Prefix are
// ever touched.
type NVMeConnector struct {
	SysfsRoot, DevRoot string
	Prefix             string
	// CtrlLossTmo (seconds; 0: DefaultCtrlLossTmo; -1: the kernel never
	// gives up) and ReconnectDelay (seconds, default 2) are passed to the
	// kernel, as is KeepAliveTmo (seconds, default 5).
	CtrlLossTmo, ReconnectDelay, KeepAliveTmo int
	// Wait bounds how long Connect waits for the namespace's block device
	// (default 10s).
	Wait time.Duration

	locks keyedMutex
}

var _ Connector = (*NVMeConnector)(nil)

// DefaultCtrlLossTmo is how long (seconds) the kernel retries a lost
// controller before it removes it. Finite on purpose, though the volume
// must never be given up: the stable device above the namespace queues
// the I/O for as long as it takes and the monitor reconnects after the
// kernel gave up, so nothing is lost by the kernel stopping — but only a
// connect of the monitor's own can tell "the target is away" from "the
// storage refuses this node" (the volume was given to another node), and
// only then can the waiting I/O be failed instead of being written when
// the storage admits this node again. With -1 the kernel retries forever,
// a fenced volume looks like a slow one, and unstaging it hangs.
const DefaultCtrlLossTmo = 30

func (c *NVMeConnector) sys(p ...string) string {
	root := c.SysfsRoot
	if root == "" {
		root = "/sys"
	}
	return filepath.Join(append([]string{root}, p...)...)
}

func (c *NVMeConnector) dev(name string) string {
	root := c.DevRoot
	if root == "" {
		root = "/dev"
	}
	return filepath.Join(root, name)
}

func (c *NVMeConnector) check(nqn string) error {
	if c.Prefix == "" || !strings.HasPrefix(nqn, c.Prefix) {
		return fmt.Errorf("subsystem %q is not this driver's (prefix %q): not touching it", nqn, c.Prefix)
	}
	if strings.ContainsAny(nqn, ",= \n") {
		return fmt.Errorf("subsystem NQN %q holds a character the fabrics options cannot carry", nqn)
	}
	return nil
}

// Options is the fabrics connect string for t.
func (c *NVMeConnector) Options(t Target) string {
	loss, delay, kato := c.CtrlLossTmo, c.ReconnectDelay, c.KeepAliveTmo
	if loss == 0 {
		loss = DefaultCtrlLossTmo
	}
	if delay == 0 {
		delay = 2
	}
	if kato == 0 {
		kato = 5
	}
	return fmt.Sprintf("nqn=%s,transport=tcp,traddr=%s,trsvcid=%d,hostnqn=%s,ctrl_loss_tmo=%d,reconnect_delay=%d,keep_alive_tmo=%d",
		t.SubsystemNQN, t.Address, t.Port, t.HostNQN, loss, delay, kato)
}

// Connect implements Connector (one connect per subsystem at a time: the
// node service and the monitor may both try). A connect the target
// answered with an NVMe error (EIO: the target's allowed_hosts / the RDS
// fence does not admit the host NQN — the kernel does not say more) wraps
// ErrFenced; a failure of the TCP connection itself (refused, timed out,
// unreachable, reset) says the target does not answer; any other error is
// returned as it is (neither).
func (c *NVMeConnector) Connect(ctx context.Context, t Target) (string, error) {
	if err := c.check(t.SubsystemNQN); err != nil {
		return "", err
	}
	if err := ValidateHostNQN(t.HostNQN); err != nil {
		return "", err
	}
	defer c.locks.lock(t.SubsystemNQN)()
	if dev, err := c.Device(ctx, t.SubsystemNQN); err == nil {
		return dev, nil
	}
	f, err := os.OpenFile(c.dev("nvme-fabrics"), os.O_RDWR, 0)
	if err != nil {
		return "", fmt.Errorf("opening the NVMe fabrics interface (is nvme-tcp loaded?): %w", err)
	}
	defer func() { _ = f.Close() }()
	if _, err := f.Write([]byte(c.Options(t))); err != nil {
		switch {
		case errors.Is(err, syscall.EALREADY):
			// connected meanwhile (by the kernel's own retry): use it
		case errors.Is(err, syscall.EIO):
			return "", fmt.Errorf("%w: connecting to %s at %s:%d as %s: %v", ErrFenced, t.SubsystemNQN, t.Address, t.Port, t.HostNQN, err)
		case unreachable(err):
			return "", fmt.Errorf("connecting to %s at %s:%d: the target does not answer: %w", t.SubsystemNQN, t.Address, t.Port, err)
		default:
			return "", fmt.Errorf("connecting to %s at %s:%d as %s: %w", t.SubsystemNQN, t.Address, t.Port, t.HostNQN, err)
		}
	}
	wait := c.Wait
	if wait == 0 {
		wait = 10 * time.Second
	}
	deadline := time.Now().Add(wait)
	for {
		dev, err := c.Device(ctx, t.SubsystemNQN)
		if err == nil {
			return dev, nil
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("connected to %s but no namespace device appeared within %s: %w", t.SubsystemNQN, wait, err)
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// unreachable: the fabrics write failed on the TCP connection itself.
func unreachable(err error) bool {
	for _, e := range []syscall.Errno{syscall.ECONNREFUSED, syscall.ETIMEDOUT, syscall.EHOSTUNREACH, syscall.ENETUNREACH, syscall.ECONNRESET, syscall.EHOSTDOWN, syscall.ENETDOWN} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

var namespaceName = regexp.MustCompile(`^nvme[0-9]+n[0-9]+$`)

// Device implements Connector: the first namespace block device of the
// subsystem (with native multipath, the subsystem's head device, which
// survives a path going away and coming back).
func (c *NVMeConnector) Device(_ context.Context, nqn string) (string, error) {
	if err := c.check(nqn); err != nil {
		return "", err
	}
	subs, _ := filepath.Glob(c.sys("class", "nvme-subsystem", "nvme-subsys*"))
	for _, s := range subs {
		if read(filepath.Join(s, "subsysnqn")) != nqn {
			continue
		}
		entries, _ := os.ReadDir(s)
		for _, e := range entries {
			if namespaceName.MatchString(e.Name()) {
				return c.dev(e.Name()), nil
			}
		}
	}
	return "", fmt.Errorf("subsystem %s: %w", nqn, ErrNotConnected)
}

// Controllers lists the controllers (/sys/class/nvme/nvmeN) of a subsystem.
func (c *NVMeConnector) Controllers(nqn string) []string {
	ctrls, _ := filepath.Glob(c.sys("class", "nvme", "nvme*"))
	var out []string
	for _, ctrl := range ctrls {
		if read(filepath.Join(ctrl, "subsysnqn")) == nqn {
			out = append(out, ctrl)
		}
	}
	return out
}

// State is a controller's state (live, connecting, deleting, ...).
func (c *NVMeConnector) State(ctrl string) string { return read(filepath.Join(ctrl, "state")) }

// Disconnect implements Connector: every controller of the subsystem is deleted.
func (c *NVMeConnector) Disconnect(_ context.Context, nqn string) error {
	if err := c.check(nqn); err != nil {
		return err
	}
	var errs []error
	for _, ctrl := range c.Controllers(nqn) {
		if err := os.WriteFile(filepath.Join(ctrl, "delete_controller"), []byte("1"), 0); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("deleting controller %s: %w", filepath.Base(ctrl), err))
		}
	}
	return errors.Join(errs...)
}

// Refresh implements Connector: the controllers rescan their namespaces
// (a grown volume's new size).
func (c *NVMeConnector) Refresh(_ context.Context, nqn string) error {
	if err := c.check(nqn); err != nil {
		return err
	}
	ctrls := c.Controllers(nqn)
	if len(ctrls) == 0 {
		return fmt.Errorf("subsystem %s: %w", nqn, ErrNotConnected)
	}
	for _, ctrl := range ctrls {
		if err := os.WriteFile(filepath.Join(ctrl, "rescan_controller"), []byte("1"), 0); err != nil {
			return fmt.Errorf("rescanning controller %s: %w", filepath.Base(ctrl), err)
		}
	}
	return nil
}

func read(p string) string {
	b, err := os.ReadFile(p)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}
