package nodeagent

import (
	"context"
	"sync"
	"time"

	"github.com/go-logr/logr"
)

// Fabric is what the monitor needs of a connector: connect, and the
// subsystem's controllers and their states.
type Fabric interface {
	Connect(ctx context.Context, t Target) (string, error)
	Controllers(nqn string) []string
	State(ctrl string) string
}

// Monitor watches every volume this node should hold, continuously (not
// only when a volume is published): a subsystem whose controllers the
// kernel removed (ctrl_loss_tmo expired) is connected again as soon as the
// target answers, and when the volume comes back under another device
// name OnDevice is told, so the layer above (a device-mapper device the
// mounts and device nodes use) can be retargeted. A controller in state
// "connecting" is the kernel's own retry and is left to it.
type Monitor struct {
	Fabric   Fabric
	Interval time.Duration
	// OnDevice is called when a volume's device changes (renumbering).
	OnDevice func(nqn, oldDevice, newDevice string)
	// OnLost is called while a volume has no controller and cannot be
	// reconnected (report it: event, metric, volume condition).
	OnLost func(nqn string, err error)
	Log    logr.Logger

	mu       sync.Mutex
	expected map[string]Target
	devices  map[string]string
}

// Expect adds a volume to watch, with its current device.
func (m *Monitor) Expect(t Target, device string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.expected == nil {
		m.expected, m.devices = map[string]Target{}, map[string]string{}
	}
	m.expected[t.SubsystemNQN] = t
	m.devices[t.SubsystemNQN] = device
}

// Forget stops watching a volume (unstaged).
func (m *Monitor) Forget(nqn string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.expected, nqn)
	delete(m.devices, nqn)
}

// Device is the volume's current device as the monitor knows it.
func (m *Monitor) Device(nqn string) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.devices[nqn]
}

// Check looks at every watched volume once.
func (m *Monitor) Check(ctx context.Context) {
	m.mu.Lock()
	targets := make([]Target, 0, len(m.expected))
	for _, t := range m.expected {
		targets = append(targets, t)
	}
	m.mu.Unlock()
	for _, t := range targets {
		if len(m.Fabric.Controllers(t.SubsystemNQN)) > 0 {
			continue // live, or the kernel is reconnecting
		}
		dev, err := m.Fabric.Connect(ctx, t)
		if err != nil {
			m.Log.Info("volume lost: no controller and reconnecting failed", "nqn", t.SubsystemNQN, "error", err.Error())
			if m.OnLost != nil {
				m.OnLost(t.SubsystemNQN, err)
			}
			continue
		}
		m.mu.Lock()
		old, watched := m.devices[t.SubsystemNQN]
		if watched {
			m.devices[t.SubsystemNQN] = dev
		}
		m.mu.Unlock()
		m.Log.Info("volume reconnected after the kernel gave up", "nqn", t.SubsystemNQN, "device", dev, "previous", old)
		if watched && old != dev && m.OnDevice != nil {
			m.OnDevice(t.SubsystemNQN, old, dev)
		}
	}
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
