//go:build vmguest

package guest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

const cfs = "/sys/kernel/config/nvmet"

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func write(t *testing.T, path, value string) {
	t.Helper()
	must(t, os.WriteFile(path, []byte(value), 0))
}

// target exports a 64 MiB file-backed namespace as subsystem nqn on
// 127.0.0.1:port, admitting only allowedHost (the RDS's
// nvme-tcp-server-allow-host-name).
type target struct {
	nqn, port string
}

func newTarget(t *testing.T, nqn, allowedHost, portID, port string) *target {
	t.Helper()
	img := filepath.Join("/tmp", portID+".img")
	must(t, os.WriteFile(img, nil, 0o600))
	must(t, os.Truncate(img, 64<<20))
	return exportFile(t, img, nqn, allowedHost, portID, port)
}

// exportFile exports img as subsystem nqn on 127.0.0.1:port, admitting
// only allowedHost.
func exportFile(t *testing.T, img, nqn, allowedHost, portID, port string) *target {
	t.Helper()
	sub := filepath.Join(cfs, "subsystems", nqn)
	must(t, os.Mkdir(sub, 0o755))
	write(t, filepath.Join(sub, "attr_allow_any_host"), "0")
	host := filepath.Join(cfs, "hosts", allowedHost)
	if _, err := os.Stat(host); err != nil {
		must(t, os.Mkdir(host, 0o755))
	}
	must(t, os.Symlink(host, filepath.Join(sub, "allowed_hosts", allowedHost)))
	ns := filepath.Join(sub, "namespaces", "1")
	must(t, os.Mkdir(ns, 0o755))
	// A file on tmpfs needs buffered I/O (no O_DIRECT there).
	write(t, filepath.Join(ns, "buffered_io"), "1")
	write(t, filepath.Join(ns, "device_path"), img)
	write(t, filepath.Join(ns, "enable"), "1")
	p := filepath.Join(cfs, "ports", portID)
	must(t, os.Mkdir(p, 0o755))
	write(t, filepath.Join(p, "addr_trtype"), "tcp")
	write(t, filepath.Join(p, "addr_adrfam"), "ipv4")
	write(t, filepath.Join(p, "addr_traddr"), "127.0.0.1")
	write(t, filepath.Join(p, "addr_trsvcid"), port)
	tg := &target{nqn: nqn, port: portID}
	tg.link(t)
	return tg
}

func (tg *target) linkPath() string {
	return filepath.Join(cfs, "ports", tg.port, "subsystems", tg.nqn)
}

// link exposes the subsystem on the port; unlink takes it away (an outage).
func (tg *target) link(t *testing.T) {
	t.Helper()
	must(t, os.Symlink(filepath.Join(cfs, "subsystems", tg.nqn), tg.linkPath()))
}

func (tg *target) unlink(t *testing.T) {
	t.Helper()
	must(t, os.Remove(tg.linkPath()))
}

func dmesgTail() string {
	out, _ := exec.Command("dmesg").CombinedOutput()
	if len(out) > 3000 {
		out = out[len(out)-3000:]
	}
	return fmt.Sprintf("dmesg tail:\n%s", out)
}

// allow makes host the only host the subsystem admits (the RDS fence
// moved to another node). Existing connections are not touched.
func (tg *target) allow(t *testing.T, host string) {
	t.Helper()
	dir := filepath.Join(cfs, "subsystems", tg.nqn, "allowed_hosts")
	entries, err := os.ReadDir(dir)
	must(t, err)
	for _, e := range entries {
		must(t, os.Remove(filepath.Join(dir, e.Name())))
	}
	h := filepath.Join(cfs, "hosts", host)
	if _, err := os.Stat(h); err != nil {
		must(t, os.Mkdir(h, 0o755))
	}
	must(t, os.Symlink(h, filepath.Join(dir, host)))
}
