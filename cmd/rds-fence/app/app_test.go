package app

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/go-logr/logr"
	"golang.org/x/crypto/ssh"

	"github.com/rds-fence/rds-fence/rds"
)

func TestControllerFlags(t *testing.T) {
	cases := []struct {
		name    string
		args    []string
		wantErr []string
	}{
		{"nothing", nil, []string{"--rds-address is required", "--rds-key-file is required", "host key must be pinned"}},
		{"no host key", []string{"--rds-address=10.0.0.1:22", "--rds-key-file=/k"}, []string{"host key must be pinned"}},
		{"bad prefix", []string{"--rds-address=10.0.0.1:22", "--rds-key-file=/k", "--rds-host-key=x", "--slot-prefix=PVC_"}, []string{"slot prefix"}},
		{"ok", []string{"--rds-address=10.0.0.1:22", "--rds-key-file=/k", "--rds-host-key=x"}, nil},
		{"insecure opt-in", []string{"--rds-address=10.0.0.1:22", "--rds-key-file=/k", "--rds-insecure-ignore-host-key"}, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			o, _, err := ParseControllerFlags(c.args, "v1")
			if len(c.wantErr) == 0 {
				if err != nil {
					t.Fatal(err)
				}
				if o.Driver.TargetAddress != "10.0.0.1" || o.Driver.IDs.BasePath != "/storage-pool/kubernetes-volumes" {
					t.Fatalf("defaults not applied: %+v", o.Driver)
				}
				return
			}
			for _, w := range c.wantErr {
				if err == nil || !strings.Contains(err.Error(), w) {
					t.Fatalf("error %v does not mention %q", err, w)
				}
			}
		})
	}
}

func TestSimulatorFlags(t *testing.T) {
	_, err := ParseSimulatorFlags(nil)
	for _, w := range []string{"--root", "--host-key", "--authorized-keys"} {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Fatalf("error %v does not mention %s", err, w)
		}
	}
}

// The rds-sim wiring creates its host key (mode 0600) and serves a client
// built by the controller's wiring: authorized key, pinned host key.
func TestSimulatorAndControllerWiringConnect(t *testing.T) {
	dir := t.TempDir()
	clientKey := filepath.Join(dir, "client")
	signer, err := loadOrCreateSigner(clientKey, true)
	if err != nil {
		t.Fatal(err)
	}
	authorized := filepath.Join(dir, "authorized_keys")
	if err := os.WriteFile(authorized, ssh.MarshalAuthorizedKey(signer.PublicKey()), 0o600); err != nil {
		t.Fatal(err)
	}
	hostKeyFile := filepath.Join(dir, "host")
	so, err := ParseSimulatorFlags([]string{"--listen=127.0.0.1:0", "--root=" + filepath.Join(dir, "root"),
		"--host-key=" + hostKeyFile, "--create-host-key", "--authorized-keys=" + authorized})
	if err != nil {
		t.Fatal(err)
	}
	srv, hostKey, err := StartSimulator(so)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	if fi, err := os.Stat(hostKeyFile); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("host key file: %v %v", fi, err)
	}
	co, _, err := ParseControllerFlags([]string{"--rds-address=" + srv.Addr(), "--rds-key-file=" + clientKey,
		"--rds-host-key=" + string(ssh.MarshalAuthorizedKey(hostKey))}, "test")
	if err != nil {
		t.Fatal(err)
	}
	client, err := co.RDS.NewClient(logr.Discard(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = client.Close() })
	if err := client.Ping(t.Context()); err != nil {
		t.Fatalf("ping through the wired client: %v", err)
	}
	// A key that is not in authorized_keys is refused, like a real RDS does.
	other := filepath.Join(dir, "other")
	if _, err := loadOrCreateSigner(other, true); err != nil {
		t.Fatal(err)
	}
	co.RDS.KeyFile = other
	stranger, err := co.RDS.NewClient(logr.Discard(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = stranger.Close() })
	if err := stranger.Ping(t.Context()); !errors.Is(err, rds.ErrUnreachable) || !strings.Contains(err.Error(), "unable to authenticate") {
		t.Fatalf("unauthorized key = %v, want an authentication failure", err)
	}
}
