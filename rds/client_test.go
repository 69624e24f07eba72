package rds_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/rds-fence/rds-fence/rds"
	"github.com/rds-fence/rds-fence/rds/rdssim"
	"github.com/rds-fence/rds-fence/rds/rdssim/simtest"
)

const slot = "pvc-0123456789abcdef0123456789ab"

func createOpts(s string, size int64) rds.CreateOptions {
	return rds.CreateOptions{Slot: s, FilePath: "/storage-pool/kubernetes-volumes/" + s + ".img", SizeBytes: size,
		NQN: "nqn.2000-02.com.mikrotik:" + s, Port: 4420}
}

func TestDiskLifecycleOverSSH(t *testing.T) {
	env := simtest.Start(t, rdssim.Options{PoolSize: 100 * rds.GiB}, rdssim.ServerOptions{})
	c := env.Client(t)
	ctx := t.Context()

	if err := c.CreateDisk(ctx, createOpts(slot, 3*rds.GiB/2)); err != nil {
		t.Fatalf("create: %v", err)
	}
	d, err := c.GetDisk(ctx, slot)
	if err != nil {
		t.Fatalf("get: %v", err)
	}
	want := rds.Disk{Slot: slot, Type: "file", FilePath: "/storage-pool/kubernetes-volumes/" + slot + ".img",
		Size: 3 * rds.GiB / 2, Exported: true, Port: 4420, NQN: "nqn.2000-02.com.mikrotik:" + slot}
	if *d != want {
		t.Fatalf("get = %+v, want %+v", *d, want)
	}
	info, _ := env.Sim.Disk(slot)
	if st, err := os.Stat(info.HostPath); err != nil || st.Size() != 3*rds.GiB/2 {
		t.Fatalf("backing file: %v %v", st, err)
	}
	if err := c.CreateDisk(ctx, createOpts(slot, rds.GiB)); !errors.Is(err, rds.ErrAlreadyExists) {
		t.Fatalf("second create = %v, want ErrAlreadyExists", err)
	}
	if err := c.ResizeDisk(ctx, slot, 2*rds.GiB); err != nil {
		t.Fatalf("resize: %v", err)
	}
	if d, _ := c.GetDisk(ctx, slot); d.Size != 2*rds.GiB {
		t.Fatalf("size after resize = %d", d.Size)
	}
	clone := "pvc-ffff456789abcdef0123456789ab"
	o := createOpts(clone, 2*rds.GiB)
	o.CopyFrom = slot
	if err := c.CreateDisk(ctx, o); err != nil {
		t.Fatalf("copy-from: %v", err)
	}
	list, err := c.ListDisks(ctx, "pvc-")
	if err != nil || len(list) != 2 {
		t.Fatalf("list = %v, %v", list, err)
	}
	capa, err := c.Capacity(ctx, "storage-pool")
	if err != nil || capa.Total != 100*rds.GiB || capa.Free != 96*rds.GiB {
		t.Fatalf("capacity = %+v, %v", capa, err)
	}
	if err := c.SetAllowedHost(ctx, slot, "nqn.2014-08.org.nvmexpress:uuid:node-a"); err != nil {
		t.Fatalf("set allowed host: %v", err)
	}
	if d, _ := c.GetDisk(ctx, slot); d.AllowedHost != "nqn.2014-08.org.nvmexpress:uuid:node-a" {
		t.Fatalf("allowed host = %q", d.AllowedHost)
	}
	for _, s := range []string{slot, clone} {
		if err := c.DeleteDisk(ctx, s, "/storage-pool/kubernetes-volumes/"+s+".img"); err != nil {
			t.Fatalf("delete %s: %v", s, err)
		}
	}
	if _, err := os.Stat(info.HostPath); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("backing file survived delete: %v", err)
	}
	if _, err := c.GetDisk(ctx, slot); !errors.Is(err, rds.ErrNotFound) {
		t.Fatalf("get after delete = %v, want ErrNotFound", err)
	}
	// Deleting again succeeds: both steps treat "no such item" as done.
	if err := c.DeleteDisk(ctx, slot, "/storage-pool/kubernetes-volumes/"+slot+".img"); err != nil {
		t.Fatalf("second delete: %v", err)
	}
}

func TestHostileValuesNeverReachTheRDS(t *testing.T) {
	env := simtest.Start(t, rdssim.Options{}, rdssim.ServerOptions{})
	c := env.Client(t)
	hostile := []string{
		`pvc-a"; /disk remove [find]; "`, `pvc-a;/system reboot`, `pvc-[/disk remove [find]]`,
		"pvc-a\n/disk remove [find]", `pvc-$x`, `pvc-a\"`, `pvc a`, `PVC-A`, ``, strings.Repeat("a", 33),
	}
	for _, h := range hostile {
		t.Run(h, func(t *testing.T) {
			checks := map[string]error{
				"create":    c.CreateDisk(t.Context(), createOpts(h, rds.GiB)),
				"resize":    c.ResizeDisk(t.Context(), h, rds.GiB),
				"allowHost": c.SetAllowedHost(t.Context(), h, ""),
				"delete":    c.DeleteDisk(t.Context(), h, "/storage-pool/x.img"),
			}
			_, checks["get"] = c.GetDisk(t.Context(), h)
			for op, err := range checks {
				if !errors.Is(err, rds.ErrInvalidArgument) || !strings.Contains(err.Error(), "slot") {
					t.Errorf("%s(%q) = %v, want ErrInvalidArgument naming the slot", op, h, err)
				}
			}
		})
	}
	for _, bad := range []rds.CreateOptions{
		func() rds.CreateOptions {
			o := createOpts(slot, rds.GiB)
			o.FilePath = `/storage-pool/x"; /disk remove [find]; ".img`
			return o
		}(),
		func() rds.CreateOptions {
			o := createOpts(slot, rds.GiB)
			o.FilePath = "/storage-pool/../etc/passwd"
			return o
		}(),
		func() rds.CreateOptions {
			o := createOpts(slot, rds.GiB)
			o.NQN = "nqn.2000-02.com.mikrotik:a;b"
			return o
		}(),
		func() rds.CreateOptions { o := createOpts(slot, rds.GiB); o.AllowedHost = "nqn.x$y"; return o }(),
		func() rds.CreateOptions { o := createOpts(slot, rds.GiB+1); return o }(),
	} {
		if err := c.CreateDisk(t.Context(), bad); !errors.Is(err, rds.ErrInvalidArgument) {
			t.Errorf("create %+v = %v, want ErrInvalidArgument", bad, err)
		}
	}
	if _, err := c.ListDisks(t.Context(), `pvc-"; /disk remove [find]`); !errors.Is(err, rds.ErrInvalidArgument) {
		t.Errorf("list with hostile prefix = %v", err)
	}
	if cmds := env.Sim.Commands(); len(cmds) != 0 {
		t.Fatalf("hostile input reached the RDS: %q", cmds)
	}
}

func TestCommandsRunConcurrently(t *testing.T) {
	env := simtest.Start(t, rdssim.Options{}, rdssim.ServerOptions{})
	env.Sim.SetLatency(100 * time.Millisecond)
	c := env.Client(t, func(cfg *rds.Config) { cfg.MaxSessions = 4 })
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			if err := c.Ping(t.Context()); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if peak := env.Server.PeakSessions(); peak < 2 || peak > 4 {
		t.Fatalf("peak concurrent sessions = %d, want 2..4 (concurrent, capped at MaxSessions)", peak)
	}
}

func TestUnreachableRDS(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close() // nothing listens there now
	env := simtest.Start(t, rdssim.Options{}, rdssim.ServerOptions{})
	c := env.Client(t, func(cfg *rds.Config) { cfg.Address = addr; cfg.MinBackoff = time.Hour })
	err = c.Ping(t.Context())
	if !errors.Is(err, rds.ErrUnreachable) || !strings.Contains(err.Error(), "cannot connect to "+addr) ||
		!strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("ping = %v, want ErrUnreachable naming the address and the refusal", err)
	}
	// While backing off, commands fail fast without dialing again.
	err = c.Ping(t.Context())
	if !errors.Is(err, rds.ErrUnreachable) || !strings.Contains(err.Error(), "next attempt in") {
		t.Fatalf("second ping = %v, want a fast failure naming the backoff", err)
	}
}

func TestWrongHostKeyIsRefused(t *testing.T) {
	env := simtest.Start(t, rdssim.Options{}, rdssim.ServerOptions{})
	impostor := simtest.NewSigner(t)
	c := env.Client(t, func(cfg *rds.Config) { cfg.HostKeyCallback = ssh.FixedHostKey(impostor.PublicKey()) })
	err := c.Ping(t.Context())
	if !errors.Is(err, rds.ErrUnreachable) || !strings.Contains(err.Error(), "host key verification failed") {
		t.Fatalf("ping = %v, want a host key verification failure", err)
	}
	if len(env.Sim.Commands()) != 0 {
		t.Fatal("a command ran over an unverified connection")
	}
	// The pinned-key callback names both fingerprints.
	cb, err := rds.HostKeyCallback(rds.HostKeyOptions{PinnedKey: string(ssh.MarshalAuthorizedKey(impostor.PublicKey()))}, logr.Discard())
	if err != nil {
		t.Fatal(err)
	}
	c2 := env.Client(t, func(cfg *rds.Config) { cfg.HostKeyCallback = cb })
	if err := c2.Ping(t.Context()); err == nil || !strings.Contains(err.Error(), "host key mismatch") ||
		!strings.Contains(err.Error(), ssh.FingerprintSHA256(impostor.PublicKey())) {
		t.Fatalf("pinned ping = %v, want a mismatch naming the pinned fingerprint", err)
	}
}

func TestHostKeyMustBeConfigured(t *testing.T) {
	if _, err := rds.HostKeyCallback(rds.HostKeyOptions{}, logr.Discard()); !errors.Is(err, rds.ErrInvalidArgument) ||
		!strings.Contains(err.Error(), "no RDS host key configured") {
		t.Fatalf("no host key = %v, want a refusal", err)
	}
	if _, err := rds.HostKeyCallback(rds.HostKeyOptions{InsecureIgnoreHostKey: true}, logr.Discard()); err != nil {
		t.Fatalf("explicit insecure opt-in = %v", err)
	}
	if _, err := rds.HostKeyCallback(rds.HostKeyOptions{KnownHostsFile: "/nonexistent/known_hosts"}, logr.Discard()); err == nil {
		t.Fatal("missing known_hosts file accepted")
	}
}

func TestOutOfSpaceLeavesNothing(t *testing.T) {
	env := simtest.Start(t, rdssim.Options{PoolSize: 10 * rds.GiB}, rdssim.ServerOptions{})
	c := env.Client(t)
	err := c.CreateDisk(t.Context(), createOpts(slot, 11*rds.GiB))
	if !errors.Is(err, rds.ErrOutOfSpace) || !strings.Contains(err.Error(), "not enough space") {
		t.Fatalf("create = %v, want ErrOutOfSpace with RouterOS' message", err)
	}
	if len(env.Sim.Disks()) != 0 {
		t.Fatalf("disks left behind: %v", env.Sim.Disks())
	}
	env.Sim.SetDiskFull(true)
	if err := c.CreateDisk(t.Context(), createOpts(slot, rds.GiB)); !errors.Is(err, rds.ErrOutOfSpace) {
		t.Fatalf("create on full disk = %v", err)
	}
}

func TestReconnectAfterDrop(t *testing.T) {
	env := simtest.Start(t, rdssim.Options{}, rdssim.ServerOptions{})
	var reconnects atomic.Int32
	c := env.Client(t, func(cfg *rds.Config) { cfg.OnReconnect = func() { reconnects.Add(1) } })
	if err := c.Ping(t.Context()); err != nil {
		t.Fatal(err)
	}
	env.Server.DropConnections()
	deadline := time.Now().Add(5 * time.Second)
	for c.Connected() && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if err := c.Ping(t.Context()); err != nil {
		t.Fatalf("ping after drop: %v", err)
	}
	for reconnects.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if reconnects.Load() != 1 {
		t.Fatalf("OnReconnect called %d times, want 1", reconnects.Load())
	}
}

func TestDropDuringCommandIsAmbiguousThenRetrySeesResult(t *testing.T) {
	env := simtest.Start(t, rdssim.Options{}, rdssim.ServerOptions{})
	c := env.Client(t)
	env.Server.DropConnectionOn("/disk add", 1)
	err := c.CreateDisk(t.Context(), createOpts(slot, rds.GiB))
	if !errors.Is(err, rds.ErrUnreachable) || !strings.Contains(err.Error(), "may or may not have run") {
		t.Fatalf("create = %v, want an ambiguous ErrUnreachable", err)
	}
	if err := c.CreateDisk(t.Context(), createOpts(slot, rds.GiB)); !errors.Is(err, rds.ErrAlreadyExists) {
		t.Fatalf("retry = %v, want ErrAlreadyExists (the first attempt did run)", err)
	}
}

func TestCommandTimeout(t *testing.T) {
	env := simtest.Start(t, rdssim.Options{}, rdssim.ServerOptions{})
	env.Sim.SetLatency(time.Second)
	c := env.Client(t, func(cfg *rds.Config) { cfg.CommandTimeout = 200 * time.Millisecond })
	err := c.Ping(t.Context())
	if !errors.Is(err, rds.ErrUnreachable) || !strings.Contains(err.Error(), "no answer within") {
		t.Fatalf("ping = %v, want a timeout", err)
	}
	var ce *rds.CommandError
	if !errors.As(err, &ce) || ce.Command != "/system identity print" {
		t.Fatalf("error does not name the command: %#v", err)
	}
}

func TestInjectedCommandFailure(t *testing.T) {
	env := simtest.Start(t, rdssim.Options{}, rdssim.ServerOptions{})
	c := env.Client(t)
	if err := c.CreateDisk(t.Context(), createOpts(slot, rds.GiB)); err != nil {
		t.Fatal(err)
	}
	env.Sim.FailCommands("/disk set", "failure: device is busy", 1)
	err := c.ResizeDisk(t.Context(), slot, 2*rds.GiB)
	if !errors.Is(err, rds.ErrCommandFailed) || !strings.Contains(err.Error(), "device is busy") {
		t.Fatalf("resize = %v, want ErrCommandFailed with the RouterOS message", err)
	}
	if d, _ := c.GetDisk(t.Context(), slot); d.Size != rds.GiB {
		t.Fatalf("failed resize changed the size to %d", d.Size)
	}
	if err := c.ResizeDisk(t.Context(), slot, 2*rds.GiB); err != nil {
		t.Fatalf("resize after the fault: %v", err)
	}
}

func TestSlotLengthLimit(t *testing.T) {
	env := simtest.Start(t, rdssim.Options{SlotMaxLen: 20}, rdssim.ServerOptions{})
	c := env.Client(t)
	err := c.CreateDisk(t.Context(), createOpts(slot, rds.GiB))
	if !errors.Is(err, rds.ErrInvalidArgument) || !strings.Contains(err.Error(), "longer than 20") {
		t.Fatalf("create with a 32-char slot on a 20-char RDS = %v", err)
	}
}

// A session the RDS refuses for lack of resources is retried until the
// command's deadline, so a server limit below the client's only slows down.
func TestServerSessionLimitIsWaitedFor(t *testing.T) {
	env := simtest.Start(t, rdssim.Options{}, rdssim.ServerOptions{MaxSessions: 1})
	env.Sim.SetLatency(50 * time.Millisecond)
	c := env.Client(t, func(cfg *rds.Config) { cfg.MaxSessions = 4 })
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			if err := c.Ping(context.Background()); err != nil {
				t.Errorf("ping = %v", err)
			}
		})
	}
	wg.Wait()
	if peak := env.Server.PeakSessions(); peak != 1 {
		t.Fatalf("peak sessions = %d, want the server's limit of 1", peak)
	}
}

// After a command times out the RDS may hold its session a while longer;
// the next command must wait for it rather than fail.
func TestSessionSlotAfterTimeout(t *testing.T) {
	env := simtest.Start(t, rdssim.Options{}, rdssim.ServerOptions{MaxSessions: 1})
	c := env.Client(t, func(cfg *rds.Config) { cfg.MaxSessions = 1; cfg.CommandTimeout = 2 * time.Second })
	env.Sim.SetLatency(500 * time.Millisecond)
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	if err := c.Ping(ctx); !errors.Is(err, rds.ErrUnreachable) {
		t.Fatalf("short ping = %v, want a timeout", err)
	}
	env.Sim.SetLatency(0)
	if err := c.Ping(t.Context()); err != nil {
		t.Fatalf("ping after a timed-out command = %v", err)
	}
}

// Mutating commands print nothing when they work; unknown text is a failure.
func TestUnknownOutputOfAMutationIsAFailure(t *testing.T) {
	env := simtest.Start(t, rdssim.Options{}, rdssim.ServerOptions{})
	c := env.Client(t)
	if err := c.CreateDisk(t.Context(), createOpts(slot, rds.GiB)); err != nil {
		t.Fatal(err)
	}
	env.Sim.FailCommands("/disk set", "Script Error: action cancelled", 1)
	err := c.SetAllowedHost(t.Context(), slot, "nqn.2014-08.org.nvmexpress:uuid:a")
	if !errors.Is(err, rds.ErrCommandFailed) || !strings.Contains(err.Error(), "action cancelled") {
		t.Fatalf("set with unknown output = %v, want ErrCommandFailed", err)
	}
}

// Go's SSH client prefers an RSA host key; a pinned ed25519 key must still
// verify against an RDS that has both.
func TestPinnedKeyWithSeveralHostKeys(t *testing.T) {
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	rsaSigner, _ := ssh.NewSignerFromKey(rsaKey)
	env := simtest.Start(t, rdssim.Options{}, rdssim.ServerOptions{ExtraHostKeys: []ssh.Signer{rsaSigner}})
	for name, pin := range map[string]ssh.PublicKey{"ed25519": env.HostKey.PublicKey(), "rsa": rsaSigner.PublicKey()} {
		t.Run(name, func(t *testing.T) {
			cb, err := rds.HostKeyCallback(rds.HostKeyOptions{PinnedKey: string(ssh.MarshalAuthorizedKey(pin))}, logr.Discard())
			if err != nil {
				t.Fatal(err)
			}
			c := env.Client(t, func(cfg *rds.Config) { cfg.HostKeyCallback = cb })
			if err := c.Ping(t.Context()); err != nil {
				t.Fatalf("ping with the %s key pinned = %v", name, err)
			}
		})
	}
	known := filepath.Join(t.TempDir(), "known_hosts")
	line := knownhosts.Line([]string{knownhosts.Normalize(env.Server.Addr())}, env.HostKey.PublicKey())
	if err := os.WriteFile(known, []byte(line+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cb, err := rds.HostKeyCallback(rds.HostKeyOptions{KnownHostsFile: known}, logr.Discard())
	if err != nil {
		t.Fatal(err)
	}
	if err := env.Client(t, func(cfg *rds.Config) { cfg.HostKeyCallback = cb }).Ping(t.Context()); err != nil {
		t.Fatalf("ping with known_hosts listing the ed25519 key = %v", err)
	}
}
