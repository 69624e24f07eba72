package attachment

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
)

// Errors the Manager returns besides *ConflictError. Each message says what
// an operator can do.
var (
	// ErrUnavailable: Kubernetes or the RDS could not be read or written, so
	// the truth is unknown and nothing was changed (fail closed).
	ErrUnavailable = errors.New("unavailable")
	// ErrNoVolume: no PersistentVolume references the volume ID.
	ErrNoVolume = errors.New("no PersistentVolume for volume")
	// ErrNodeNotFound: the node asking for the volume does not exist.
	ErrNodeNotFound = errors.New("node not found")
	// ErrNoHostNQN: the node has not reported its NVMe host NQN.
	ErrNoHostNQN = errors.New("node has not reported its host NQN")
)

// Cluster is what the Manager reads from and writes to Kubernetes. Reads
// may come from an informer cache; PersistPV must reach the API server.
type Cluster interface {
	// PVForVolume returns the PV whose CSI volume handle is volumeID; an
	// error wrapping ErrNoVolume when there is none.
	PVForVolume(ctx context.Context, volumeID string) (*corev1.PersistentVolume, error)
	// Node returns the node's state and its host NQN ("" if unknown).
	Node(ctx context.Context, name string) (NodeState, string, error)
	// LiveMigration returns an unfinished VirtualMachineInstanceMigration of
	// a VMI in the claim's namespace that uses the claim, or nil.
	LiveMigration(ctx context.Context, pvcNamespace, pvcName string) (*LiveMigration, error)
	// VMINode returns the node a VMI runs on ("" if unknown or gone).
	VMINode(ctx context.Context, namespace, name string) (string, error)
	// PersistPV writes next's annotations on the PV next.PV, only if the PV
	// still records prev's holders (prev.ResourceVersion, when set, is tried
	// as a precondition first; otherwise or on a conflict the PV is read
	// live); otherwise it fails (another writer changed it). It returns the
	// PV's new resourceVersion. A missing PV is an error wrapping ErrNoVolume.
	PersistPV(ctx context.Context, prev, next Record) (string, error)
	// LivePV reads a PV from the API server (not a cache); an error
	// wrapping ErrNoVolume when it does not exist.
	LivePV(ctx context.Context, name string) (*corev1.PersistentVolume, error)

	// For the rebuild at start-up (read from the API server):
	// ListPVs returns the driver's PVs.
	ListPVs(ctx context.Context) ([]*corev1.PersistentVolume, error)
	// AttachedNodes maps a PV name to the nodes whose VolumeAttachment of
	// this driver reports status.attached.
	AttachedNodes(ctx context.Context) (map[string][]string, error)
	// HostNQNs maps every node to its host NQN annotation.
	HostNQNs(ctx context.Context) (map[string]string, error)
}

// Fence enforces a record on the storage: only these host NQNs may connect
// to the volume's export (none: nobody may).
type Fence interface {
	Allow(ctx context.Context, volumeID string, hostNQNs []string) error
	// Value is what the storage property reads when hostNQNs may connect.
	Value(hostNQNs []string) string
	// State maps every volume of the driver to its current property; nil
	// when the fence is off.
	State(ctx context.Context) (map[string]string, error)
}

// Events reports what happened, on the claim (and pod) an operator looks at.
type Events interface {
	Conflict(rec Record, requester string, err *ConflictError)
	StaleCleared(rec Record, cleared ClearedHolder, newHolder string)
	MigrationStarted(rec Record, m Migration)
	MigrationEnded(rec Record, end MigrationEnd)
	Drift(d Drift)
}

// Clock is the time source (injected for tests).
type Clock interface{ Now() time.Time }

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

// Manager applies publish and unpublish decisions: it serialises each
// volume, decides with the pure rules, then moves the PV annotation, the
// storage fence and memory in the order that never lets the fence admit a
// node the record does not name (see grant and revoke), undoing earlier
// steps when a later one fails. Success is returned only once the PV
// annotation is written.
type Manager struct {
	Store   *Store
	Cluster Cluster
	Fence   Fence
	Events  Events
	Metrics *Metrics
	Clock   Clock
	Log     logr.Logger
	// RequireHostNQN refuses a node that has not reported its host NQN (set
	// when the storage fence is on).
	RequireHostNQN bool
}

func (m *Manager) now() time.Time {
	if m.Clock == nil {
		return realClock{}.Now()
	}
	return m.Clock.Now()
}

func unavailable(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrUnavailable}, args...)...)
}

// Publish makes node a holder of the volume, or returns *ConflictError,
// ErrNoVolume, ErrNodeNotFound, ErrNoHostNQN or ErrUnavailable. It returns
// the record in force afterwards.
func (m *Manager) Publish(ctx context.Context, volumeID, node string, mode Mode, migrationTimeout time.Duration) (Record, error) {
	start := m.now()
	rec, err := m.publish(ctx, volumeID, node, mode, migrationTimeout)
	m.Metrics.observe("publish", start, m.now(), err)
	return rec, err
}

func (m *Manager) publish(ctx context.Context, volumeID, node string, mode Mode, migrationTimeout time.Duration) (Record, error) {
	unlock, err := m.Store.Lock(ctx, volumeID)
	if err != nil {
		return Record{}, unavailable("%v", err)
	}
	defer unlock()
	cur, _, _ := m.Store.Get(ctx, volumeID)
	pv, err := m.Cluster.PVForVolume(ctx, volumeID)
	if err != nil {
		if errors.Is(err, ErrNoVolume) {
			return cur, err
		}
		return cur, unavailable("reading the PersistentVolume of volume %s: %v", volumeID, err)
	}
	cur.PV, cur.PVC = pv.Name, claimOf(pv)
	state, hostNQN, err := m.Cluster.Node(ctx, node)
	switch {
	case err != nil:
		return cur, unavailable("reading node %s: %v", node, err)
	case state == NodeDeleted:
		return cur, fmt.Errorf("%w: node %s does not exist", ErrNodeNotFound, node)
	case state == NodeOutOfService:
		return cur, fmt.Errorf("%w: node %s is tainted node.kubernetes.io/out-of-service and cannot take volumes", ErrNodeNotFound, node)
	case hostNQN == "" && m.RequireHostNQN:
		return cur, fmt.Errorf("%w: node %s has no rds-fence.csi.dev/host-nqn annotation; is the rds-fence node plugin running there?", ErrNoHostNQN, node)
	}
	req := PublishRequest{VolumeID: volumeID, Node: node, HostNQN: hostNQN, Mode: mode, MigrationTimeout: migrationTimeout, Now: m.now()}
	facts := Facts{Nodes: map[string]NodeState{}}
	for _, h := range cur.Holders {
		if h.Node == node {
			continue
		}
		st, _, err := m.Cluster.Node(ctx, h.Node)
		if err != nil {
			return cur, unavailable("reading holding node %s of volume %s: %v", h.Node, volumeID, err)
		}
		facts.Nodes[h.Node] = st
	}
	if NeedsMigrationLookup(cur, req) && cur.PVC != "" {
		ns, name := splitClaim(cur.PVC)
		if facts.Migration, err = m.Cluster.LiveMigration(ctx, ns, name); err != nil {
			return cur, unavailable("looking up KubeVirt migrations for PVC %s: %v", cur.PVC, err)
		}
	}
	d, err := DecidePublish(cur, req, facts)
	if err != nil {
		var ce *ConflictError
		if errors.As(err, &ce) {
			m.Metrics.conflict()
			m.Events.Conflict(cur, node, ce)
		}
		return cur, err
	}
	if d.Noop {
		return cur, nil
	}
	if err := m.grant(ctx, cur, d.Next); err != nil {
		return cur, err
	}
	for _, c := range d.Cleared {
		m.Metrics.staleCleared()
		m.Events.StaleCleared(d.Next, c, node)
		m.Log.Info("stale attachment cleared", "volumeID", volumeID, "pvc", cur.PVC, "staleNode", c.Node, "nodeState", c.State.String(), "newNode", node)
	}
	if d.MigrationStarted != nil {
		m.Events.MigrationStarted(d.Next, *d.MigrationStarted)
	}
	m.Log.Info("volume published", "volumeID", volumeID, "pvc", cur.PVC, "node", node, "holders", d.Next.Nodes())
	return d.Next, nil
}

// Unpublish releases node's hold. A volume the node does not hold, a node
// that no longer exists, and a volume whose PV is gone all succeed.
func (m *Manager) Unpublish(ctx context.Context, volumeID, node string) error {
	start := m.now()
	err := m.unpublish(ctx, volumeID, node)
	m.Metrics.observe("unpublish", start, m.now(), err)
	return err
}

func (m *Manager) unpublish(ctx context.Context, volumeID, node string) error {
	unlock, err := m.Store.Lock(ctx, volumeID)
	if err != nil {
		return unavailable("%v", err)
	}
	defer unlock()
	cur, _, _ := m.Store.Get(ctx, volumeID)
	d := DecideUnpublish(cur, node)
	if d.Noop {
		return nil
	}
	if err := m.revoke(ctx, cur, d.Next); err != nil {
		return err
	}
	if d.MigrationEnded != nil {
		m.Events.MigrationEnded(d.Next, *d.MigrationEnded)
	}
	m.Log.Info("volume unpublished", "volumeID", volumeID, "pvc", cur.PVC, "node", node, "holders", d.Next.Nodes())
	return nil
}

// rollbackTimeout bounds one undo step. Undo runs even when the request's
// context is done: it is what keeps the fence from admitting a node the
// record does not name.
const rollbackTimeout = 10 * time.Second

func undoContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), rollbackTimeout)
}

// grant widens or moves the hold (publish): the PV first, then the fence,
// then memory. The fence never admits a node before the PV records it; a
// failed fence write un-writes the PV and restores the previous fence (the
// failed write may have taken effect). Memory, which ListVolumes and
// DeleteVolume read, changes only once both are done.
func (m *Manager) grant(ctx context.Context, prev, next Record) error {
	rv, err := m.persist(ctx, prev, next)
	if err != nil {
		return unavailable("recording the attachment on PV %s: %v", next.PV, err)
	}
	next.ResourceVersion = rv
	if err := m.Fence.Allow(ctx, next.VolumeID, next.HostNQNs()); err != nil {
		uctx, cancel := undoContext(ctx)
		defer cancel()
		if ferr := m.Fence.Allow(uctx, prev.VolumeID, prev.HostNQNs()); ferr != nil {
			m.Log.Error(ferr, "restoring the storage fence failed; the rebuild will repair it", "volumeID", prev.VolumeID)
		}
		if _, perr := m.persist(uctx, next, prev); perr != nil {
			m.Log.Error(perr, "un-recording the attachment failed; the PV names a holder the fence does not admit", "volumeID", prev.VolumeID, "pv", next.PV)
		}
		return unavailable("setting the storage fence of volume %s: %v", next.VolumeID, err)
	}
	m.Store.Put(next)
	return nil
}

// revoke narrows the hold (unpublish): the fence first, then the PV, then
// memory. A failed PV write restores the fence, since the record still
// names the node; if that restore fails too, the fence is narrower than the
// record, which is the safe direction.
func (m *Manager) revoke(ctx context.Context, prev, next Record) error {
	if err := m.Fence.Allow(ctx, next.VolumeID, next.HostNQNs()); err != nil {
		uctx, cancel := undoContext(ctx)
		defer cancel()
		if ferr := m.Fence.Allow(uctx, prev.VolumeID, prev.HostNQNs()); ferr != nil {
			m.Log.Error(ferr, "restoring the storage fence failed; the holder may have lost access until the rebuild", "volumeID", prev.VolumeID)
		}
		return unavailable("revoking the storage fence of volume %s: %v", next.VolumeID, err)
	}
	rv, err := m.persist(ctx, prev, next)
	if errors.Is(err, ErrNoVolume) && !next.Held() {
		err = nil // releasing a volume whose PV was deleted meanwhile
	}
	next.ResourceVersion = rv
	if err != nil {
		uctx, cancel := undoContext(ctx)
		defer cancel()
		if ferr := m.Fence.Allow(uctx, prev.VolumeID, prev.HostNQNs()); ferr != nil {
			m.Log.Error(ferr, "restoring the storage fence failed; the holder may have lost access until the rebuild", "volumeID", prev.VolumeID)
		}
		return unavailable("recording the release on PV %s: %v", next.PV, err)
	}
	m.Store.Put(next)
	return nil
}

// persist writes next on the PV, provided the PV still records prev (a
// second writer, such as another controller instance, makes it fail).
func (m *Manager) persist(ctx context.Context, prev, next Record) (string, error) {
	if next.PV == "" {
		return "", nil // the PV is gone (unpublish after delete): nothing to persist
	}
	return m.Cluster.PersistPV(ctx, prev, next)
}

func splitClaim(pvc string) (string, string) {
	for i := range len(pvc) {
		if pvc[i] == '/' {
			return pvc[:i], pvc[i+1:]
		}
	}
	return "", pvc
}

// Holders returns the nodes holding the volume (from memory), nil if none.
func (m *Manager) Holders(volumeID string) []string {
	rec, ok, _ := m.Store.Get(context.Background(), volumeID)
	if !ok {
		return nil
	}
	return rec.Nodes()
}

// ErrHeld: the volume is held (or quarantined) and cannot be deleted.
var ErrHeld = errors.New("volume is held")

// WhileReleased runs fn under the volume's lock if nobody holds the volume
// and it is not quarantined, so no publish can slip in between the check
// and fn (DeleteVolume uses it). Otherwise it returns an error wrapping
// ErrHeld that names the holders.
func (m *Manager) WhileReleased(ctx context.Context, volumeID string, fn func() error) error {
	unlock, err := m.Store.Lock(ctx, volumeID)
	if err != nil {
		return unavailable("%v", err)
	}
	defer unlock()
	rec, _, _ := m.Store.Get(ctx, volumeID)
	switch {
	case rec.Quarantined != "":
		return fmt.Errorf("%w: volume %s is quarantined (%s)", ErrHeld, volumeID, rec.Quarantined)
	case len(rec.Holders) > 0:
		return fmt.Errorf("%w: volume %s is still attached to node(s) %v; it is deleted after it is unpublished", ErrHeld, volumeID, rec.Nodes())
	}
	if err := fn(); err != nil {
		return err
	}
	m.Store.Forget(volumeID)
	return nil
}
