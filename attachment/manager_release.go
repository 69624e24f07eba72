package attachment

import (
	"context"
	"errors"
	"fmt"
	"sync"
)

// ErrNodeLive: a node that exists and is not out of service is never
// released, whatever else is true of it (NotReady included).
var ErrNodeLive = errors.New("node is live")

// ReleaseNode clears every attachment node holds, once the node's loss is
// confirmed: the Cluster's Node answer (live-confirmed for deleted and
// out-of-service) must say deleted or out of service, else ErrNodeLive.
// Each volume is released under its lock in revoke's order: the storage
// fence first, then the PV record, then memory, with a
// StaleAttachmentCleared event on the claim. Up to workers volumes are
// released at once. It returns the records after release; the error joins
// every volume that could not be released (retry: releasing is
// idempotent). Quarantined volumes are left for an operator.
func (m *Manager) ReleaseNode(ctx context.Context, node string, workers int) ([]Record, error) {
	held := m.Store.HeldBy(node)
	if len(held) == 0 {
		return nil, nil
	}
	state, _, err := m.Cluster.Node(ctx, node)
	switch {
	case err != nil:
		return nil, unavailable("reading node %s: %v", node, err)
	case state == NodeLive:
		return nil, fmt.Errorf("%w: node %s exists and is not tainted node.kubernetes.io/out-of-service; its %d volume(s) stay attached", ErrNodeLive, node, len(held))
	}
	if workers < 1 {
		workers = 1
	}
	var (
		mu       sync.Mutex
		released []Record
		errs     []error
		wg       sync.WaitGroup
		sem      = make(chan struct{}, workers)
	)
	for _, rec := range held {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			next, done, err := m.releaseOne(ctx, rec.VolumeID, node, state)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
			} else if done {
				released = append(released, next)
			}
		})
	}
	wg.Wait()
	return released, errors.Join(errs...)
}

func (m *Manager) releaseOne(ctx context.Context, volumeID, node string, state NodeState) (Record, bool, error) {
	start := m.now()
	unlock, err := m.Store.Lock(ctx, volumeID)
	if err != nil {
		return Record{}, false, unavailable("%v", err)
	}
	defer unlock()
	cur, _, _ := m.Store.Get(ctx, volumeID)
	d := DecideUnpublish(cur, node)
	if d.Noop {
		return cur, false, nil // released meanwhile, or quarantined
	}
	var holder Holder
	for _, h := range cur.Holders {
		if h.Node == node {
			holder = h
		}
	}
	err = m.revoke(ctx, cur, d.Next)
	m.Metrics.observe("release", start, m.now(), err)
	if err != nil {
		return cur, false, err
	}
	m.Metrics.staleCleared()
	m.Events.StaleCleared(d.Next, ClearedHolder{Holder: holder, State: state}, "")
	if d.MigrationEnded != nil {
		m.Events.MigrationEnded(d.Next, *d.MigrationEnded)
	}
	m.Log.Info("stale attachment cleared", "volumeID", volumeID, "pvc", cur.PVC, "staleNode", node, "nodeState", state.String(), "holders", d.Next.Nodes())
	return d.Next, true, nil
}

// HeldBy returns the records of the volumes node holds (from memory).
func (m *Manager) HeldBy(node string) []Record { return m.Store.HeldBy(node) }

// HolderNodes returns every node that holds a volume (from memory).
func (m *Manager) HolderNodes() []string {
	seen := map[string]bool{}
	var out []string
	for _, r := range m.Store.List() {
		for _, n := range r.Nodes() {
			if !seen[n] {
				seen[n] = true
				out = append(out, n)
			}
		}
	}
	return out
}
