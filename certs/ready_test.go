package certs

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	testingclock "k8s.io/utils/clock/testing"
)

func TestReadyCheck(t *testing.T) {
	o := testOptions(t0)
	data := validData(t, o)
	other := validData(t, o)
	serving, _ := parseCerts(data[KeyCert])
	tests := []struct {
		name  string
		files map[string][]byte // nil: nothing written
		now   time.Time
		want  string // "" means ready
	}{
		{"nothing written", nil, t0, "serving certificate not written yet"},
		{"valid", map[string][]byte{KeyCert: data[KeyCert], KeyKey: data[KeyKey]}, t0, ""},
		{"key does not match", map[string][]byte{KeyCert: data[KeyCert], KeyKey: other[KeyKey]}, t0, "private key does not match public key"},
		{"key missing", map[string][]byte{KeyCert: data[KeyCert]}, t0, "serving key not written yet"},
		{"expired", map[string][]byte{KeyCert: data[KeyCert], KeyKey: data[KeyKey]}, serving[0].NotAfter, "is not valid now"},
		{"not yet valid", map[string][]byte{KeyCert: data[KeyCert], KeyKey: data[KeyKey]}, t0.Add(-time.Hour), "is not valid now"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			for name, b := range tc.files {
				if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			err := ReadyCheck(dir, testingclock.NewFakePassiveClock(tc.now))(nil)
			if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
				t.Fatalf("ReadyCheck = %v, want %q", err, tc.want)
			}
		})
	}
}
