package vm

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"
)

// guestInit runs in the guest: the kernel modules, configfs, then the
// guest tests; the verdict goes to the serial console.
const guestInit = `#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/sbin:/bin
mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t devtmpfs dev /dev; mount -t tmpfs tmp /tmp
ip link set lo up
for m in configfs nvmet-tcp nvme-tcp loop dm-multipath dm-round-robin crc32c_generic ext4; do modprobe $m; done
mount -t configfs none /sys/kernel/config
echo GUEST_BOOTED
/guest.test -test.v -test.timeout 300s
echo "GUEST_TEST_EXIT=$?"
poweroff -f
`

func vmDir(t *testing.T) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Join(filepath.Dir(file), "..", "..")
	dir := filepath.Join(root, "bin", "vm")
	for _, f := range []string{"vmlinuz", "base.cpio.gz"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Fatalf("%s not found in %s: run `make vm` (or `make test`), which builds the guest kernel and initramfs", f, dir)
		}
	}
	return dir
}

// TestNVMeTCPInVM boots the guest with the guest tests and requires them
// to pass.
func TestNVMeTCPInVM(t *testing.T) {
	dir := vmDir(t)
	work := t.TempDir()
	root := filepath.Join(work, "root")
	if err := os.MkdirAll(root, 0o755); err != nil {
		t.Fatal(err)
	}
	build := exec.Command("go", "test", "-c", "-tags", "vmguest", "-o", filepath.Join(root, "guest.test"), "./guest")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the guest tests: %v\n%s", err, out)
	}
	if err := os.WriteFile(filepath.Join(root, "init"), []byte(guestInit), 0o755); err != nil {
		t.Fatal(err)
	}
	extra := filepath.Join(work, "extra.cpio.gz")
	pack := exec.Command("sh", "-c", "find . | cpio -o -H newc --quiet | gzip -1 > "+extra)
	pack.Dir = root
	if out, err := pack.CombinedOutput(); err != nil {
		t.Fatalf("packing the guest tests: %v\n%s", err, out)
	}
	base, err := os.ReadFile(filepath.Join(dir, "base.cpio.gz"))
	if err != nil {
		t.Fatal(err)
	}
	add, err := os.ReadFile(extra)
	if err != nil {
		t.Fatal(err)
	}
	initrd := filepath.Join(work, "initrd.gz")
	if err := os.WriteFile(initrd, append(base, add...), 0o644); err != nil { // a later /init overrides the earlier
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 8*time.Minute)
	defer cancel()
	start := time.Now()
	qemu := exec.CommandContext(ctx, "qemu-system-x86_64", "-accel", "tcg", "-smp", "1", "-m", "768", "-nographic", "-no-reboot",
		"-kernel", filepath.Join(dir, "vmlinuz"), "-initrd", initrd, "-append", "console=ttyS0 quiet panic=-1")
	out, err := qemu.CombinedOutput()
	console := string(out)
	t.Logf("guest ran in %s", time.Since(start).Round(100*time.Millisecond))
	m := regexp.MustCompile(`GUEST_TEST_EXIT=(\d+)`).FindStringSubmatch(console)
	if err != nil || m == nil || m[1] != "0" {
		t.Fatalf("guest tests failed (qemu: %v, verdict %v); guest console:\n%s", err, m, console)
	}
	for _, l := range strings.Split(console, "\n") {
		if strings.Contains(l, "--- ") || strings.Contains(l, "_test.go:") {
			t.Log("guest: " + strings.TrimSpace(l))
		}
	}
}
