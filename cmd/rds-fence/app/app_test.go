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

func TestWebhookFlags(t *testing.T) {
	cases := []struct {
		name    string
		args    []string
		wantErr []string
	}{
		{"defaults", nil, nil},
		{"warn mode, cert-manager", []string{"--mode=warn", "--cert-mode=cert-manager", "--cert-ip=127.0.0.1"}, nil},
		{"bad values", []string{"--mode=audit", "--cert-mode=vault", "--kubevirt=maybe", "--cert-ip=localhost", "--port=0"},
			[]string{`unknown webhook mode "audit"`, `--cert-mode must be self-signed or cert-manager, got "vault"`,
				`--kubevirt must be auto, true or false, got "maybe"`, `--cert-ip "localhost" is not an IP address`, "--port 0 out of range"}},
		{"empty names", []string{"--secret="}, []string{"must not be empty"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			o, _, err := ParseWebhookFlags(c.args)
			if len(c.wantErr) == 0 {
				if err != nil {
					t.Fatal(err)
				}
				if o.Namespace != "rds-fence" || o.SecretName != "rds-fence-webhook-tls" || o.Port != 9443 || !o.LeaderElect {
					t.Fatalf("defaults not applied: %+v", o)
				}
				return
			}
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range c.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

func TestNodeFlags(t *testing.T) {
	t.Setenv("NODE_NAME", "")
	if _, _, err := ParseNodeFlags(nil, "v1"); err == nil || !strings.Contains(err.Error(), "--node-name") {
		t.Fatalf("no node name: %v", err)
	}
	t.Setenv("NODE_NAME", "worker-1")
	o, _, err := ParseNodeFlags(nil, "v1")
	if err != nil || o.CSI.NodeID != "worker-1" || o.HostNQNPath != "/etc/nvme/hostnqn" || o.CSI.Version != "v1" {
		t.Fatalf("defaults: %+v, %v", o, err)
	}
	if _, _, err := ParseNodeFlags([]string{"--topology-value=", "--host-nqn-reannotate=0s", "--transport=carrier-pigeon", "--nvme-ctrl-loss-tmo=-2"}, "v1"); err == nil || !strings.Contains(err.Error(), "--nvme-ctrl-loss-tmo") ||
		!strings.Contains(err.Error(), "--topology-value") || !strings.Contains(err.Error(), "--host-nqn-reannotate") || !strings.Contains(err.Error(), "carrier-pigeon") {
		t.Fatalf("bad values: %v", err)
	}
}
