package rdssim

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"
)

// Options configure a Simulator. Zero values take the defaults named.
type Options struct {
	// Root is the host directory that stands for the RDS file system; a disk
	// with file-path=/storage-pool/x.img is the sparse file Root/storage-pool/x.img.
	Root string
	// Pool is the mount point of the storage pool (default "storage-pool").
	Pool string
	// PoolSize is the pool's size in bytes (default 1 TiB); free space is
	// PoolSize minus the sizes of all backing files.
	PoolSize int64
	// SlotMaxLen is the longest slot name accepted (default 32, as one RDS
	// report says; 0 keeps the default, negative means unlimited).
	SlotMaxLen int
	// Width is the output wrap width (default DefaultWidth).
	Width int
}

// disk is one simulated /disk entry of type=file.
type disk struct {
	slot, filePath, nqn, allowHost string
	port                           int
	export                         bool
	size                           int64
	created                        time.Time
}

// Simulator is the state of a simulated RDS: disks, backing files, the
// storage-side fence property and the fault knobs. The SSH front end is in
// server.go; tests may also call the exported methods directly.
type Simulator struct {
	opts Options

	mu       sync.Mutex
	disks    []*disk // in creation order, printed after the two pool entries
	commands []string
	faults   faults
}

// New returns a simulator over opts.Root (created if missing).
func New(opts Options) (*Simulator, error) {
	if opts.Root == "" {
		return nil, errors.New("rdssim: Root is required")
	}
	if opts.Pool == "" {
		opts.Pool = "storage-pool"
	}
	if opts.PoolSize <= 0 {
		opts.PoolSize = 1 << 40
	}
	if opts.SlotMaxLen == 0 {
		opts.SlotMaxLen = 32
	}
	if opts.Width <= 0 {
		opts.Width = DefaultWidth
	}
	if err := os.MkdirAll(filepath.Join(opts.Root, opts.Pool), 0o755); err != nil {
		return nil, fmt.Errorf("rdssim: %w", err)
	}
	return &Simulator{opts: opts}, nil
}

// Pool is the pool mount point name.
func (s *Simulator) Pool() string { return s.opts.Pool }

// hostPath maps an RDS path (with or without a leading slash) to the host.
func (s *Simulator) hostPath(rdsPath string) (string, error) {
	clean := filepath.Clean("/" + rdsPath)
	if clean == "/" || strings.Contains(rdsPath, "..") {
		return "", fmt.Errorf("invalid value for argument file-path")
	}
	return filepath.Join(s.opts.Root, clean), nil
}

func (s *Simulator) find(slot string) (int, *disk) {
	for i, d := range s.disks {
		if d.slot == slot {
			return i, d
		}
	}
	return -1, nil
}

func (s *Simulator) used() int64 {
	var n int64
	for _, d := range s.disks {
		n += d.size
	}
	return n
}

// Commands returns every statement the simulator executed, in order.
func (s *Simulator) Commands() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.commands...)
}

// DiskInfo is the simulator's view of one disk, for tests and the local
// environment's loop-device data path.
type DiskInfo struct {
	Slot, FilePath, NQN, AllowedHost string
	Size                             int64
	HostPath                         string // backing file on this host
}

// Disk returns the disk with this slot.
func (s *Simulator) Disk(slot string) (DiskInfo, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, d := s.find(slot)
	if d == nil {
		return DiskInfo{}, false
	}
	hp, _ := s.hostPath(d.filePath)
	return DiskInfo{Slot: d.slot, FilePath: d.filePath, NQN: d.nqn, AllowedHost: d.allowHost, Size: d.size, HostPath: hp}, true
}

// Disks returns every disk's slot, sorted.
func (s *Simulator) Disks() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, 0, len(s.disks))
	for _, d := range s.disks {
		out = append(out, d.slot)
	}
	sort.Strings(out)
	return out
}

// ErrConnectRefused is returned by Connect when the storage-side fence
// refuses the host.
var ErrConnectRefused = errors.New("rdssim: host not allowed to connect")

// Connect simulates an NVMe/TCP connect from hostNQN to the disk's export
// and returns the backing file's host path when the fence allows it: the
// disk must exist, be exported, and nvme-tcp-server-allow-host-name must be
// empty (any host) or equal to hostNQN.
func (s *Simulator) Connect(slot, hostNQN string) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, d := s.find(slot)
	if d == nil {
		return "", fmt.Errorf("%w: no disk with slot %q", ErrConnectRefused, slot)
	}
	if !d.export {
		return "", fmt.Errorf("%w: disk %q is not exported", ErrConnectRefused, slot)
	}
	if d.allowHost != "" && d.allowHost != hostNQN {
		return "", fmt.Errorf("%w: disk %q allows host %q, not %q", ErrConnectRefused, slot, d.allowHost, hostNQN)
	}
	return s.hostPath(d.filePath)
}
