package reconciler

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/rds-fence/rds-fence/rds"
)

// Event reasons of the orphan scan (on the CSIDriver object: an orphan
// has no PV or claim to report on).
const (
	ReasonOrphanedDisk        = "OrphanedDisk"
	ReasonOrphanedDiskDeleted = "OrphanedDiskDeleted"
)

// OrphanStorage is the RDS side of the scan (rds.Client).
type OrphanStorage interface {
	ListDisks(ctx context.Context, prefix string) ([]rds.Disk, error)
	DeleteDisk(ctx context.Context, slot, filePath string) error
}

// Releaser runs fn only while nobody holds the volume, under its lock
// (attachment.Manager.WhileReleased): no publish can slip in.
type Releaser interface {
	WhileReleased(ctx context.Context, volumeID string, fn func() error) error
}

// OrphanScanner reports the RDS disks of this driver (slot prefix and
// volume-ID shape, Owns) that no PersistentVolume references, and deletes
// them only when Delete is set and the disk has been seen orphaned for
// MinAge. Disks outside the driver's IDs, and backing files outside
// BasePath, are never touched. First-seen times are kept in memory: after
// a restart (or a change of leader) the age starts again, which only ever
// delays a deletion.
type OrphanScanner struct {
	Storage OrphanStorage
	Volumes Releaser
	// Idle, when set, runs a deletion only while no CSI operation (a
	// CreateVolume retry, say) is in progress on the volume
	// (csi.Driver.WhileIdle).
	Idle   func(volumeID string, fn func() error) error
	Reader client.Reader // PVs (the cache)
	// Live reads from the API server: before a deletion, that no PV
	// references the disk; the CSIDriver for events.
	Live     client.Reader
	Driver   string
	Prefix   string
	BasePath string
	Owns     func(volumeID string) bool
	Delete   bool
	MinAge   time.Duration
	Recorder events.EventRecorder
	Now      func() time.Time
	Log      logr.Logger

	orphans prometheus.Gauge
	deleted prometheus.Counter

	mu        sync.Mutex
	firstSeen map[string]time.Time
}

// RegisterMetrics adds rds_fence_orphaned_disks (gauge) and
// rds_fence_orphaned_disks_deleted_total to reg.
func (s *OrphanScanner) RegisterMetrics(reg prometheus.Registerer) error {
	s.orphans = prometheus.NewGauge(prometheus.GaugeOpts{Name: "rds_fence_orphaned_disks",
		Help: "RDS disks of this driver that no PersistentVolume references (at the last scan)."})
	s.deleted = prometheus.NewCounter(prometheus.CounterOpts{Name: "rds_fence_orphaned_disks_deleted_total",
		Help: "Orphaned RDS disks deleted (only with deletion enabled, after the minimum age)."})
	return errors.Join(reg.Register(s.orphans), reg.Register(s.deleted))
}

func (s *OrphanScanner) now() time.Time {
	if s.Now == nil {
		return time.Now()
	}
	return s.Now()
}

// Scan lists the driver's disks and PVs once and reports (and, when
// enabled and old enough, deletes) the orphans. It returns the orphans
// seen.
func (s *OrphanScanner) Scan(ctx context.Context) ([]string, error) {
	disks, err := s.Storage.ListDisks(ctx, s.Prefix)
	if err != nil {
		return nil, fmt.Errorf("listing the RDS disks: %w", err)
	}
	var pvs corev1.PersistentVolumeList
	if err := s.Reader.List(ctx, &pvs); err != nil {
		return nil, fmt.Errorf("listing PersistentVolumes: %w", err)
	}
	used := usedHandles(pvs.Items)
	now := s.now()
	var orphans []string
	var errs []error
	s.mu.Lock()
	if s.firstSeen == nil {
		s.firstSeen = map[string]time.Time{}
	}
	seen := map[string]bool{}
	for _, d := range disks {
		if !s.Owns(d.Slot) || used[d.Slot] {
			continue
		}
		seen[d.Slot] = true
		orphans = append(orphans, d.Slot)
		first, known := s.firstSeen[d.Slot]
		if !known {
			first = now
			s.firstSeen[d.Slot] = now
			s.event(ctx, ReasonOrphanedDisk, "RDS disk %s (file %s) belongs to this driver but no PersistentVolume references it; %s",
				d.Slot, d.FilePath, s.policy())
			s.Log.Info("orphaned disk", "slot", d.Slot, "file", d.FilePath, "delete", s.Delete)
		}
		if s.Delete && now.Sub(first) >= s.MinAge {
			if err := s.remove(ctx, d); err != nil {
				errs = append(errs, err)
			} else {
				delete(s.firstSeen, d.Slot)
			}
		}
	}
	for slot := range s.firstSeen {
		if !seen[slot] {
			delete(s.firstSeen, slot) // adopted by a PV, or gone
		}
	}
	s.mu.Unlock()
	if s.orphans != nil {
		s.orphans.Set(float64(len(orphans)))
	}
	return orphans, errors.Join(errs...)
}

func (s *OrphanScanner) policy() string {
	if !s.Delete {
		return "report only (deletion is off)"
	}
	return fmt.Sprintf("it will be deleted once it has been orphaned for %s", s.MinAge)
}

// remove deletes an orphan under its volume lock, only while nobody holds
// it, and only a backing file under BasePath.
func (s *OrphanScanner) remove(ctx context.Context, d rds.Disk) error {
	if s.BasePath == "" || !strings.HasPrefix(d.FilePath, strings.TrimSuffix(s.BasePath, "/")+"/") {
		return fmt.Errorf("orphaned disk %s: its file %q is outside %q; not deleting it", d.Slot, d.FilePath, s.BasePath)
	}
	idle := s.Idle
	if idle == nil {
		idle = func(_ string, fn func() error) error { return fn() }
	}
	err := s.Volumes.WhileReleased(ctx, d.Slot, func() error {
		return idle(d.Slot, func() error {
			// The cache may be behind a PV created a moment ago: ask the API
			// server, under the volume's lock.
			var pvs corev1.PersistentVolumeList
			if err := s.Live.List(ctx, &pvs); err != nil {
				return fmt.Errorf("listing PersistentVolumes: %w", err)
			}
			if usedHandles(pvs.Items)[d.Slot] {
				return fmt.Errorf("a PersistentVolume references it now; not deleting it")
			}
			return s.Storage.DeleteDisk(ctx, d.Slot, d.FilePath)
		})
	})
	if err != nil {
		return fmt.Errorf("deleting orphaned disk %s: %w", d.Slot, err)
	}
	if s.deleted != nil {
		s.deleted.Inc()
	}
	s.event(ctx, ReasonOrphanedDiskDeleted, "orphaned RDS disk %s and its file %s were deleted (orphaned for at least %s)", d.Slot, d.FilePath, s.MinAge)
	s.Log.Info("orphaned disk deleted", "slot", d.Slot, "file", d.FilePath)
	return nil
}

// usedHandles are the volume handles of every CSI PV, of any driver: a
// disk another deployment with the same prefix uses is not an orphan.
func usedHandles(pvs []corev1.PersistentVolume) map[string]bool {
	used := map[string]bool{}
	for _, pv := range pvs {
		if pv.Spec.CSI != nil {
			used[pv.Spec.CSI.VolumeHandle] = true
		}
	}
	return used
}

// event records on the driver's CSIDriver object, when it exists.
func (s *OrphanScanner) event(ctx context.Context, reason, format string, args ...any) {
	if s.Recorder == nil {
		return
	}
	var drv storagev1.CSIDriver
	if err := s.Live.Get(ctx, client.ObjectKey{Name: s.Driver}, &drv); err != nil {
		s.Log.Info("no event: CSIDriver not readable", "driver", s.Driver, "error", err.Error())
		return
	}
	s.Recorder.Eventf(&drv, nil, corev1.EventTypeWarning, reason, "Scan", format, args...)
}

// Run scans every interval until ctx ends; a failed scan is logged and
// retried at the next.
func (s *OrphanScanner) Run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if _, err := s.Scan(ctx); err != nil {
			s.Log.Error(err, "orphan scan")
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
