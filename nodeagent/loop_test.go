package nodeagent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"

	"github.com/rds-fence/rds-fence/rds/rdssim"
)

const (
	hostA = "nqn.2014-08.org.nvmexpress:uuid:aaaaaaaa-0000-4000-8000-000000000001"
	hostB = "nqn.2014-08.org.nvmexpress:uuid:bbbbbbbb-0000-4000-8000-000000000002"
	pfx   = "nqn.2000-02.com.mikrotik:pvc-"
)

// startFabric runs a simulator with its fabric endpoint and one disk of
// 8 MiB whose fence admits allowed.
func startFabric(t *testing.T, slot, allowed string) (*rdssim.Simulator, Target) {
	t.Helper()
	sim, err := rdssim.New(rdssim.Options{Root: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := lis.Addr().(*net.TCPAddr).Port
	f := rdssim.ServeFabric(sim, lis)
	t.Cleanup(func() { _ = f.Close() })
	nqn := "nqn.2000-02.com.mikrotik:" + slot
	if out := sim.Exec(fmt.Sprintf(`/disk add type=file file-path="/storage-pool/kubernetes-volumes/%s.img" file-size=8M slot="%s" nvme-tcp-export=yes nvme-tcp-server-port=%d nvme-tcp-server-nqn="%s" nvme-tcp-server-allow-host-name="%s"`,
		slot, slot, port, nqn, allowed)); strings.TrimSpace(out) != "" {
		t.Fatalf("disk add: %q", out)
	}
	return sim, Target{Address: "127.0.0.1", Port: port, SubsystemNQN: nqn}
}

// TestLoopConnector attaches a simulated volume as a real loop device,
// only for the host its fence admits, idempotently, and detaches it.
func TestLoopConnector(t *testing.T) {
	sim, target := startFabric(t, "pvc-00000000000000000000000000a1", hostA)
	c := &LoopConnector{Exec: HostExec{}, StateDir: t.TempDir(), Prefix: pfx}
	t.Cleanup(func() { _ = c.Disconnect(context.Background(), target.SubsystemNQN) })

	// Fenced: host B is refused, with the storage's reason, and nothing is attached.
	b := target
	b.HostNQN = hostB
	if _, err := c.Connect(t.Context(), b); !errors.Is(err, ErrFenced) || !strings.Contains(err.Error(), hostA) {
		t.Fatalf("connect as a host the fence does not admit: %v", err)
	}
	if _, err := c.Device(t.Context(), target.SubsystemNQN); !errors.Is(err, ErrNotConnected) {
		t.Fatalf("after a refused connect: %v", err)
	}

	a := target
	a.HostNQN = hostA
	dev, err := c.Connect(t.Context(), a)
	if err != nil {
		t.Fatal(err)
	}
	// Data written through the device lands in the volume's backing file.
	path, err := sim.Connect("pvc-00000000000000000000000000a1", hostA)
	if err != nil {
		t.Fatal(err)
	}
	payload := bytes.Repeat([]byte("rds-fence"), 512)
	fd, err := os.OpenFile(dev, os.O_WRONLY|os.O_SYNC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fd.WriteAt(payload, 4096); err != nil {
		t.Fatal(err)
	}
	_ = fd.Close()
	got := make([]byte, len(payload))
	ff, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = ff.ReadAt(got, 4096)
	_ = ff.Close()
	if !bytes.Equal(got, payload) {
		t.Fatal("data written to the loop device is not in the backing file")
	}
	// Idempotent: the same device again, and Device finds it.
	if again, err := c.Connect(t.Context(), a); err != nil || again != dev {
		t.Fatalf("second connect = %q, %v; want %q", again, err, dev)
	}
	// A restarted plugin (new connector, same state) finds and detaches it.
	restarted := &LoopConnector{Exec: HostExec{}, StateDir: c.StateDir, Prefix: pfx}
	if found, err := restarted.Device(t.Context(), target.SubsystemNQN); err != nil || found != dev {
		t.Fatalf("device after restart = %q, %v", found, err)
	}
	if err := restarted.Disconnect(t.Context(), target.SubsystemNQN); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Device(t.Context(), target.SubsystemNQN); !errors.Is(err, ErrNotConnected) {
		t.Fatalf("after disconnect: %v", err)
	}
	if out, _ := (HostExec{}).Output(t.Context(), "losetup", "--noheadings", "--output", "NAME", "--associated", path); strings.TrimSpace(string(out)) != "" {
		t.Fatalf("loop devices left on the backing file: %q", out)
	}
	if err := c.Disconnect(t.Context(), target.SubsystemNQN); err != nil {
		t.Fatalf("second disconnect: %v", err)
	}
	if entries, _ := os.ReadDir(c.StateDir); len(entries) != 0 {
		t.Fatalf("state left behind: %v", entries)
	}
}

// TestLoopConnectorRefusesForeignSubsystems: a subsystem outside the
// driver's prefix is never touched, whatever asks for it.
func TestLoopConnectorRefusesForeignSubsystems(t *testing.T) {
	c := &LoopConnector{Exec: HostExec{}, StateDir: t.TempDir(), Prefix: pfx}
	foreign := "nqn.2000-02.com.mikrotik:vm-disk-of-someone-else"
	if _, err := c.Connect(t.Context(), Target{Address: "127.0.0.1", Port: 1, SubsystemNQN: foreign, HostNQN: hostA}); err == nil ||
		!strings.Contains(err.Error(), "not this driver's") {
		t.Fatalf("connect: %v", err)
	}
	if err := c.Disconnect(t.Context(), foreign); err == nil {
		t.Fatal("disconnect of a foreign subsystem accepted")
	}
	if _, err := c.Connect(t.Context(), Target{Address: "127.0.0.1", Port: 1, SubsystemNQN: pfx + "x", HostNQN: `nqn.x:y" ; reboot`}); err == nil {
		t.Fatal("a hostile host NQN was sent to the storage")
	}
}
