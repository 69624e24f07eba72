package nodeagent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Mapper keeps a stable block device above a volume's attached device:
// file systems are mounted from it and block volumes are published as
// device nodes of it, so a volume that comes back under another name
// (/dev/nvme0n1 → /dev/nvme1n1 after the kernel gave up on a controller
// and the monitor connected it again) is swapped in underneath without a
// remount and without the pod noticing more than a pause.
type Mapper interface {
	// Map makes name's stable device point at dev (create it, or swap
	// the new device in; a no-op when it already does) and returns the
	// stable device's path.
	Map(ctx context.Context, name, dev string) (string, error)
	// Path returns the stable device of name, or ErrNotConnected.
	Path(ctx context.Context, name string) (string, error)
	// FailQueued makes I/O waiting for a device fail instead of waiting
	// on (before unmounting a volume that is gone for good).
	FailQueued(ctx context.Context, name string) error
	// Unmap removes the stable device (idempotent; fails while it is open).
	Unmap(ctx context.Context, name string) error
}

// DMMultipath is the Mapper of the NVMe/TCP transport: a device-mapper
// multipath device with one path, the volume's NVMe namespace, created
// with queue_if_no_path and queue_mode bio (the NVMe head device is
// bio-based). Why multipath and not a linear mapping: when the kernel
// removes a controller (ctrl_loss_tmo expired) the I/O it held fails; a
// linear mapping hands that error to the file system (ext4 then turns
// read-only), while multipath takes it as a path failure and queues the
// I/O until a path is back. Swapping the new namespace in is a
// suspend --noflush --nolockfs (a flushing suspend would make multipath
// fail the queued I/O, a lockfs one would wait for it), a table load and
// a resume, which sends the queued I/O to the new device. Without a
// multipathd a failed path is never reinstated, so Map also reloads a
// table whose only path is marked failed.
//
// Names must start with Prefix; only those mappings are ever touched.
// dmsetup runs through Exec (with --noudevsync: no udev in the VM, and a
// container must not wait on the host's); the stable path is the kernel's
// /dev/dm-N node, which devtmpfs creates with or without udev.
type DMMultipath struct {
	Exec    Exec
	Prefix  string
	SysRoot string // default /sys
	DevRoot string // default /dev

	locks keyedMutex
}

var _ Mapper = (*DMMultipath)(nil)

var dmName = regexp.MustCompile(`^[A-Za-z0-9._-]{1,120}$`)

func (d *DMMultipath) check(name string) error {
	if d.Prefix == "" || !strings.HasPrefix(name, d.Prefix) || !dmName.MatchString(name) {
		return fmt.Errorf("device-mapper name %q is not this driver's (prefix %q, letters, digits, '.', '_', '-'): not touching it", name, d.Prefix)
	}
	return nil
}

func (d *DMMultipath) root(def, set string) string {
	if set == "" {
		return def
	}
	return set
}

func (d *DMMultipath) dmsetup(ctx context.Context, args ...string) (string, error) {
	out, err := d.Exec.Output(ctx, "dmsetup", args...)
	if err != nil {
		return "", fmt.Errorf("dmsetup %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return strings.TrimSpace(string(out)), nil
}

// errNoDevice: dmsetup's words for a mapping that does not exist.
func isNoDevice(err error) bool {
	return err != nil && (strings.Contains(err.Error(), "No such device or address") || strings.Contains(err.Error(), "does not exist"))
}

// Table is the multipath table for dev (major:minor) of size sectors.
func Table(sectors uint64, majMin string) string {
	return fmt.Sprintf("0 %d multipath 3 queue_if_no_path queue_mode bio 0 1 1 round-robin 0 1 1 %s 1", sectors, majMin)
}

// deviceOf reads dev's major:minor and size in 512-byte sectors.
func (d *DMMultipath) deviceOf(dev string) (string, uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat(dev, &st); err != nil {
		return "", 0, fmt.Errorf("%s: %w", dev, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFBLK {
		return "", 0, fmt.Errorf("%s is not a block device", dev)
	}
	mm := fmt.Sprintf("%d:%d", unix.Major(st.Rdev), unix.Minor(st.Rdev))
	raw, err := os.ReadFile(filepath.Join(d.root("/sys", d.SysRoot), "dev", "block", mm, "size"))
	if err != nil {
		return "", 0, fmt.Errorf("size of %s (%s): %w", dev, mm, err)
	}
	size, err := strconv.ParseUint(strings.TrimSpace(string(raw)), 10, 64)
	if err != nil || size == 0 {
		return "", 0, fmt.Errorf("size of %s (%s): %q is not a positive number of sectors", dev, mm, raw)
	}
	return mm, size, nil
}

// Map implements Mapper.
func (d *DMMultipath) Map(ctx context.Context, name, dev string) (string, error) {
	if err := d.check(name); err != nil {
		return "", err
	}
	defer d.locks.lock(name)()
	mm, size, err := d.deviceOf(dev)
	if err != nil {
		return "", err
	}
	want := Table(size, mm)
	cur, err := d.dmsetup(ctx, "table", name)
	switch {
	case isNoDevice(err):
		if _, err := d.dmsetup(ctx, "create", name, "--noudevsync", "--table", want); err != nil {
			return "", err
		}
		return d.path(ctx, name)
	case err != nil:
		return "", err
	}
	if err := checkTable(name, cur); err != nil {
		return "", err
	}
	if err := d.resumeIfSuspended(ctx, name); err != nil {
		return "", err
	}
	if tableMatches(cur, size, mm) {
		st, err := d.dmsetup(ctx, "status", name)
		if err != nil {
			return "", err
		}
		if PathActive(st, mm) {
			return d.path(ctx, name)
		}
	}
	if err := d.swap(ctx, name, want); err != nil {
		return "", err
	}
	return d.path(ctx, name)
}

// checkTable refuses to retarget a mapping of this name that is not one
// of ours (someone else's table under our prefix).
func checkTable(name, table string) error {
	f := strings.Fields(table)
	if len(f) < 3 || f[0] != "0" || f[2] != "multipath" {
		return fmt.Errorf("device-mapper device %s has a table this driver did not write (%q): not touching it", name, table)
	}
	return nil
}

// tableMatches: the kernel's rendering of a table (it adds features such
// as retain_attached_hw_handler) has this size, queues without a path and
// has mm as its only path.
func tableMatches(table string, sectors uint64, mm string) bool {
	f := strings.Fields(table)
	if len(f) < 3 || f[1] != strconv.FormatUint(sectors, 10) {
		return false
	}
	paths := 0
	queue, found := false, false
	for _, w := range f {
		switch {
		case w == "queue_if_no_path":
			queue = true
		case strings.Count(w, ":") == 1:
			paths++
			found = found || w == mm
		}
	}
	return queue && found && paths == 1
}

// swap loads table into name and resumes it, with the device suspended
// without flushing (queued I/O stays queued and goes to the new table).
// Once suspended, load and resume run to the end even if ctx ends (a
// gRPC deadline, the plugin stopping): a device left suspended blocks
// all its I/O.
func (d *DMMultipath) swap(ctx context.Context, name, table string) error {
	detached := func() (context.Context, context.CancelFunc) {
		return context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	}
	if _, err := d.dmsetup(ctx, "suspend", "--noflush", "--nolockfs", "--noudevsync", name); err != nil {
		rctx, cancel := detached() // the suspend may have happened before the error
		defer cancel()
		return errors.Join(err, d.resumeIfSuspended(rctx, name))
	}
	lctx, lcancel := detached()
	defer lcancel()
	_, lerr := d.dmsetup(lctx, "load", name, "--table", table)
	// resume either way (its own time budget): with the new table, or
	// (load failed) the old one
	rctx, rcancel := detached()
	defer rcancel()
	if _, err := d.dmsetup(rctx, "resume", "--noudevsync", name); err != nil {
		return errors.Join(lerr, err)
	}
	return lerr
}

// resumeIfSuspended resumes a mapping an interrupted swap left suspended.
func (d *DMMultipath) resumeIfSuspended(ctx context.Context, name string) error {
	st, err := d.dmsetup(ctx, "info", "-c", "--noheadings", "-o", "suspended", name)
	if err != nil {
		return err
	}
	if strings.TrimSpace(st) != "Suspended" {
		return nil
	}
	_, err = d.dmsetup(ctx, "resume", "--noudevsync", name)
	return err
}

// PathActive reports whether a multipath status line shows path mm as
// active ("A"); a failed path ("F") or an absent one is not.
func PathActive(status, mm string) bool {
	f := strings.Fields(status)
	for i := 0; i+1 < len(f); i++ {
		if f[i] == mm {
			return f[i+1] == "A"
		}
	}
	return false
}

func (d *DMMultipath) path(ctx context.Context, name string) (string, error) {
	out, err := d.dmsetup(ctx, "info", "-c", "--noheadings", "-o", "minor", name)
	if isNoDevice(err) {
		return "", fmt.Errorf("device-mapper device %s: %w", name, ErrNotConnected)
	}
	if err != nil {
		return "", err
	}
	minor, err := strconv.Atoi(strings.TrimSpace(out))
	if err != nil {
		return "", fmt.Errorf("dmsetup info %s: minor %q is not a number", name, out)
	}
	return filepath.Join(d.root("/dev", d.DevRoot), fmt.Sprintf("dm-%d", minor)), nil
}

// Path implements Mapper.
func (d *DMMultipath) Path(ctx context.Context, name string) (string, error) {
	if err := d.check(name); err != nil {
		return "", err
	}
	return d.path(ctx, name)
}

// FailQueued implements Mapper: fail_if_no_path (I/O with no path fails
// from now on, queued I/O included).
func (d *DMMultipath) FailQueued(ctx context.Context, name string) error {
	if err := d.check(name); err != nil {
		return err
	}
	defer d.locks.lock(name)()
	_, err := d.dmsetup(ctx, "message", name, "0", "fail_if_no_path")
	if isNoDevice(err) {
		return nil
	}
	return err
}

// Unmap implements Mapper.
func (d *DMMultipath) Unmap(ctx context.Context, name string) error {
	if err := d.check(name); err != nil {
		return err
	}
	defer d.locks.lock(name)()
	_, err := d.dmsetup(ctx, "remove", "--noudevsync", name)
	if isNoDevice(err) {
		return nil
	}
	return err
}
