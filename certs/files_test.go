package certs

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestWriteFilesReplacesBothAtOnce(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "certs") // created on first write
	for i, content := range []string{"one", "two", "three"} {
		if err := writeFiles(dir, map[string][]byte{KeyCert: []byte(content + "-crt"), KeyKey: []byte(content + "-key")}); err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
		for _, name := range []string{KeyCert, KeyKey} {
			got, err := os.ReadFile(filepath.Join(dir, name))
			if want := content + "-" + strings.TrimPrefix(name, "tls."); err != nil || string(got) != want {
				t.Fatalf("write %d: %s = %q, %v; want %q", i, name, got, err, want)
			}
			if target, err := os.Readlink(filepath.Join(dir, name)); err != nil || target != filepath.Join(dataLink, name) {
				t.Fatalf("write %d: %s links to %q, %v", i, name, target, err)
			}
		}
		entries, _ := os.ReadDir(dir)
		var versions []string
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), versionPrefix) {
				versions = append(versions, e.Name())
			}
		}
		if len(versions) != 1 {
			t.Fatalf("write %d: %d versions left: %v", i, len(versions), versions)
		}
		if fi, err := os.Stat(filepath.Join(dir, KeyKey)); err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("write %d: tls.key mode %v, %v", i, fi.Mode(), err)
		}
	}
}

func TestWriteFilesReplacesPlainFiles(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, KeyCert), []byte("old"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := writeFiles(dir, map[string][]byte{KeyCert: []byte("new")}); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(filepath.Join(dir, KeyCert)); string(got) != "new" {
		t.Fatalf("tls.crt = %q", got)
	}
}
