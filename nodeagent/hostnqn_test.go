package nodeagent

import (
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

func TestEnsureHostNQN(t *testing.T) {
	root := t.TempDir()
	nqn, created, err := EnsureHostNQN(root, DefaultHostNQNPath)
	if err != nil || !created || !strings.HasPrefix(nqn, "nqn.2014-08.org.nvmexpress:uuid:") {
		t.Fatalf("first call: %q created=%v err=%v", nqn, created, err)
	}
	again, created, err := EnsureHostNQN(root, DefaultHostNQNPath)
	if err != nil || created || again != nqn {
		t.Fatalf("second call: %q created=%v err=%v; want the stored %q", again, created, err, nqn)
	}
	info, err := os.Stat(filepath.Join(root, DefaultHostNQNPath))
	if err != nil || info.Mode().Perm() != 0o644 {
		t.Fatalf("stored file: %v %v", info, err)
	}
	// The host's own NQN is used as it is.
	own := t.TempDir()
	path := filepath.Join(own, "etc/nvme/hostnqn")
	_ = os.MkdirAll(filepath.Dir(path), 0o755)
	if err := os.WriteFile(path, []byte("nqn.2014-08.org.nvmexpress:uuid:4c4c4544-0031-4d10-8051-b4c04f4d3732\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got, created, err := EnsureHostNQN(own, DefaultHostNQNPath); err != nil || created || got != "nqn.2014-08.org.nvmexpress:uuid:4c4c4544-0031-4d10-8051-b4c04f4d3732" {
		t.Fatalf("existing: %q %v %v", got, created, err)
	}
	// An invalid one is an error, not replaced.
	if err := os.WriteFile(path, []byte("not an nqn\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := EnsureHostNQN(own, DefaultHostNQNPath); err == nil || !strings.Contains(err.Error(), "must look like") {
		t.Fatalf("invalid existing NQN: %v", err)
	}
	if b, _ := os.ReadFile(path); string(b) != "not an nqn\n" {
		t.Fatalf("invalid file was replaced: %q", b)
	}
}

func TestEnsureHostNQNConcurrent(t *testing.T) {
	root := t.TempDir()
	var wg sync.WaitGroup
	got := make([]string, 8)
	for i := range got {
		wg.Go(func() {
			nqn, _, err := EnsureHostNQN(root, DefaultHostNQNPath)
			if err != nil {
				t.Error(err)
			}
			got[i] = nqn
		})
	}
	wg.Wait()
	for _, n := range got {
		if n != got[0] {
			t.Fatalf("concurrent callers got different NQNs: %q", got)
		}
	}
}

func TestValidateHostNQN(t *testing.T) {
	for nqn, ok := range map[string]bool{
		"nqn.2014-08.org.nvmexpress:uuid:4c4c4544-0031-4d10-8051-b4c04f4d3732": true,
		"nqn.2026-11.dev.example:node-a":                                       true,
		"nqn.2014-08.org.nvmexpress":                                           false,
		`nqn.2014-08.org.nvmexpress:uuid:x" ; /system reboot`:                  false,
		"nqn.2014-08.org.nvmexpress:uuid:x\n":                                  false,
		"iqn.2001-04.com.example:storage":                                      false,
		"nqn.2014-08.org.nvmexpress:" + strings.Repeat("x", 200):               false,
	} {
		if err := ValidateHostNQN(nqn); (err == nil) != ok {
			t.Errorf("ValidateHostNQN(%q) = %v, want ok=%v", nqn, err, ok)
		}
	}
}
