package nodeagent

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
)

// fakeFabric is the kernel's view, scripted (the real one is exercised in
// the qemu suite, test/vm).
type fakeFabric struct {
	ctrls   map[string][]string
	states  map[string]string
	devs    map[string]string
	connect func(t Target) (string, error)
	calls   int
}

func (f *fakeFabric) Connect(_ context.Context, t Target) (string, error) {
	f.calls++
	return f.connect(t)
}
func (f *fakeFabric) Device(_ context.Context, nqn string) (string, error) {
	if d, ok := f.devs[nqn]; ok {
		return d, nil
	}
	return "", ErrNotConnected
}
func (f *fakeFabric) Controllers(nqn string) []string { return f.ctrls[nqn] }
func (f *fakeFabric) State(c string) string           { return f.states[c] }

type monitorLog struct {
	kept    []string
	changes []string
	fenced  int
	keepErr error
}

func newMonitor(f *fakeFabric, l *monitorLog) *Monitor {
	return &Monitor{Fabric: f, Log: logr.Discard(),
		Keep: func(_ context.Context, t Target, dev string) error {
			if l.keepErr != nil {
				return l.keepErr
			}
			l.kept = append(l.kept, dev)
			return nil
		},
		OnFenced: func(context.Context, Target) error { l.fenced++; return nil },
		OnChange: func(t Target, h Health) { l.changes = append(l.changes, h.State) }}
}

func TestMonitorReconnectsAndRetargetsAfterRenumbering(t *testing.T) {
	nqn := pfx + "00000000000000000000000000m1"
	f := &fakeFabric{ctrls: map[string][]string{nqn: {"nvme0"}}, states: map[string]string{"nvme0": "live"},
		devs: map[string]string{nqn: "/dev/nvme0n1"}}
	l := &monitorLog{}
	m := newMonitor(f, l)
	m.Expect(Target{SubsystemNQN: nqn, HostNQN: hostA})

	m.Check(t.Context()) // first look: the stable device is pointed at the current device
	m.Check(t.Context()) // live and kept: nothing to do
	if f.calls != 0 || strings.Join(l.kept, ",") != "/dev/nvme0n1" || strings.Join(l.changes, ",") != "live" {
		t.Fatalf("live volume: %d connects, kept %v, changes %v", f.calls, l.kept, l.changes)
	}

	f.states["nvme0"] = "connecting" // the kernel's own retry: left to it
	m.Check(t.Context())
	if h, _ := m.Health(nqn); h.State != StateReconnecting || f.calls != 0 {
		t.Fatalf("connecting: health %+v, %d connects", h, f.calls)
	}

	delete(f.ctrls, nqn) // the kernel gave up: the monitor connects, the target is away
	delete(f.devs, nqn)
	f.connect = func(Target) (string, error) { return "", errors.New("connection refused") }
	m.Check(t.Context())
	if h, _ := m.Health(nqn); h.State != StateLost || h.Err == nil {
		t.Fatalf("target away: health %+v", h)
	}
	f.connect = func(Target) (string, error) { // back, under another name
		f.ctrls[nqn], f.states["nvme1"], f.devs[nqn] = []string{"nvme1"}, "live", "/dev/nvme1n1"
		return "/dev/nvme1n1", nil
	}
	l.keepErr = errors.New("dmsetup: busy")
	m.Check(t.Context())
	if h, _ := m.Health(nqn); h.State != StateReconnecting || m.Device(nqn) != "/dev/nvme0n1" {
		t.Fatalf("retarget failed: health %+v, device %q (a failed retarget must be retried)", h, m.Device(nqn))
	}
	l.keepErr = nil
	m.Check(t.Context())
	if h, _ := m.Health(nqn); h.State != StateLive || m.Device(nqn) != "/dev/nvme1n1" || strings.Join(l.kept, ",") != "/dev/nvme0n1,/dev/nvme1n1" {
		t.Fatalf("after retry: health %+v, device %q, kept %v", h, m.Device(nqn), l.kept)
	}
	want := "live,reconnecting,lost,reconnecting,live"
	if got := strings.Join(l.changes, ","); got != want {
		t.Fatalf("health changes %s, want %s", got, want)
	}

	m.Forget(nqn)
	delete(f.ctrls, nqn)
	calls := f.calls
	m.Check(t.Context())
	if f.calls != calls {
		t.Fatal("a forgotten volume was reconnected")
	}
	if l.changes[len(l.changes)-1] != "" {
		t.Fatalf("Forget was not reported: %v", l.changes)
	}
	if _, ok := m.Health(nqn); ok {
		t.Fatal("a forgotten volume still has a health")
	}
}

// TestMonitorKernelReconnectRechecksTheStableDevice: when a controller is
// live again after the kernel's own reconnect, the stable device is
// checked once more (a path marked failed meanwhile must be reinstated).
func TestMonitorKernelReconnectRechecksTheStableDevice(t *testing.T) {
	nqn := pfx + "00000000000000000000000000m2"
	f := &fakeFabric{ctrls: map[string][]string{nqn: {"nvme0"}}, states: map[string]string{"nvme0": "live"},
		devs: map[string]string{nqn: "/dev/nvme0n1"}}
	l := &monitorLog{}
	m := newMonitor(f, l)
	m.Expect(Target{SubsystemNQN: nqn, HostNQN: hostA})
	m.Check(t.Context())
	f.states["nvme0"] = "resetting"
	m.Check(t.Context())
	f.states["nvme0"] = "live"
	m.Check(t.Context())
	m.Check(t.Context())
	if strings.Join(l.kept, ",") != "/dev/nvme0n1,/dev/nvme0n1" || f.calls != 0 {
		t.Fatalf("kept %v, %d connects; want the device kept twice, no connect", l.kept, f.calls)
	}
}

// TestMonitorFencedIsFinal: refusals by the storage's fence make a volume
// fenced once confirmed — three in a row spanning the window (a storage
// that just rebooted may refuse for a while); the waiting I/O is failed
// (retried until that works), and the volume is never connected again —
// even when the storage admits this node again — until it is unstaged
// (forgotten). A watch restored as fenced (a restarted plugin) behaves
// the same.
func TestMonitorFencedIsFinal(t *testing.T) {
	nqn := pfx + "00000000000000000000000000m3"
	f := &fakeFabric{ctrls: map[string][]string{}, states: map[string]string{}, devs: map[string]string{}}
	f.connect = func(Target) (string, error) { return "", fmt.Errorf("%w: not admitted", ErrFenced) }
	l := &monitorLog{}
	m := newMonitor(f, l)
	now := time.Date(2026, 11, 29, 9, 0, 0, 0, time.UTC)
	m.Now = func() time.Time { return now }
	m.FenceConfirmWindow = time.Minute
	m.Expect(Target{SubsystemNQN: nqn, HostNQN: hostA})
	for i := 0; i < 5; i++ { // many refusals, but within the window
		m.Check(t.Context())
		now = now.Add(10 * time.Second)
	}
	if h, _ := m.Health(nqn); h.State != StateLost || l.fenced != 0 {
		t.Fatalf("refusals within the window: health %+v, OnFenced %d (want lost, not yet fenced)", h, l.fenced)
	}
	now = now.Add(30 * time.Second)
	failing := errors.New("dmsetup: busy")
	m.OnFenced = func(context.Context, Target) error { l.fenced++; return failing }
	m.Check(t.Context())
	if h, _ := m.Health(nqn); h.State != StateFenced || l.fenced != 1 || !m.Fenced(nqn) {
		t.Fatalf("refusals spanning the window: health %+v, OnFenced %d", h, l.fenced)
	}
	failing = nil                              // failing the queue works at the next check, and is not repeated after
	f.connect = func(Target) (string, error) { // the storage admits this node again
		f.ctrls[nqn], f.states["nvme5"], f.devs[nqn] = []string{"nvme5"}, "live", "/dev/nvme5n1"
		return "/dev/nvme5n1", nil
	}
	calls := f.calls
	for i := 0; i < 3; i++ {
		m.Check(t.Context())
	}
	if f.calls != calls || len(l.kept) != 0 || l.fenced != 2 {
		t.Fatalf("a fenced volume was connected again (%d connects) or kept %v, OnFenced %d (want 2)", f.calls-calls, l.kept, l.fenced)
	}
	m.Forget(nqn)
	m.ExpectFenced(Target{SubsystemNQN: nqn, HostNQN: hostA}, now) // a restarted plugin, from its record
	m.Check(t.Context())
	if h, _ := m.Health(nqn); h.State != StateFenced || f.calls != calls || l.fenced != 3 {
		t.Fatalf("restored as fenced: %+v, %d connects, OnFenced %d", h, f.calls-calls, l.fenced)
	}
	m.Forget(nqn)
	m.Expect(Target{SubsystemNQN: nqn, HostNQN: hostA}) // unstaged, then staged anew
	m.Check(t.Context())
	if h, _ := m.Health(nqn); h.State != StateLive {
		t.Fatalf("staged anew: %+v", h)
	}
}

// slowFabric blocks Connect of one subsystem until released.
type slowFabric struct {
	fakeFabric
	slow    string
	entered chan struct{}
	release chan struct{}
}

func (s *slowFabric) Connect(ctx context.Context, t Target) (string, error) {
	if t.SubsystemNQN == s.slow {
		s.entered <- struct{}{}
		<-s.release
		return "", errors.New("connection timed out")
	}
	return "/dev/nvme9n1", nil
}

// TestMonitorSlowVolumeBlocksNothingElse: a volume whose connect hangs
// does not hold up another volume's check, and Forget of it waits for its
// check to end (an unstaged volume is never reconnected behind the node
// service's back).
func TestMonitorSlowVolumeBlocksNothingElse(t *testing.T) {
	slow, fast := pfx+"00000000000000000000000000s1", pfx+"00000000000000000000000000f1"
	f := &slowFabric{fakeFabric: fakeFabric{ctrls: map[string][]string{}, states: map[string]string{"nvme9": "live"}, devs: map[string]string{}},
		slow: slow, entered: make(chan struct{}), release: make(chan struct{})}
	m := &Monitor{Fabric: f, Log: logr.Discard(), Keep: func(context.Context, Target, string) error { return nil }}
	m.Expect(Target{SubsystemNQN: slow, HostNQN: hostA})
	m.Expect(Target{SubsystemNQN: fast, HostNQN: hostA})
	done := make(chan struct{})
	go func() { m.Check(t.Context()); close(done) }()
	<-f.entered
	// the slow one is connecting; the fast one is checked meanwhile
	deadline := time.After(5 * time.Second)
	for {
		if h, _ := m.Health(fast); h.State == StateLive {
			break
		}
		select {
		case <-deadline:
			t.Fatal("the other volume was not checked while one connect hung")
		case <-time.After(10 * time.Millisecond):
		}
	}
	forgotten := make(chan struct{})
	go func() { m.Forget(slow); close(forgotten) }()
	select {
	case <-forgotten:
		t.Fatal("Forget returned while the volume's check was still running")
	case <-time.After(100 * time.Millisecond):
	}
	close(f.release)
	<-forgotten
	<-done
	if _, ok := m.Health(slow); ok {
		t.Fatal("the forgotten volume is still watched")
	}
}
