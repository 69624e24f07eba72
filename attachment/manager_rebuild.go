package attachment

import (
	"context"
	"errors"
	"fmt"
)

// Rebuild loads the store at start-up from PV annotations, cross-checked
// with VolumeAttachments and the storage fence (see Reconcile). Every
// disagreement is reported as an event, a metric and a log line; adopted
// holders are persisted and fences re-applied. Any read or repair error
// fails the rebuild: the controller must not serve publishes from a store
// it could not verify.
func (m *Manager) Rebuild(ctx context.Context) (Rebuilt, error) {
	start := m.now()
	pvs, err := m.Cluster.ListPVs(ctx)
	if err != nil {
		return Rebuilt{}, unavailable("listing PersistentVolumes: %v", err)
	}
	attached, err := m.Cluster.AttachedNodes(ctx)
	if err != nil {
		return Rebuilt{}, unavailable("listing VolumeAttachments: %v", err)
	}
	nqns, err := m.Cluster.HostNQNs(ctx)
	if err != nil {
		return Rebuilt{}, unavailable("listing nodes: %v", err)
	}
	fences, err := m.Fence.State(ctx)
	if err != nil {
		return Rebuilt{}, unavailable("reading the storage fences: %v", err)
	}
	res := Reconcile(Observed{PVs: pvs, Attached: attached, Fences: fences, HostNQNs: nqns}, m.Fence.Value)
	var errs []error
	for _, r := range res.Persist {
		prev := r.Clone()
		prev.Holders, prev.Migration = nil, nil // adopted holders were not recorded
		rv, err := m.Cluster.PersistPV(ctx, prev, r)
		if err != nil {
			errs = append(errs, fmt.Errorf("recording adopted holders on PV %s: %w", r.PV, err))
			continue
		}
		for i := range res.Records {
			if res.Records[i].VolumeID == r.VolumeID {
				res.Records[i].ResourceVersion = rv
			}
		}
	}
	for id, hosts := range res.FenceFixes {
		if err := m.Fence.Allow(ctx, id, hosts); err != nil {
			errs = append(errs, fmt.Errorf("repairing the fence of volume %s: %w", id, err))
		}
	}
	for _, d := range res.Drifts {
		m.Metrics.DriftSeen(d.Kind)
		m.Events.Drift(d)
		m.Log.Info("attachment drift", "kind", d.Kind, "volumeID", d.VolumeID, "pv", d.PV, "pvc", d.PVC, "detail", d.Detail)
	}
	if err := errors.Join(errs...); err != nil {
		return res, unavailable("%v", err)
	}
	for _, r := range res.Records {
		m.Store.Put(r)
	}
	if m.Metrics != nil {
		m.Metrics.Rebuild.Set(m.now().Sub(start).Seconds())
	}
	m.Log.Info("attachment store rebuilt", "pvs", len(pvs), "held", len(res.Records), "drifts", len(res.Drifts), "duration", m.now().Sub(start))
	return res, nil
}
