package nodeagent

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/go-logr/logr"
)

// Fabric is what the monitor needs of a connector: connect, the
// subsystem's device, its controllers and their states.
type Fabric interface {
	Connect(ctx context.Context, t Target) (string, error)
	Device(ctx context.Context, nqn string) (string, error)
	Controllers(nqn string) []string
	State(ctrl string) string
}

// Volume health states.
const (
	// StateLive: a controller of the subsystem is live.
	StateLive = "live"
	// StateReconnecting: controllers exist, none live: the kernel is
	// reconnecting (within ctrl_loss_tmo); I/O waits.
	StateReconnecting = "reconnecting"
	// StateLost: no controller, and connecting again failed; I/O waits
	// (queued by the stable device) and the monitor keeps trying.
	StateLost = "lost"
	// StateFenced: connecting again was refused by the storage's host-NQN
	// fence: the volume was given to another node. I/O waits and can
	// never reach the disk from here.
	StateFenced = "fenced"
)

// Health is a watched volume's state since a time, with the last error.
type Health struct {
	State string
	Since time.Time
	Err   error
}

// Monitor watches every volume this node should hold, continuously (not
// only when a volume is published): a subsystem whose controllers the
// kernel removed (ctrl_loss_tmo expired, or someone deleted them) is
// connected again as soon as the target answers; a controller in state
// "connecting" is the kernel's own retry and is left to it. Whenever a
// volume's device (re)appears — first watch, the monitor's reconnect, a
// controller live again — Keep is called with it, which points the
// volume's stable device at it (the renumbering case: the namespace comes
// back as another /dev/nvmeXnY). Health changes go to OnChange.
type Monitor struct {
	Fabric   Fabric
	Interval time.Duration
	// Keep points the volume's stable device at dev; an error is retried
	// at the next check.
	Keep func(ctx context.Context, t Target, dev string) error
	// OnChange is told every health change (events, metrics), and a
	// Health with an empty State when a volume is forgotten.
	OnChange func(t Target, h Health)
	Log      logr.Logger
	Now      func() time.Time

	mu      sync.Mutex
	watched map[string]*watch
	// checking is held while one volume is checked; Forget takes it so a
	// volume being unstaged is never reconnected behind its back.
	checking sync.Mutex
}

type watch struct {
	t        Target
	device   string // the device Keep last succeeded with
	needKeep bool
	health   Health
}

func (m *Monitor) now() time.Time {
	if m.Now != nil {
		return m.Now()
	}
	return time.Now()
}

// Expect adds a volume to watch (idempotent). The next check hands its
// current device to Keep.
func (m *Monitor) Expect(t Target) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.watched == nil {
		m.watched = map[string]*watch{}
	}
	if w, ok := m.watched[t.SubsystemNQN]; ok {
		w.t = t
		return
	}
	m.watched[t.SubsystemNQN] = &watch{t: t, needKeep: true}
}

// Forget stops watching a volume (it is being unstaged). It waits for a
// check in progress.
func (m *Monitor) Forget(nqn string) {
	m.checking.Lock()
	defer m.checking.Unlock()
	m.mu.Lock()
	w, ok := m.watched[nqn]
	delete(m.watched, nqn)
	m.mu.Unlock()
	if ok && m.OnChange != nil {
		m.OnChange(w.t, Health{})
	}
}

// Health returns a watched volume's health (false: not watched).
func (m *Monitor) Health(nqn string) (Health, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	w, ok := m.watched[nqn]
	if !ok {
		return Health{}, false
	}
	return w.health, true
}

// Device is the device Keep last succeeded with.
func (m *Monitor) Device(nqn string) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	if w, ok := m.watched[nqn]; ok {
		return w.device
	}
	return ""
}

// Check looks at every watched volume once.
func (m *Monitor) Check(ctx context.Context) {
	m.mu.Lock()
	nqns := make([]string, 0, len(m.watched))
	for n := range m.watched {
		nqns = append(nqns, n)
	}
	m.mu.Unlock()
	for _, n := range nqns {
		m.checkOne(ctx, n)
	}
}

func (m *Monitor) checkOne(ctx context.Context, nqn string) {
	m.checking.Lock()
	defer m.checking.Unlock()
	m.mu.Lock()
	w, ok := m.watched[nqn]
	if !ok {
		m.mu.Unlock()
		return // forgotten meanwhile
	}
	t, prev, needKeep := w.t, w.health, w.needKeep
	m.mu.Unlock()

	next := Health{State: StateLive}
	dev := ""
	ctrls := m.Fabric.Controllers(nqn)
	switch {
	case len(ctrls) == 0:
		d, err := m.Fabric.Connect(ctx, t)
		if err != nil {
			next = Health{State: StateLost, Err: err}
			if errors.Is(err, ErrFenced) {
				next.State = StateFenced
			}
			break
		}
		m.Log.Info("volume connected again after its controllers were removed", "nqn", nqn, "device", d)
		dev, needKeep = d, true
	case !m.anyLive(ctrls):
		next.State = StateReconnecting
	default:
		if prev.State != StateLive {
			needKeep = true
		}
		if needKeep {
			d, err := m.Fabric.Device(ctx, nqn)
			if err != nil {
				next = Health{State: StateReconnecting, Err: err}
				break
			}
			dev = d
		}
	}
	if next.State == StateLive && needKeep && m.Keep != nil {
		if err := m.Keep(ctx, t, dev); err != nil {
			m.Log.Error(err, "pointing the volume's stable device at its device; retrying at the next check", "nqn", nqn, "device", dev)
			next = Health{State: StateReconnecting, Err: err}
		} else {
			needKeep = false
		}
	}
	m.mu.Lock()
	changed := prev.State != next.State
	if changed {
		next.Since = m.now()
	} else {
		next.Since = prev.Since
	}
	w.health, w.needKeep = next, needKeep
	if dev != "" && !needKeep {
		w.device = dev
	}
	m.mu.Unlock()
	if changed {
		if next.State != StateLive {
			m.Log.Info("volume not live", "nqn", nqn, "state", next.State, "error", errString(next.Err))
		}
		if m.OnChange != nil {
			m.OnChange(t, next)
		}
	}
}

func (m *Monitor) anyLive(ctrls []string) bool {
	for _, c := range ctrls {
		if m.Fabric.State(c) == StateLive {
			return true
		}
	}
	return false
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// Run checks every Interval until ctx ends.
func (m *Monitor) Run(ctx context.Context) {
	t := time.NewTicker(m.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			m.Check(ctx)
		}
	}
}
