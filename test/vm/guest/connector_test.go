//go:build vmguest

package guest

import (
	"bytes"
	"context"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/rds-fence/rds-fence/nodeagent"
)

const (
	prefix = "nqn.2000-02.com.mikrotik:pvc-"
	hostA  = "nqn.2014-08.org.nvmexpress:uuid:aaaaaaaa-0000-4000-8000-000000000001"
	hostB  = "nqn.2014-08.org.nvmexpress:uuid:bbbbbbbb-0000-4000-8000-000000000002"
)

func pattern(n int) []byte { return bytes.Repeat([]byte("rds-fence-vm!"), n/13+1)[:n] }

func writeRead(t *testing.T, dev string, off int64, data []byte) {
	t.Helper()
	f, err := os.OpenFile(dev, os.O_RDWR|os.O_SYNC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(data, off); err != nil {
		t.Fatalf("write %s: %v\n%s", dev, err, dmesgTail())
	}
	got := make([]byte, len(data))
	if _, err := f.ReadAt(got, off); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read back from %s: %v (equal %v)", dev, err, bytes.Equal(got, data))
	}
}

// TestConnectFenceDisconnect: the connector attaches the namespace for the
// admitted host, is refused for another host with a clear error, and a
// disconnect leaves no controller behind.
func TestConnectFenceDisconnect(t *testing.T) {
	nqn := prefix + "000000000000000000000000000001"
	newTarget(t, nqn, hostA, "1", "4420")
	c := &nodeagent.NVMeConnector{Prefix: prefix, ReconnectDelay: 1}
	ctx := context.Background()
	target := nodeagent.Target{Address: "127.0.0.1", Port: 4420, SubsystemNQN: nqn}

	b := target
	b.HostNQN = hostB
	if _, err := c.Connect(ctx, b); !errors.Is(err, nodeagent.ErrFenced) {
		t.Fatalf("connect as a host the target does not admit: %v", err)
	}
	if ctrls := c.Controllers(nqn); len(ctrls) != 0 {
		t.Fatalf("controllers left after a refused connect: %v", ctrls)
	}
	a := target
	a.HostNQN = hostA
	start := time.Now()
	dev, err := c.Connect(ctx, a)
	if err != nil {
		t.Fatalf("connect: %v\n%s", err, dmesgTail())
	}
	t.Logf("connected %s as %s in %s", dev, hostA, time.Since(start))
	writeRead(t, dev, 1<<20, pattern(64<<10))
	if again, err := c.Connect(ctx, a); err != nil || again != dev {
		t.Fatalf("second connect = %q, %v; want %q", again, err, dev)
	}
	if err := c.Disconnect(ctx, nqn); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for len(c.Controllers(nqn)) > 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if ctrls := c.Controllers(nqn); len(ctrls) != 0 {
		t.Fatalf("controllers left after disconnect: %v", ctrls)
	}
	if _, err := c.Device(ctx, nqn); !errors.Is(err, nodeagent.ErrNotConnected) {
		t.Fatalf("device after disconnect: %v", err)
	}
}

// TestShortOutage: the target's port goes away for less than ctrl_loss_tmo
// (-1 here: never give up) and comes back; the controller reconnects, the
// device keeps its name, and the data written before is intact.
func TestShortOutage(t *testing.T) {
	nqn := prefix + "000000000000000000000000000002"
	tg := newTarget(t, nqn, hostA, "2", "4421")
	c := &nodeagent.NVMeConnector{Prefix: prefix, ReconnectDelay: 1}
	ctx := context.Background()
	dev, err := c.Connect(ctx, nodeagent.Target{Address: "127.0.0.1", Port: 4421, SubsystemNQN: nqn, HostNQN: hostA})
	if err != nil {
		t.Fatalf("connect: %v\n%s", err, dmesgTail())
	}
	defer c.Disconnect(ctx, nqn)
	data := pattern(32 << 10)
	writeRead(t, dev, 0, data)
	ctrl := c.Controllers(nqn)[0]
	tg.unlink(t)
	lost := time.Now()
	for c.State(ctrl) == "live" && time.Since(lost) < 30*time.Second {
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("state %s after %s without the target", c.State(ctrl), time.Since(lost).Round(time.Millisecond))
	if c.State(ctrl) == "live" {
		t.Fatalf("the controller still says live 30s after the target went away")
	}
	time.Sleep(2 * time.Second)
	tg.link(t)
	back := time.Now()
	for c.State(ctrl) != "live" && time.Since(back) < 30*time.Second {
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("live again %s after the target came back", time.Since(back).Round(time.Millisecond))
	if c.State(ctrl) != "live" {
		t.Fatalf("not live 30s after the target came back: %s\n%s", c.State(ctrl), dmesgTail())
	}
	if again, err := c.Device(ctx, nqn); err != nil || again != dev {
		t.Fatalf("device after the outage = %q, %v; want %q", again, err, dev)
	}
	f, err := os.Open(dev)
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(data))
	_, err = f.ReadAt(got, 0)
	f.Close()
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("data after the outage: %v (equal %v)", err, bytes.Equal(got, data))
	}
	writeRead(t, dev, 2<<20, pattern(16<<10))
}

// TestLongOutageReconnect: the target stays away longer than
// ctrl_loss_tmo, so the kernel removes the controller and gives up; the
// monitor reports the volume lost while the target is away and connects
// it again once it is back. Another volume connected meanwhile takes the
// freed device number, so the volume comes back renumbered: the monitor
// hands the new device on (Keep), and the data is intact on it.
func TestLongOutageReconnect(t *testing.T) {
	nqn := prefix + "000000000000000000000000000003"
	tg := newTarget(t, nqn, hostA, "3", "4422")
	c := &nodeagent.NVMeConnector{Prefix: prefix, ReconnectDelay: 1, CtrlLossTmo: 2}
	ctx := context.Background()
	target := nodeagent.Target{Address: "127.0.0.1", Port: 4422, SubsystemNQN: nqn, HostNQN: hostA}
	dev, err := c.Connect(ctx, target)
	if err != nil {
		t.Fatalf("connect: %v\n%s", err, dmesgTail())
	}
	defer c.Disconnect(ctx, nqn)
	data := pattern(48 << 10)
	writeRead(t, dev, 4096, data)
	var states, kept []string
	m := &nodeagent.Monitor{Fabric: c, OnChange: func(_ nodeagent.Target, h nodeagent.Health) { states = append(states, h.State) },
		Keep: func(_ context.Context, _ nodeagent.Target, d string) error { kept = append(kept, d); return nil }}
	m.Expect(target)
	m.Check(ctx)

	tg.unlink(t)
	gone := time.Now()
	for len(c.Controllers(nqn)) > 0 && time.Since(gone) < 30*time.Second {
		time.Sleep(50 * time.Millisecond)
	}
	if len(c.Controllers(nqn)) > 0 {
		t.Fatalf("the kernel kept the controller 30s past ctrl_loss_tmo=2\n%s", dmesgTail())
	}
	t.Logf("the kernel removed the controller %s after the target went away", time.Since(gone).Round(time.Millisecond))
	m.Check(ctx) // target still away: reported, not reconnected
	if h, _ := m.Health(nqn); h.State != nodeagent.StateLost {
		t.Fatalf("health while the target is away: %+v (changes %v)", h, states)
	}
	other := prefix + "000000000000000000000000000004"
	newTarget(t, other, hostA, "4", "4423")
	if _, err := c.Connect(ctx, nodeagent.Target{Address: "127.0.0.1", Port: 4423, SubsystemNQN: other, HostNQN: hostA}); err != nil {
		t.Fatalf("connecting another volume during the outage: %v", err)
	}
	defer c.Disconnect(ctx, other)
	tg.link(t)
	back := time.Now()
	m.Check(ctx)
	cur := m.Device(nqn)
	if len(c.Controllers(nqn)) == 0 || cur == "" {
		t.Fatalf("not reconnected after the target came back\n%s", dmesgTail())
	}
	t.Logf("reconnected by the monitor %s after the target came back: %s (was %s)", time.Since(back).Round(time.Millisecond), cur, dev)
	if cur == dev || len(kept) != 2 || kept[0] != dev || kept[1] != cur {
		t.Fatalf("renumbering not handed on: device %s -> %s, Keep calls %v", dev, cur, kept)
	}
	f, err := os.Open(cur)
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(data))
	_, err = f.ReadAt(got, 4096)
	f.Close()
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("data after the long outage: %v (equal %v)", err, bytes.Equal(got, data))
	}
}
