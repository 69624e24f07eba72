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
	// fence: the volume was given to another node. Final until the volume
	// is unstaged: the I/O waiting for it is failed at once (OnFenced) and
	// the monitor never connects it again — were the storage to admit this
	// node later (the volume handed back, a migration opening the fence),
	// writes queued since the fence must not land on what another node
	// wrote meanwhile.
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
	// OnFenced fails the I/O waiting for a fenced volume (the stable
	// device's queue); called once, when the fence is found.
	OnFenced func(ctx context.Context, t Target) error
	// OnChange is told every health change (events, metrics), and a
	// Health with an empty State when a volume is forgotten.
	OnChange func(t Target, h Health)
	// FenceConfirmations and FenceConfirmWindow: a volume is fenced after
	// at least this many refusals in a row (default 3) spanning at least
	// this long (default 2m). A storage that just rebooted refuses the
	// subsystems it has not exported yet, and a Connect that timed out
	// looks the same to the kernel (EIO); a real fence refuses every
	// time, and the queue is held meanwhile, so waiting costs nothing.
	FenceConfirmations int
	FenceConfirmWindow time.Duration
	// RecheckEvery: a live volume's stable device is handed to Keep again
	// at least this often (default 30s): without a multipathd, a path
	// device-mapper marked failed is only reinstated by Keep.
	RecheckEvery time.Duration
	Log          logr.Logger
	Now          func() time.Time

	mu      sync.Mutex
	watched map[string]*watch
}

type watch struct {
	t        Target
	device   string // the device Keep last succeeded with
	kept     time.Time
	needKeep bool
	health   Health
	refusals int
	// firstRefusal: when the current run of refusals began
	firstRefusal time.Time
	// failedQueue: OnFenced succeeded for this fenced volume
	failedQueue bool
	// busy is held while the volume is checked; Forget takes it so a
	// volume being unstaged is never reconnected behind its back.
	busy sync.Mutex
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

// ExpectFenced watches a volume that was found fenced before (a restarted
// plugin, an unstage that failed half-way): it stays fenced — never
// connected again, its queue failed (again) at the next check.
func (m *Monitor) ExpectFenced(t Target, since time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.watched == nil {
		m.watched = map[string]*watch{}
	}
	w, ok := m.watched[t.SubsystemNQN]
	if !ok {
		w = &watch{t: t}
		m.watched[t.SubsystemNQN] = w
	}
	w.t, w.needKeep, w.failedQueue = t, false, false
	w.health = Health{State: StateFenced, Since: since, Err: errors.New("found fenced before this watch started")}
}

// Forget stops watching a volume (it is being unstaged). It waits for a
// check of that volume in progress.
func (m *Monitor) Forget(nqn string) {
	m.mu.Lock()
	w, ok := m.watched[nqn]
	m.mu.Unlock()
	if !ok {
		return
	}
	w.busy.Lock()
	defer w.busy.Unlock()
	m.mu.Lock()
	if m.watched[nqn] == w {
		delete(m.watched, nqn)
	}
	m.mu.Unlock()
	if m.OnChange != nil {
		m.OnChange(w.t, Health{})
	}
}

// Fenced reports whether the volume was found fenced (it stays so until
// it is forgotten).
func (m *Monitor) Fenced(nqn string) bool {
	h, ok := m.Health(nqn)
	return ok && h.State == StateFenced
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

// Check looks at every watched volume once, up to four at a time (a
// volume whose target does not answer must not hold up the others).
func (m *Monitor) Check(ctx context.Context) {
	m.mu.Lock()
	ws := make([]*watch, 0, len(m.watched))
	for _, w := range m.watched {
		ws = append(ws, w)
	}
	m.mu.Unlock()
	sem := make(chan struct{}, 4)
	var wg sync.WaitGroup
	for _, w := range ws {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			m.checkOne(ctx, w)
		}()
	}
	wg.Wait()
}

// failQueue calls OnFenced for a fenced volume until it succeeds.
func (m *Monitor) failQueue(ctx context.Context, w *watch) {
	m.mu.Lock()
	done, t := w.failedQueue, w.t
	m.mu.Unlock()
	if done || m.OnFenced == nil {
		return
	}
	if err := m.OnFenced(ctx, t); err != nil {
		m.Log.Error(err, "failing the I/O waiting for a fenced volume; retrying at the next check", "nqn", t.SubsystemNQN)
		return
	}
	m.mu.Lock()
	w.failedQueue = true
	m.mu.Unlock()
}

func (m *Monitor) confirmWindow() time.Duration {
	if m.FenceConfirmWindow > 0 {
		return m.FenceConfirmWindow
	}
	return 2 * time.Minute
}

func (m *Monitor) confirmations() int {
	if m.FenceConfirmations > 0 {
		return m.FenceConfirmations
	}
	return 3
}

func (m *Monitor) recheck() time.Duration {
	if m.RecheckEvery > 0 {
		return m.RecheckEvery
	}
	return 30 * time.Second
}

func (m *Monitor) checkOne(ctx context.Context, w *watch) {
	w.busy.Lock()
	defer w.busy.Unlock()
	m.mu.Lock()
	nqn := w.t.SubsystemNQN
	if m.watched[nqn] != w {
		m.mu.Unlock()
		return // forgotten meanwhile
	}
	t, prev, needKeep := w.t, w.health, w.needKeep || m.now().Sub(w.kept) >= m.recheck()
	m.mu.Unlock()
	if prev.State == StateFenced {
		// final until unstaged: never connect again; fail the queue until that worked
		m.failQueue(ctx, w)
		return
	}

	next := Health{State: StateLive}
	dev := ""
	ctrls := m.Fabric.Controllers(nqn)
	switch {
	case len(ctrls) == 0:
		d, err := m.Fabric.Connect(ctx, t)
		refused := err != nil && errors.Is(err, ErrFenced)
		m.mu.Lock()
		if refused {
			if w.refusals == 0 {
				w.firstRefusal = m.now()
			}
			w.refusals++
		} else {
			w.refusals = 0
		}
		confirmed := w.refusals >= m.confirmations() && m.now().Sub(w.firstRefusal) >= m.confirmWindow()
		m.mu.Unlock()
		if err != nil {
			next = Health{State: StateLost, Err: err}
			if refused && confirmed {
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
		w.device, w.kept = dev, m.now()
	}
	m.mu.Unlock()
	if next.State == StateFenced {
		m.failQueue(ctx, w)
	}
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
