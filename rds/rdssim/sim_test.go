package rdssim

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"

	"github.com/rds-fence/rds-fence/rds"
)

func newSim(t *testing.T) *Simulator {
	t.Helper()
	s, err := New(Options{Root: t.TempDir(), PoolSize: 100 << 30})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func mustExec(t *testing.T, s *Simulator, line string) string {
	t.Helper()
	out := s.Exec(line)
	if err := rds.ClassifyOutput(out); err != nil {
		t.Fatalf("%s: %v", line, err)
	}
	return out
}

// Quote's output must come back as exactly the original value through the
// simulator's RouterOS lexer: one statement, one argument, no expansion.
func TestQuotedHostileValuesStayOneArgument(t *testing.T) {
	for _, v := range []string{
		`a"; /disk remove [find]; "`, `a;b`, `[/system reboot]`, "a\nb\r\n/disk remove [find]", `$x`, `$[/disk remove [find]]`,
		`back\slash`, `\"`, `?`, "tab\there", "\x00\x7f\xff", `"`, ``,
	} {
		stmts, err := parseLine("/disk set [find slot=" + rds.Quote("x") + "] nvme-tcp-server-allow-host-name=" + rds.Quote(v))
		if err != nil {
			t.Fatalf("%q: %v", v, err)
		}
		if len(stmts) != 1 || len(stmts[0].args) != 2 || stmts[0].args[1].value != v {
			t.Fatalf("%q parsed as %+v", v, stmts)
		}
	}
}

// Without quoting, the same values would run a second command: this is what
// the client's quoting and validation prevent, and why the simulator
// implements ';' and '[...]' instead of ignoring them.
func TestUnquotedInjectionRunsASecondCommand(t *testing.T) {
	s := newSim(t)
	for _, slot := range []string{"pvc-victim", "pvc-other"} {
		mustExec(t, s, "/disk add type=file file-path=/storage-pool/"+slot+".img file-size=1M slot="+slot)
	}
	hostile := `pvc-other; /disk remove [find slot=pvc-victim]`
	s.Exec("/disk print detail where slot=" + hostile)
	if _, ok := s.Disk("pvc-victim"); ok {
		t.Fatal("the simulator did not run the injected command; injection tests would prove nothing")
	}
	cmds := s.Commands()
	if last := cmds[len(cmds)-1]; !strings.HasPrefix(last, "/disk remove") {
		t.Fatalf("last command = %q", last)
	}
}

func TestCloneCopiesDataAndKeepsHoles(t *testing.T) {
	s := newSim(t)
	mustExec(t, s, `/disk add type=file file-path="/storage-pool/v/src.img" file-size=64M slot="pvc-src"`)
	src, _ := s.Disk("pvc-src")
	payload := bytes.Repeat([]byte("rds-fence"), 1000)
	f, err := os.OpenFile(src.HostPath, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(payload, 32<<20); err != nil {
		t.Fatal(err)
	}
	_ = f.Close()
	mustExec(t, s, `/disk add type=file copy-from=[find slot="pvc-src"] file-path="/storage-pool/v/dst.img" file-size=128M slot="pvc-dst"`)
	dst, ok := s.Disk("pvc-dst")
	if !ok || dst.Size != 128<<20 {
		t.Fatalf("clone = %+v", dst)
	}
	got := make([]byte, len(payload))
	g, _ := os.Open(dst.HostPath)
	defer func() { _ = g.Close() }()
	if _, err := g.ReadAt(got, 32<<20); err != nil || !bytes.Equal(got, payload) {
		t.Fatalf("clone content differs: %v", err)
	}
	if out := s.Exec(`/disk add type=file copy-from=[find slot="nope"] file-path="/storage-pool/v/x.img" slot="pvc-x"`); !strings.Contains(out, "no such item") {
		t.Fatalf("clone of a missing source = %q", out)
	}
}

func TestPrintMatchesParser(t *testing.T) {
	s := newSim(t)
	mustExec(t, s, `/disk add type=file file-path="/storage-pool/kubernetes-volumes/pvc-5c1e7d428f0b4a539a412f0c7a1b.img" file-size=50G slot="pvc-5c1e7d428f0b4a539a412f0c7a1b" nvme-tcp-export=yes nvme-tcp-server-port=4420 nvme-tcp-server-nqn="nqn.2000-02.com.mikrotik:pvc-5c1e7d428f0b4a539a412f0c7a1b"`)
	out := mustExec(t, s, `/disk print detail where slot~"^pvc-"`)
	if !strings.Contains(out, "\r\n") || !strings.HasPrefix(out, "Flags:") || !strings.Contains(out, "size=53 687 091 200") {
		t.Fatalf("output lacks RouterOS quirks:\n%s", out)
	}
	recs, err := rds.ParseDetail(out)
	if err != nil || len(recs) != 1 {
		t.Fatalf("parse: %v %v", recs, err)
	}
	if v, _ := recs[0].Get("size"); v != "53687091200" {
		t.Fatalf("size = %q", v)
	}
	if v, _ := recs[0].Get("file-size"); v != "50.0GiB" {
		t.Fatalf("file-size = %q", v)
	}
	pool := mustExec(t, s, `/disk print detail where mount-point="storage-pool"`)
	if recs, err := rds.ParseDetail(pool); err != nil || len(recs) != 1 || recs[0].Flags != "BM" {
		t.Fatalf("pool print: %+v %v\n%s", recs, err, pool)
	}
	if none := mustExec(t, s, `/disk print detail where slot="nope"`); !strings.HasPrefix(none, "Flags:") {
		t.Fatalf("empty print = %q", none)
	}
	if out := s.Exec(`/disk remove [find slot="nope"]`); strings.TrimSpace(out) != "no such item" {
		t.Fatalf("remove missing = %q", out)
	}
	if out := s.Exec(`/disk frobnicate`); !strings.Contains(out, "bad command name") {
		t.Fatalf("unknown command = %q", out)
	}
}

// TestFabricEndpoint: the loop transport's stand-in for an NVMe/TCP
// connect applies the fence by subsystem NQN and port, and answers
// malformed requests with an error line.
func TestFabricEndpoint(t *testing.T) {
	sim, err := New(Options{Root: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := lis.Addr().(*net.TCPAddr).Port
	f := ServeFabric(sim, lis)
	defer func() { _ = f.Close() }()
	mustExec(t, sim, fmt.Sprintf(`/disk add type=file file-path="/storage-pool/v/a.img" file-size=1M slot="a" nvme-tcp-export=yes nvme-tcp-server-port=%d nvme-tcp-server-nqn="nqn.x:a" nvme-tcp-server-allow-host-name="nqn.h:1"`, port))
	if path, err := FabricConnect(t.Context(), f.Addr(), "nqn.x:a", "nqn.h:1"); err != nil || !strings.HasSuffix(path, "/storage-pool/v/a.img") {
		t.Fatalf("allowed host: %q, %v", path, err)
	}
	for _, c := range []struct{ nqn, host, want string }{
		{"nqn.x:a", "nqn.h:2", `allows host "nqn.h:1", not "nqn.h:2"`},
		{"nqn.x:none", "nqn.h:1", "no subsystem"},
	} {
		if _, err := FabricConnect(t.Context(), f.Addr(), c.nqn, c.host); !errors.Is(err, ErrFenced) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s as %s: %v, want %q", c.nqn, c.host, err, c.want)
		}
	}
	if _, err := FabricConnect(t.Context(), f.Addr(), "nqn.x:a b", "nqn.h:1"); err == nil {
		t.Error("an NQN with white space was sent")
	}
	conn, err := net.Dial("tcp", f.Addr())
	if err != nil {
		t.Fatal(err)
	}
	_, _ = conn.Write([]byte("HELLO\n"))
	buf := make([]byte, 200)
	n, _ := conn.Read(buf)
	_ = conn.Close()
	if !strings.HasPrefix(string(buf[:n]), "ERR malformed request") {
		t.Errorf("malformed request answered %q", buf[:n])
	}
}
