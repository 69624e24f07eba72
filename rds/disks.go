package rds

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Disk is the part of a RouterOS /disk entry this project uses.
type Disk struct {
	Slot     string
	Type     string // "file" for volumes
	FilePath string // backing file, absolute
	// Size is the disk's size in bytes from `size=`; when RouterOS does not
	// print it, the (rounded) `file-size=` value is used instead.
	Size int64
	// NVMe/TCP export.
	Exported bool
	Port     int
	NQN      string
	// AllowedHost is `nvme-tcp-server-allow-host-name`: the host NQN allowed
	// to connect ("" means any host).
	AllowedHost string
	Disabled    bool
}

// Capacity of the storage pool.
type Capacity struct {
	Total, Free int64
}

// CreateOptions describe a new file-backed, NVMe/TCP-exported disk.
type CreateOptions struct {
	Slot      string
	FilePath  string
	SizeBytes int64 // multiple of 1 MiB
	NQN       string
	Port      int
	// AllowedHost, when set, is written as nvme-tcp-server-allow-host-name
	// at creation, so the disk is never exported to every host.
	AllowedHost string
	// CopyFrom, when set, is the slot whose content the new disk copies
	// (clone); SizeBytes is then the new disk's size.
	CopyFrom string
}

func (o CreateOptions) validate() error {
	if err := ValidateSlot(o.Slot); err != nil {
		return err
	}
	if err := ValidatePath(o.FilePath); err != nil {
		return err
	}
	if err := ValidateNQN(o.NQN); err != nil {
		return err
	}
	if o.Port <= 0 || o.Port > 65535 {
		return invalidf("port %d out of range", o.Port)
	}
	if o.AllowedHost != "" {
		if err := ValidateNQN(o.AllowedHost); err != nil {
			return err
		}
	}
	if o.CopyFrom != "" {
		if err := ValidateSlot(o.CopyFrom); err != nil {
			return err
		}
	}
	_, err := FormatSize(o.SizeBytes)
	return err
}

// CreateDisk creates the disk and its backing file in one command
// (`/disk add type=file ...`). An existing slot yields ErrAlreadyExists; the
// caller decides whether the existing disk is compatible.
func (c *Client) CreateDisk(ctx context.Context, o CreateOptions) error {
	if err := o.validate(); err != nil {
		return withCommand(err, "/disk add")
	}
	size, _ := FormatSize(o.SizeBytes)
	cmd := newCommand("/disk add").setRaw("type", "file")
	if o.CopyFrom != "" {
		cmd.setRaw("copy-from", findSlot(o.CopyFrom))
	}
	cmd.set("file-path", o.FilePath).setRaw("file-size", size).set("slot", o.Slot).
		setRaw("nvme-tcp-export", "yes").setRaw("nvme-tcp-server-port", strconv.Itoa(o.Port)).
		set("nvme-tcp-server-nqn", o.NQN)
	if o.AllowedHost != "" {
		cmd.set("nvme-tcp-server-allow-host-name", o.AllowedHost)
	}
	_, err := c.run(ctx, cmd)
	return err
}

// ResizeDisk sets the backing file size (grow only is the caller's rule).
func (c *Client) ResizeDisk(ctx context.Context, slot string, sizeBytes int64) error {
	if err := ValidateSlot(slot); err != nil {
		return withCommand(err, "/disk set")
	}
	size, err := FormatSize(sizeBytes)
	if err != nil {
		return withCommand(err, "/disk set")
	}
	_, err = c.run(ctx, newCommand("/disk set").arg(findSlot(slot)).setRaw("file-size", size))
	return err
}

// SetAllowedHost sets nvme-tcp-server-allow-host-name on the disk: the one
// host NQN allowed to connect. An empty hostNQN allows every host; callers
// that fence must never pass "" (see the fencing package).
func (c *Client) SetAllowedHost(ctx context.Context, slot, hostNQN string) error {
	if err := ValidateSlot(slot); err != nil {
		return withCommand(err, "/disk set")
	}
	if hostNQN != "" {
		if err := ValidateNQN(hostNQN); err != nil {
			return withCommand(err, "/disk set")
		}
	}
	_, err := c.run(ctx, newCommand("/disk set").arg(findSlot(slot)).set("nvme-tcp-server-allow-host-name", hostNQN))
	return err
}

// DeleteDisk removes the disk entry and then its backing file (RouterOS'
// `/disk remove` leaves the file behind). Either already gone counts as
// success, so a retry after a partial failure completes the deletion.
func (c *Client) DeleteDisk(ctx context.Context, slot, filePath string) error {
	if err := ValidateSlot(slot); err != nil {
		return withCommand(err, "/disk remove")
	}
	if err := ValidatePath(filePath); err != nil {
		return withCommand(err, "/file remove")
	}
	if _, err := c.run(ctx, newCommand("/disk remove").arg(findSlot(slot))); err != nil && !errors.Is(err, ErrNotFound) {
		return err
	}
	// /file names have no leading slash.
	name := strings.TrimPrefix(filePath, "/")
	if _, err := c.run(ctx, newCommand("/file remove").arg("[find name="+Quote(name)+"]")); err != nil && !errors.Is(err, ErrNotFound) {
		return err
	}
	return nil
}

// GetDisk returns the disk with this slot, or an error wrapping ErrNotFound.
func (c *Client) GetDisk(ctx context.Context, slot string) (*Disk, error) {
	if err := ValidateSlot(slot); err != nil {
		return nil, withCommand(err, "/disk print")
	}
	disks, err := c.printDisks(ctx, "slot="+Quote(slot))
	if err != nil {
		return nil, err
	}
	for i := range disks {
		if disks[i].Slot == slot {
			return &disks[i], nil
		}
	}
	return nil, &CommandError{Kind: ErrNotFound, Command: "/disk print", Output: fmt.Sprintf("no disk with slot %q", slot)}
}

// ListDisks returns every disk whose slot starts with prefix, in RouterOS
// order.
func (c *Client) ListDisks(ctx context.Context, prefix string) ([]Disk, error) {
	if prefix != "" && !slotPattern.MatchString(prefix) {
		return nil, withCommand(invalidf("slot prefix %q must be made of [a-z0-9-]", prefix), "/disk print")
	}
	disks, err := c.printDisks(ctx, "slot~"+Quote("^"+prefix))
	if err != nil {
		return nil, err
	}
	out := disks[:0]
	for _, d := range disks { // the regexp ran on the RDS; check again here
		if strings.HasPrefix(d.Slot, prefix) {
			out = append(out, d)
		}
	}
	return out, nil
}

// Capacity returns size and free space of the pool mounted at pool.
func (c *Client) Capacity(ctx context.Context, pool string) (Capacity, error) {
	if err := ValidatePool(pool); err != nil {
		return Capacity{}, withCommand(err, "/disk print")
	}
	recs, err := c.print(ctx, "/disk print", "mount-point="+Quote(pool))
	if err != nil {
		return Capacity{}, err
	}
	for _, r := range recs {
		if mp, _ := r.Get("mount-point"); mp != pool {
			continue
		}
		total, err1 := sizeProp(r, "size")
		free, err2 := sizeProp(r, "free")
		if err := errors.Join(err1, err2); err != nil {
			return Capacity{}, withCommand(err, "/disk print")
		}
		return Capacity{Total: total, Free: free}, nil
	}
	return Capacity{}, &CommandError{Kind: ErrNotFound, Command: "/disk print", Output: fmt.Sprintf("no disk mounted at %q", pool)}
}

// Ping runs a trivial command to prove the connection and login work.
func (c *Client) Ping(ctx context.Context) error {
	_, err := c.run(ctx, newCommand("/system identity print"))
	return err
}

func (c *Client) printDisks(ctx context.Context, where string) ([]Disk, error) {
	recs, err := c.print(ctx, "/disk print", where)
	if err != nil {
		return nil, err
	}
	disks := make([]Disk, 0, len(recs))
	for _, r := range recs {
		d, err := diskFromRecord(r)
		if err != nil {
			return nil, withCommand(err, "/disk print")
		}
		disks = append(disks, d)
	}
	return disks, nil
}

func (c *Client) print(ctx context.Context, verb, where string) ([]Record, error) {
	out, err := c.run(ctx, newCommand(verb).arg("detail").arg("where").arg(where))
	if err != nil {
		return nil, err
	}
	recs, err := ParseDetail(out)
	if err != nil {
		return nil, withCommand(err, verb)
	}
	return recs, nil
}

func diskFromRecord(r Record) (Disk, error) {
	d := Disk{Disabled: strings.Contains(r.Flags, "X")}
	d.Slot, _ = r.Get("slot")
	d.Type, _ = r.Get("type")
	d.FilePath, _ = r.Get("file-path")
	d.NQN, _ = r.Get("nvme-tcp-server-nqn")
	d.AllowedHost, _ = r.Get("nvme-tcp-server-allow-host-name")
	exp, _ := r.Get("nvme-tcp-export")
	d.Exported = exp == "yes"
	if p, ok := r.Get("nvme-tcp-server-port"); ok && p != "" {
		port, err := strconv.Atoi(p)
		if err != nil {
			return d, &CommandError{Kind: ErrUnexpectedOutput, Output: fmt.Sprintf("disk %q: nvme-tcp-server-port=%q", d.Slot, p)}
		}
		d.Port = port
	}
	if _, ok := r.Get("size"); ok {
		n, err := sizeProp(r, "size")
		if err != nil {
			return d, err
		}
		d.Size = n
	} else if _, ok := r.Get("file-size"); ok {
		n, err := sizeProp(r, "file-size")
		if err != nil {
			return d, err
		}
		d.Size = n
	}
	if d.Slot == "" {
		return d, &CommandError{Kind: ErrUnexpectedOutput, Output: fmt.Sprintf("disk entry %d has no slot", r.Index)}
	}
	return d, nil
}

func sizeProp(r Record, key string) (int64, error) {
	v, ok := r.Get(key)
	if !ok {
		return 0, &CommandError{Kind: ErrUnexpectedOutput, Output: fmt.Sprintf("entry %d has no %s=", r.Index, key)}
	}
	n, err := ParseSize(v)
	if err != nil {
		return 0, &CommandError{Kind: ErrUnexpectedOutput, Output: fmt.Sprintf("entry %d: %s=%q: %v", r.Index, key, v, err)}
	}
	return n, nil
}
