package simtest

import (
	"crypto/ed25519"
	"crypto/rand"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"golang.org/x/crypto/ssh"

	"github.com/rds-fence/rds-fence/rds"
	"github.com/rds-fence/rds-fence/rds/rdssim"
)

// Env is a running simulator and the keys to reach it.
type Env struct {
	Sim        *rdssim.Simulator
	Server     *rdssim.Server
	HostKey    ssh.Signer
	ClientKey  ssh.Signer
	Options    rdssim.Options
	ServerOpts rdssim.ServerOptions
}

// NewSigner returns a fresh ed25519 SSH key.
func NewSigner(tb testing.TB) ssh.Signer {
	tb.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	s, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

// Start runs a simulator rooted in a temporary directory on 127.0.0.1. The
// server is closed when the test ends. opts.Root, when empty, is a TempDir.
func Start(tb testing.TB, opts rdssim.Options, srvOpts rdssim.ServerOptions) *Env {
	tb.Helper()
	if opts.Root == "" {
		opts.Root = tb.TempDir()
	}
	sim, err := rdssim.New(opts)
	if err != nil {
		tb.Fatal(err)
	}
	e := &Env{Sim: sim, HostKey: NewSigner(tb), ClientKey: NewSigner(tb), Options: opts}
	if srvOpts.Address == "" {
		srvOpts.Address = "127.0.0.1:0"
	}
	srvOpts.HostKey = e.HostKey
	srvOpts.AuthorizedKeys = append(srvOpts.AuthorizedKeys, e.ClientKey.PublicKey())
	e.ServerOpts = srvOpts
	e.Server, err = rdssim.Serve(sim, srvOpts)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = e.Server.Close() })
	return e
}

// Config returns a client configuration that pins the simulator's host key.
// Backoff is short so tests of reconnection run quickly.
func (e *Env) Config() rds.Config {
	return rds.Config{
		Address:         e.Server.Addr(),
		User:            "admin",
		Signer:          e.ClientKey,
		HostKeyCallback: ssh.FixedHostKey(e.HostKey.PublicKey()),
		CommandTimeout:  10 * time.Second,
		DialTimeout:     5 * time.Second,
		MinBackoff:      20 * time.Millisecond,
		MaxBackoff:      200 * time.Millisecond,
		Logger:          logr.Discard(),
	}
}

// Client returns a connected-on-demand client closed when the test ends.
func (e *Env) Client(tb testing.TB, mutate ...func(*rds.Config)) *rds.Client {
	tb.Helper()
	cfg := e.Config()
	for _, m := range mutate {
		m(&cfg)
	}
	c, err := rds.NewClient(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = c.Close() })
	return c
}
