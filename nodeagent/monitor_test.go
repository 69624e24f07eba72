package nodeagent

import (
	"context"
	"errors"
	"testing"

	"github.com/go-logr/logr"
)

// fakeFabric is the kernel's view, scripted (the real one is exercised in
// the qemu suite, test/vm).
type fakeFabric struct {
	ctrls   map[string][]string
	connect func(t Target) (string, error)
	calls   int
}

func (f *fakeFabric) Connect(_ context.Context, t Target) (string, error) {
	f.calls++
	return f.connect(t)
}
func (f *fakeFabric) Controllers(nqn string) []string { return f.ctrls[nqn] }
func (f *fakeFabric) State(string) string             { return "live" }

func TestMonitorReconnectsAndReportsRenumbering(t *testing.T) {
	nqn := pfx + "00000000000000000000000000m1"
	f := &fakeFabric{ctrls: map[string][]string{nqn: {"/sys/class/nvme/nvme0"}}}
	var lost []string
	var moved [][2]string
	m := &Monitor{Fabric: f, Log: logr.Discard(),
		OnLost:   func(n string, err error) { lost = append(lost, err.Error()) },
		OnDevice: func(n, old, cur string) { moved = append(moved, [2]string{old, cur}) }}
	m.Expect(Target{SubsystemNQN: nqn, HostNQN: hostA}, "/dev/nvme0n1")

	m.Check(t.Context()) // live: nothing to do
	if f.calls != 0 || len(lost) != 0 {
		t.Fatalf("a live volume was touched: %d connects, lost %v", f.calls, lost)
	}
	delete(f.ctrls, nqn) // the kernel gave up
	f.connect = func(Target) (string, error) { return "", errors.New("connection refused") }
	m.Check(t.Context())
	if len(lost) != 1 || m.Device(nqn) != "/dev/nvme0n1" {
		t.Fatalf("target away: lost %v, device %q", lost, m.Device(nqn))
	}
	f.connect = func(Target) (string, error) {
		f.ctrls[nqn] = []string{"/sys/class/nvme/nvme1"}
		return "/dev/nvme1n1", nil
	}
	m.Check(t.Context())
	if m.Device(nqn) != "/dev/nvme1n1" || len(moved) != 1 || moved[0] != [2]string{"/dev/nvme0n1", "/dev/nvme1n1"} {
		t.Fatalf("after reconnect: device %q, moved %v", m.Device(nqn), moved)
	}
	m.Forget(nqn)
	delete(f.ctrls, nqn)
	calls := f.calls
	m.Check(t.Context())
	if f.calls != calls {
		t.Fatal("a forgotten volume was reconnected")
	}
}
