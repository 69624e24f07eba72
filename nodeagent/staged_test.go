package nodeagent

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestStagedStore(t *testing.T) {
	boot := filepath.Join(t.TempDir(), "boot_id")
	if err := os.WriteFile(boot, []byte("boot-1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s := StagedStore{Dir: filepath.Join(t.TempDir(), "state"), BootIDFile: boot}
	if got, err := s.List(); err != nil || len(got) != 0 {
		t.Fatalf("empty store: %v, %v", got, err)
	}
	a := Staged{VolumeID: "pvc-a", Target: Target{Address: "10.0.0.1", Port: 4420, SubsystemNQN: pfx + "a", HostNQN: hostA}, MapName: "rds-fence-pvc-a"}
	b := Staged{VolumeID: "pvc-b", Target: Target{Address: "10.0.0.1", Port: 4421, SubsystemNQN: pfx + "b", HostNQN: hostA}, MapName: "rds-fence-pvc-b"}
	for _, v := range []Staged{b, a, a} {
		if err := s.Put(v); err != nil {
			t.Fatal(err)
		}
	}
	a.Boot, b.Boot = "boot-1", "boot-1"
	got, err := s.List()
	if err != nil || len(got) != 2 || got[0] != a || got[1] != b {
		t.Fatalf("list = %+v, %v", got, err)
	}
	// a file that is not a record is reported, the others still listed
	if err := os.WriteFile(filepath.Join(s.Dir, "staged-000000000000000000000000.json"), []byte("{garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err = s.List()
	if err == nil || !strings.Contains(err.Error(), "garbage") || len(got) != 2 {
		t.Fatalf("with a bad record: %+v, %v", got, err)
	}
	if err := s.Delete(a.Target.SubsystemNQN); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(a.Target.SubsystemNQN); err != nil {
		t.Fatalf("delete twice: %v", err)
	}
	got, _ = s.List()
	if len(got) != 1 || got[0] != b {
		t.Fatalf("after delete: %+v", got)
	}
}

// TestStagedStoreDropsRecordsOfAnEarlierBoot: after a reboot nothing is
// attached, so the records are dropped instead of reconnected.
func TestStagedStoreDropsRecordsOfAnEarlierBoot(t *testing.T) {
	boot := filepath.Join(t.TempDir(), "boot_id")
	if err := os.WriteFile(boot, []byte("boot-1"), 0o600); err != nil {
		t.Fatal(err)
	}
	s := StagedStore{Dir: t.TempDir(), BootIDFile: boot}
	if err := s.Put(Staged{VolumeID: "pvc-a", Target: Target{SubsystemNQN: pfx + "a"}}); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(boot, []byte("boot-2"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got, err := s.List(); err != nil || len(got) != 0 {
		t.Fatalf("after a reboot: %+v, %v", got, err)
	}
	if files, _ := filepath.Glob(filepath.Join(s.Dir, "staged-*")); len(files) != 0 {
		t.Fatalf("stale records kept: %v", files)
	}
}
