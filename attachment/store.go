package attachment

import (
	"context"
	"sort"
	"sync"
)

// Reader is the read side shared by the controller (live Store), the
// webhook and the reconciler (PV informer cache, see CacheReader).
type Reader interface {
	// Get returns the record of a volume; ok is false when nobody holds it.
	// An error means the truth is unknown: callers must fail closed.
	Get(ctx context.Context, volumeID string) (rec Record, ok bool, err error)
}

// Store holds the records of held volumes in memory. Reads take a short
// read lock on the map; a change to one volume is serialised by that
// volume's own lock (Lock), which the caller holds across its I/O, so no
// global lock is ever held across I/O.
type Store struct {
	locks *keyedMutex
	mu    sync.RWMutex
	recs  map[string]Record // only held volumes
	// rvs remembers the PV resourceVersion of released volumes too, so the
	// next publish can write with one round trip (see Cluster.PersistPV).
	// Forget drops an entry when its volume is deleted.
	rvs map[string]string
	// seq counts changes; gens maps a volume to the seq of its last change
	// (a drift check skips volumes changed since its snapshot).
	seq  uint64
	gens map[string]uint64
}

// NewStore returns an empty store.
func NewStore() *Store {
	return &Store{locks: newKeyedMutex(), recs: map[string]Record{}, rvs: map[string]string{}, gens: map[string]uint64{}}
}

var _ Reader = (*Store)(nil)

// Lock takes the volume's lock, waiting until it is free or ctx is done.
func (s *Store) Lock(ctx context.Context, volumeID string) (unlock func(), err error) {
	return s.locks.lock(ctx, volumeID)
}

// Get returns a copy of the volume's record.
func (s *Store) Get(_ context.Context, volumeID string) (Record, bool, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	r, ok := s.recs[volumeID]
	if !ok {
		return Record{VolumeID: volumeID, ResourceVersion: s.rvs[volumeID]}, false, nil
	}
	return r.Clone(), true, nil
}

// Put stores r, or forgets the volume when nobody holds it. Callers hold
// the volume's lock.
func (s *Store) Put(r Record) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seq++
	s.gens[r.VolumeID] = s.seq
	if r.ResourceVersion != "" {
		s.rvs[r.VolumeID] = r.ResourceVersion
	} else {
		delete(s.rvs, r.VolumeID)
	}
	if !r.Held() {
		delete(s.recs, r.VolumeID)
		return
	}
	s.recs[r.VolumeID] = r.Clone()
}

// Forget drops everything known about a deleted volume.
func (s *Store) Forget(volumeID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seq++
	delete(s.gens, volumeID)
	delete(s.recs, volumeID)
	delete(s.rvs, volumeID)
}

// List returns every held volume's record, sorted by volume ID.
func (s *Store) List() []Record {
	s.mu.RLock()
	out := make([]Record, 0, len(s.recs))
	for _, r := range s.recs {
		out = append(out, r.Clone())
	}
	s.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].VolumeID < out[j].VolumeID })
	return out
}

// HeldBy returns the records of the volumes node holds.
func (s *Store) HeldBy(node string) []Record {
	var out []Record
	for _, r := range s.List() {
		if r.HeldBy(node) {
			out = append(out, r)
		}
	}
	return out
}

// Len is the number of held volumes.
func (s *Store) Len() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.recs)
}

// Seq is the store's change counter: ChangedSince(id, Seq()) is false
// until the volume's record is next put.
func (s *Store) Seq() uint64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.seq
}

// ChangedSince reports whether the volume's record was put after seq.
func (s *Store) ChangedSince(volumeID string, seq uint64) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.gens[volumeID] > seq
}
