package nodeagent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// fakeDM stands in for dmsetup and the kernel's device mapper, which this
// machine's kernel does not have (the real one runs in the qemu suite,
// test/vm): mappings with their table, minor and path state, and the
// commands in the order they came.
type fakeDM struct {
	tables    map[string]string
	minors    map[string]int
	failed    map[string]bool // the single path is marked failed
	suspended map[string]bool
	queueing  map[string]bool
	log       []string
	failLoad  bool
}

func newFakeDM() *fakeDM {
	return &fakeDM{tables: map[string]string{}, minors: map[string]int{}, failed: map[string]bool{},
		suspended: map[string]bool{}, queueing: map[string]bool{}}
}

func (f *fakeDM) Output(_ context.Context, name string, args ...string) ([]byte, error) {
	if name != "dmsetup" {
		return nil, fmt.Errorf("unexpected tool %s", name)
	}
	f.log = append(f.log, strings.Join(args, " "))
	var flags, pos []string
	for i := 0; i < len(args); i++ {
		switch {
		case args[i] == "--table" || args[i] == "-o":
			flags = append(flags, strings.TrimLeft(args[i], "-")+"="+args[i+1])
			i++
		case strings.HasPrefix(args[i], "-"):
			flags = append(flags, args[i])
		default:
			pos = append(pos, args[i])
		}
	}
	table := ""
	for _, fl := range flags {
		if t, ok := strings.CutPrefix(fl, "table="); ok {
			table = t
		}
	}
	noDev := func() ([]byte, error) {
		return []byte("device-mapper: " + pos[0] + " ioctl on " + pos[1] + " failed: No such device or address"), errors.New("exit status 1")
	}
	if len(pos) < 2 {
		return nil, fmt.Errorf("dmsetup %v: missing name", args)
	}
	cmd, dm := pos[0], pos[1]
	_, exists := f.tables[dm]
	if cmd != "create" && !exists {
		return noDev()
	}
	switch cmd {
	case "create":
		if exists {
			return []byte("Device or resource busy"), errors.New("exit status 1")
		}
		f.tables[dm], f.minors[dm], f.queueing[dm] = table, len(f.minors)+3, true
	case "table":
		return []byte(f.tables[dm] + " \n"), nil
	case "status":
		st := "A"
		if f.failed[dm] {
			st = "F"
		}
		mm := strings.Fields(f.tables[dm])[14]
		return []byte(fmt.Sprintf("0 100 multipath 2 0 0 0 1 1 A 0 1 0 %s %s 0\n", mm, st)), nil
	case "info":
		if contains(flags, "o=suspended") {
			if f.suspended[dm] {
				return []byte("Suspended\n"), nil
			}
			return []byte("Active\n"), nil
		}
		return []byte(fmt.Sprintf("%d\n", f.minors[dm])), nil
	case "suspend":
		if !contains(flags, "--noflush") || !contains(flags, "--nolockfs") {
			return []byte("a flushing suspend fails queued I/O"), errors.New("exit status 1")
		}
		f.suspended[dm] = true
	case "load":
		if !f.suspended[dm] {
			return []byte("loading into a live device is allowed, but this driver suspends first"), errors.New("exit status 1")
		}
		if f.failLoad {
			return []byte("device-mapper: reload ioctl failed: Invalid argument"), errors.New("exit status 1")
		}
		f.tables[dm], f.failed[dm] = table, false
	case "resume":
		f.suspended[dm] = false
	case "message":
		if strings.Join(pos[2:], " ") == "0 fail_if_no_path" {
			f.queueing[dm] = false
		}
	case "remove":
		delete(f.tables, dm)
	}
	return nil, nil
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// loopDevice attaches a file of size bytes as a real loop device (a real
// block device with a real sysfs size).
func loopDevice(t *testing.T, size int64) (string, string, uint64) {
	t.Helper()
	f := filepath.Join(t.TempDir(), "disk")
	if err := os.WriteFile(f, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(f, size); err != nil {
		t.Fatal(err)
	}
	out, err := HostExec{}.Output(t.Context(), "losetup", "--find", "--show", "--", f)
	if err != nil {
		t.Fatalf("losetup: %v: %s", err, out)
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() { _, _ = HostExec{}.Output(context.Background(), "losetup", "-d", dev) })
	var st unix.Stat_t
	if err := unix.Stat(dev, &st); err != nil {
		t.Fatal(err)
	}
	return dev, fmt.Sprintf("%d:%d", unix.Major(st.Rdev), unix.Minor(st.Rdev)), uint64(size / 512)
}

func TestDMMultipathMapsQueuesAndRetargets(t *testing.T) {
	devA, mmA, sectors := loopDevice(t, 4<<20)
	devB, mmB, _ := loopDevice(t, 4<<20)
	f := newFakeDM()
	d := &DMMultipath{Exec: f, Prefix: "rds-fence-"}
	ctx := t.Context()
	name := "rds-fence-pvc-00000000000000000000000000d1"

	p, err := d.Map(ctx, name, devA)
	if err != nil {
		t.Fatal(err)
	}
	if p != "/dev/dm-3" || f.tables[name] != Table(sectors, mmA) {
		t.Fatalf("created %s with %q", p, f.tables[name])
	}
	if !strings.Contains(f.tables[name], "queue_if_no_path queue_mode bio") {
		t.Fatalf("the table does not queue I/O without a path: %q", f.tables[name])
	}
	f.log = nil
	if p2, err := d.Map(ctx, name, devA); err != nil || p2 != p || strings.Contains(strings.Join(f.log, "|"), "load") {
		t.Fatalf("mapping again to the same active path: %s, %v, commands %v", p2, err, f.log)
	}

	// renumbered: the new device is swapped in with a non-flushing suspend
	f.log = nil
	if p2, err := d.Map(ctx, name, devB); err != nil || p2 != p {
		t.Fatalf("retarget: %s, %v", p2, err)
	}
	var verbs []string
	for _, c := range f.log {
		verbs = append(verbs, strings.Fields(c)[0])
	}
	if strings.Join(verbs, ",") != "table,info,suspend,load,resume,info" || f.tables[name] != Table(sectors, mmB) {
		t.Fatalf("retarget commands %v, table %q", f.log, f.tables[name])
	}

	// the same device, its path marked failed (no multipathd reinstates it): reloaded
	f.failed[name] = true
	if _, err := d.Map(ctx, name, devB); err != nil || f.failed[name] {
		t.Fatalf("a failed path was left failed: %v", err)
	}

	// a failed load resumes the old table and says why
	f.failLoad = true
	if _, err := d.Map(ctx, name, devA); err == nil || !strings.Contains(err.Error(), "Invalid argument") || f.suspended[name] || f.tables[name] != Table(sectors, mmB) {
		t.Fatalf("failed load: %v, suspended %v, table %q", err, f.suspended[name], f.tables[name])
	}
	f.failLoad = false

	// a swap interrupted after the suspend (the plugin was killed): the
	// next Map resumes the device
	f.suspended[name] = true
	if _, err := d.Map(ctx, name, devB); err != nil || f.suspended[name] {
		t.Fatalf("a suspended mapping was left suspended: %v", err)
	}

	if err := d.FailQueued(ctx, name); err != nil || f.queueing[name] {
		t.Fatalf("fail_if_no_path: %v, queueing %v", err, f.queueing[name])
	}
	if err := d.Unmap(ctx, name); err != nil {
		t.Fatal(err)
	}
	if err := d.Unmap(ctx, name); err != nil {
		t.Fatalf("unmap twice: %v", err)
	}
	if _, err := d.Path(ctx, name); !errors.Is(err, ErrNotConnected) {
		t.Fatalf("path after unmap: %v", err)
	}
}

func TestDMMultipathRefusesWhatIsNotItsOwn(t *testing.T) {
	dev, _, _ := loopDevice(t, 1<<20)
	f := newFakeDM()
	d := &DMMultipath{Exec: f, Prefix: "rds-fence-"}
	for _, name := range []string{"vg0-root", "rds-fence-x; rm -rf /", "rds-fence-a b", "rds-fence-" + strings.Repeat("a", 200), "../rds-fence-x"} {
		if _, err := d.Map(t.Context(), name, dev); err == nil {
			t.Errorf("Map(%q) succeeded", name)
		}
		if err := d.Unmap(t.Context(), name); err == nil {
			t.Errorf("Unmap(%q) succeeded", name)
		}
	}
	f.tables["rds-fence-linear"] = "0 2048 linear 7:0 0"
	if _, err := d.Map(t.Context(), "rds-fence-linear", dev); err == nil || !strings.Contains(err.Error(), "did not write") {
		t.Fatalf("retargeting a table this driver did not write: %v", err)
	}
	if _, err := d.Map(t.Context(), "rds-fence-file", "/etc/hostname"); err == nil || !strings.Contains(err.Error(), "not a block device") {
		t.Fatalf("mapping a regular file: %v", err)
	}
	if len(f.log) != 1 || !strings.HasPrefix(f.log[0], "table rds-fence-linear") {
		t.Fatalf("dmsetup ran for refused requests: %v", f.log)
	}
}

func TestTableMatches(t *testing.T) {
	kernel := "0 131072 multipath 4 queue_if_no_path retain_attached_hw_handler queue_mode bio 0 1 1 round-robin 0 1 1 259:1 1"
	for table, want := range map[string]bool{
		kernel:                 true,
		Table(131072, "259:1"): true,
		Table(262144, "259:1"): false, // grown
		Table(131072, "259:2"): false, // renumbered
		strings.Replace(kernel, "4 queue_if_no_path retain", "3 retain", 1): false, // fail_if_no_path sent
		"": false,
	} {
		if got := tableMatches(table, 131072, "259:1"); got != want {
			t.Errorf("tableMatches(%q) = %v", table, got)
		}
	}
}

func TestPathActive(t *testing.T) {
	for status, want := range map[string]bool{
		"0 8192 multipath 2 0 0 0 1 1 A 0 1 0 259:1 A 0": true,
		"0 8192 multipath 2 0 0 0 1 1 E 0 1 0 259:1 F 1": false,
		"0 8192 multipath 2 0 0 0 1 1 A 0 1 0 259:2 A 0": false, // another device
		"": false,
	} {
		if got := PathActive(status, "259:1"); got != want {
			t.Errorf("PathActive(%q) = %v", status, got)
		}
	}
}
