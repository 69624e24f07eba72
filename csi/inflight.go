package csi

import (
	"errors"
	"fmt"
	"sync"
)

// inFlight tracks the volumes (by ID or name) that have an operation in
// progress, so that a second concurrent operation on the same volume is
// refused with Aborted instead of racing. Entries are removed when the
// operation ends, so the set never grows beyond the current concurrency.
type inFlight struct {
	mu   sync.Mutex
	keys map[string]struct{}
}

func newInFlight() *inFlight { return &inFlight{keys: map[string]struct{}{}} }

// tryLock marks every key busy, or none if any is already busy.
func (f *inFlight) tryLock(keys ...string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, k := range keys {
		if _, busy := f.keys[k]; busy {
			return false
		}
	}
	for _, k := range keys {
		f.keys[k] = struct{}{}
	}
	return true
}

func (f *inFlight) unlock(keys ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, k := range keys {
		delete(f.keys, k)
	}
}

// errBusy: another operation on the volume is in progress.
var errBusy = errors.New("an operation on the volume is in progress")

// WhileIdle runs fn while no CSI operation (CreateVolume, DeleteVolume,
// expansion) is in progress on the volume, and keeps new ones out until
// fn returns: they fail with Aborted and are retried by their sidecar.
// When one is in progress, fn does not run and the error says so.
func (d *Driver) WhileIdle(volumeID string, fn func() error) error {
	if !d.inflight.tryLock(volumeID) {
		return fmt.Errorf("volume %s: %w", volumeID, errBusy)
	}
	defer d.inflight.unlock(volumeID)
	return fn()
}
