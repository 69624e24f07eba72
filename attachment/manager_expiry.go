package attachment

import (
	"context"
	"errors"
	"time"
)

// ExpireMigrations closes every two-node window whose migration deadline
// has passed, so an RWX block volume is never left open to two nodes (and,
// with the hostnqn fence, to any host) for longer than the StorageClass
// allows. The holder kept is the node the VMI runs on when that is one of
// the two, else the migration source; the other is released (fence
// narrowed, PV rewritten) with a MigrationCompleted or MigrationFailed
// event. Errors are collected; the next call retries.
func (m *Manager) ExpireMigrations(ctx context.Context) error {
	var errs []error
	for _, r := range m.Store.List() {
		if r.Migration == nil || r.Migration.Deadline.IsZero() || m.now().Before(r.Migration.Deadline) {
			continue
		}
		if err := m.expire(ctx, r.VolumeID); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (m *Manager) expire(ctx context.Context, volumeID string) error {
	unlock, err := m.Store.Lock(ctx, volumeID)
	if err != nil {
		return unavailable("%v", err)
	}
	defer unlock()
	cur, _, _ := m.Store.Get(ctx, volumeID)
	mig := cur.Migration
	if mig == nil || len(cur.Holders) < 2 || m.now().Before(mig.Deadline) {
		return nil // ended meanwhile
	}
	keep := mig.Source
	if node, err := m.Cluster.VMINode(ctx, mig.Namespace, mig.VMI); err == nil && cur.HeldBy(node) {
		keep = node
	}
	drop := mig.Target
	if keep == mig.Target {
		drop = mig.Source
	}
	d := DecideUnpublish(cur, drop)
	if err := m.revoke(ctx, cur, d.Next); err != nil {
		return err
	}
	if d.MigrationEnded != nil {
		m.Events.MigrationEnded(d.Next, *d.MigrationEnded)
	}
	m.Log.Info("migration window expired; released the second holder", "volumeID", volumeID, "pvc", cur.PVC,
		"migration", mig.Namespace+"/"+mig.Name, "kept", keep, "released", drop, "deadline", mig.Deadline.Format(time.RFC3339))
	return nil
}

// RunMigrationExpiry calls ExpireMigrations every interval until ctx ends.
func (m *Manager) RunMigrationExpiry(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := m.ExpireMigrations(ctx); err != nil {
				m.Log.Error(err, "closing expired migration windows failed; retrying")
			}
		}
	}
}
