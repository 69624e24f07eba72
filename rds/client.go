package rds

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"golang.org/x/crypto/ssh"
)

// Config configures a Client. Zero durations and counts take the defaults
// named on each field.
type Config struct {
	// Address is host:port of the RDS SSH service.
	Address string
	// User is the RouterOS user the driver logs in as.
	User string
	// Signer is the private key used for public-key authentication.
	Signer ssh.Signer
	// HostKeyCallback verifies the RDS host key; build it with
	// HostKeyCallback. Required.
	HostKeyCallback ssh.HostKeyCallback
	// MaxSessions caps concurrent exec sessions on the one connection
	// (default 8): appliances limit sessions per connection.
	MaxSessions int
	// CommandTimeout bounds one command, including the wait for a free
	// session (default 30s). A shorter context deadline wins.
	CommandTimeout time.Duration
	// DialTimeout bounds TCP connect plus SSH handshake (default 10s).
	DialTimeout time.Duration
	// KeepAliveInterval is how often a dead connection is probed for
	// (default 15s; negative disables).
	KeepAliveInterval time.Duration
	// MinBackoff and MaxBackoff bound the delay between failed dials
	// (defaults 200ms and 30s, doubling).
	MinBackoff, MaxBackoff time.Duration
	// OnReconnect, when set, is called in its own goroutine each time a
	// connection is established after an earlier one was lost.
	OnReconnect func()
	// Logger receives structured logs; commands are logged at V(4).
	Logger logr.Logger
}

func (c *Config) defaults() {
	if c.MaxSessions <= 0 {
		c.MaxSessions = 8
	}
	if c.CommandTimeout <= 0 {
		c.CommandTimeout = 30 * time.Second
	}
	if c.DialTimeout <= 0 {
		c.DialTimeout = 10 * time.Second
	}
	if c.KeepAliveInterval == 0 {
		c.KeepAliveInterval = 15 * time.Second
	}
	if c.MinBackoff <= 0 {
		c.MinBackoff = 200 * time.Millisecond
	}
	if c.MaxBackoff <= 0 {
		c.MaxBackoff = 30 * time.Second
	}
}

// Client runs RouterOS commands over one long-lived SSH connection, one exec
// session per command, up to MaxSessions at once. It connects lazily, and
// after the connection dies it reconnects on the next command, with
// exponential backoff between failed dials (while backing off, commands fail
// fast with ErrUnreachable instead of piling up). Safe for concurrent use.
type Client struct {
	cfg Config
	log logr.Logger
	sem chan struct{}

	mu        sync.Mutex
	conn      *ssh.Client
	dialing   chan struct{} // closed when the in-flight dial ends
	failures  int
	nextDial  time.Time
	lastErr   error
	connected bool // a connection has been up at least once
	closed    bool
}

// NewClient validates cfg and returns a client. It does not connect.
func NewClient(cfg Config) (*Client, error) {
	cfg.defaults()
	if cfg.Address == "" {
		return nil, invalidf("RDS address is required")
	}
	if _, _, err := net.SplitHostPort(cfg.Address); err != nil {
		return nil, invalidf("RDS address %q: %v", cfg.Address, err)
	}
	if cfg.User == "" || cfg.Signer == nil {
		return nil, invalidf("RDS user and private key are required")
	}
	if cfg.HostKeyCallback == nil {
		return nil, invalidf("RDS host key callback is required (see HostKeyCallback)")
	}
	return &Client{cfg: cfg, log: cfg.Logger.WithName("rds"), sem: make(chan struct{}, cfg.MaxSessions)}, nil
}

// Connected reports whether a connection is currently up.
func (c *Client) Connected() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.conn != nil
}

// Close closes the connection; later commands fail with ErrUnreachable.
func (c *Client) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	if c.conn != nil {
		err := c.conn.Close()
		c.conn = nil
		return err
	}
	return nil
}

func unreachable(format string, args ...any) error {
	return &CommandError{Kind: ErrUnreachable, Output: fmt.Sprintf(format, args...)}
}

// getConn returns the live connection, dialing (once, shared by all
// waiters) when there is none and the backoff allows it.
func (c *Client) getConn(ctx context.Context) (*ssh.Client, error) {
	c.mu.Lock()
	for {
		switch {
		case c.closed:
			c.mu.Unlock()
			return nil, unreachable("client closed")
		case c.conn != nil:
			conn := c.conn
			c.mu.Unlock()
			return conn, nil
		case c.dialing != nil:
			ch := c.dialing
			c.mu.Unlock()
			select {
			case <-ch:
			case <-ctx.Done():
				return nil, unreachable("waiting for connection to %s: %v", c.cfg.Address, ctx.Err())
			}
			c.mu.Lock()
			continue
		}
		if wait := time.Until(c.nextDial); wait > 0 {
			err := c.lastErr
			c.mu.Unlock()
			return nil, unreachable("cannot connect to %s: %v (next attempt in %s)", c.cfg.Address, err, wait.Round(time.Millisecond))
		}
		ch := make(chan struct{})
		c.dialing = ch
		c.mu.Unlock()

		conn, err := c.dial(ctx)

		c.mu.Lock()
		c.dialing = nil
		close(ch)
		if err != nil && ctx.Err() != nil {
			// The caller gave up; that says nothing about the RDS.
			c.mu.Unlock()
			return nil, unreachable("connecting to %s: %v", c.cfg.Address, ctx.Err())
		}
		if err != nil {
			c.failures++
			c.lastErr = err
			c.nextDial = time.Now().Add(c.backoff(c.failures))
			c.mu.Unlock()
			c.log.Error(err, "cannot connect to RDS", "address", c.cfg.Address, "failures", c.failures)
			if errors.Is(err, errHostKey) {
				return nil, &CommandError{Kind: ErrUnreachable, Output: err.Error()}
			}
			return nil, unreachable("cannot connect to %s: %v", c.cfg.Address, err)
		}
		if c.closed {
			c.mu.Unlock()
			_ = conn.Close()
			return nil, unreachable("client closed")
		}
		reconnect := c.connected
		c.conn, c.connected, c.failures, c.lastErr = conn, true, 0, nil
		c.mu.Unlock()
		c.log.Info("connected to RDS", "address", c.cfg.Address, "reconnect", reconnect)
		go c.watch(conn)
		if reconnect && c.cfg.OnReconnect != nil {
			go c.cfg.OnReconnect()
		}
		return conn, nil
	}
}

func (c *Client) backoff(failures int) time.Duration {
	d := c.cfg.MinBackoff
	for i := 1; i < failures && d < c.cfg.MaxBackoff; i++ {
		d *= 2
	}
	return min(d, c.cfg.MaxBackoff)
}

// errHostKey marks a failed host key check so that it is reported as such.
var errHostKey = errors.New("RDS host key verification failed")

func (c *Client) dial(ctx context.Context) (*ssh.Client, error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.DialTimeout)
	defer cancel()
	deadline, _ := ctx.Deadline()
	hostKeyErr := error(nil)
	cfg := &ssh.ClientConfig{
		User: c.cfg.User,
		Auth: []ssh.AuthMethod{ssh.PublicKeys(c.cfg.Signer)},
		HostKeyCallback: func(host string, remote net.Addr, key ssh.PublicKey) error {
			if err := c.cfg.HostKeyCallback(host, remote, key); err != nil {
				hostKeyErr = err
				return err
			}
			return nil
		},
		HostKeyAlgorithms: hostKeyAlgorithms(c.cfg.HostKeyCallback, c.cfg.Address),
	}
	var d net.Dialer
	tcp, err := d.DialContext(ctx, "tcp", c.cfg.Address)
	if err != nil {
		return nil, err
	}
	_ = tcp.SetDeadline(deadline) // bounds the handshake too
	sc, chans, reqs, err := ssh.NewClientConn(tcp, c.cfg.Address, cfg)
	if err != nil {
		_ = tcp.Close()
		if hostKeyErr != nil {
			return nil, fmt.Errorf("%w: %v", errHostKey, hostKeyErr)
		}
		return nil, err
	}
	_ = tcp.SetDeadline(time.Time{})
	return ssh.NewClient(sc, chans, reqs), nil
}

// watch forgets conn once it dies, probing it with keepalives so that a
// silently dead TCP connection is noticed.
func (c *Client) watch(conn *ssh.Client) {
	done := make(chan struct{})
	go func() {
		_ = conn.Wait()
		close(done)
	}()
	var tick <-chan time.Time
	if c.cfg.KeepAliveInterval > 0 {
		t := time.NewTicker(c.cfg.KeepAliveInterval)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-done:
			c.drop(conn, errors.New("connection closed"))
			return
		case <-tick:
			ok := make(chan error, 1)
			go func() { _, _, err := conn.SendRequest("keepalive@openssh.com", true, nil); ok <- err }()
			select {
			case err := <-ok:
				if err != nil {
					c.drop(conn, err)
				}
			case <-time.After(c.cfg.KeepAliveInterval):
				c.drop(conn, errors.New("keepalive timed out"))
			case <-done:
			}
		}
	}
}

// drop closes conn and forgets it if it is still the current one.
func (c *Client) drop(conn *ssh.Client, why error) {
	c.mu.Lock()
	current := c.conn == conn
	if current {
		c.conn = nil
	}
	c.mu.Unlock()
	_ = conn.Close()
	if current {
		c.log.Info("RDS connection lost", "address", c.cfg.Address, "reason", why.Error())
	}
}

// run executes one command and returns its stdout. RouterOS errors printed
// on stdout are classified whatever the exit status.
func (c *Client) run(ctx context.Context, cmd *command) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.CommandTimeout)
	defer cancel()
	start := time.Now()
	select {
	case c.sem <- struct{}{}:
	case <-ctx.Done():
		return "", &CommandError{Kind: ErrUnreachable, Command: cmd.verb,
			Output: fmt.Sprintf("no free SSH session within %s (limit %d)", time.Since(start).Round(time.Millisecond), c.cfg.MaxSessions)}
	}
	defer func() { <-c.sem }()

	sess, err := c.session(ctx)
	if err != nil {
		return "", withCommand(err, cmd.verb)
	}
	defer func() { _ = sess.Close() }()
	var stdout, stderr bytes.Buffer
	sess.Stdout, sess.Stderr = &stdout, &stderr
	line := cmd.String()
	if err := sess.Start(line); err != nil {
		return "", &CommandError{Kind: ErrUnreachable, Command: cmd.verb, Output: "starting command: " + err.Error()}
	}
	done := make(chan error, 1)
	go func() { done <- sess.Wait() }()
	select {
	case err = <-done:
	case <-ctx.Done():
		_ = sess.Close()
		select {
		case <-done:
		case <-time.After(time.Second): // the connection does not even answer the close
			if conn := c.current(); conn != nil {
				c.drop(conn, errors.New("no answer to a session close"))
			}
		}
		return "", &CommandError{Kind: ErrUnreachable, Command: cmd.verb,
			Output: fmt.Sprintf("no answer within %s; the command may or may not have run", time.Since(start).Round(time.Millisecond))}
	}
	out := stdout.String()
	if stderr.Len() > 0 {
		out += "\n" + stderr.String()
	}
	c.log.V(4).Info("rds command", "command", line, "duration", time.Since(start), "exitErr", errString(err))
	if cerr := ClassifyOutput(out); cerr != nil {
		return "", withCommand(cerr, cmd.verb)
	}
	if err == nil && cmd.mutating() && !quietOutput(out) {
		// add/set/remove print nothing when they work: any text is a
		// failure this package does not know, never a success.
		return "", &CommandError{Kind: ErrCommandFailed, Command: cmd.verb, Output: firstLine(out)}
	}
	var exitErr *ssh.ExitError
	switch {
	case err == nil:
		return stdout.String(), nil
	case errors.As(err, &exitErr):
		msg := firstLine(out)
		if msg == "" {
			msg = fmt.Sprintf("exit status %d", exitErr.ExitStatus())
		}
		return "", &CommandError{Kind: ErrCommandFailed, Command: cmd.verb, Output: msg}
	default: // ExitMissingError, io.EOF: the connection died under the command
		return "", &CommandError{Kind: ErrUnreachable, Command: cmd.verb,
			Output: "connection lost during the command; it may or may not have run: " + err.Error()}
	}
}

// session opens an exec session. A dead connection is redialed once
// (nothing was sent yet, so the retry is safe); a session the RDS refuses
// for lack of resources (its own limit, or a slot it has not freed yet after
// a timed-out command) is retried with backoff until ctx is done; a
// connection that does not answer the open in time is dropped.
func (c *Client) session(ctx context.Context) (*ssh.Session, error) {
	redialed := false
	wait := 20 * time.Millisecond
	for {
		conn, err := c.getConn(ctx)
		if err != nil {
			return nil, err
		}
		type result struct {
			s   *ssh.Session
			err error
		}
		ch := make(chan result, 1)
		go func() {
			s, err := conn.NewSession()
			ch <- result{s, err}
		}()
		var r result
		select {
		case r = <-ch:
		case <-ctx.Done():
			c.drop(conn, errors.New("session open timed out"))
			go func() { // reap the late session, if any
				if r := <-ch; r.s != nil {
					_ = r.s.Close()
				}
			}()
			return nil, unreachable("the RDS did not open a session in time: %v", ctx.Err())
		}
		if r.err == nil {
			return r.s, nil
		}
		var refused *ssh.OpenChannelError
		if errors.As(r.err, &refused) && refused.Reason == ssh.ResourceShortage {
			select {
			case <-time.After(wait):
				wait = min(2*wait, 500*time.Millisecond)
				continue
			case <-ctx.Done():
				return nil, unreachable("RDS refused a new session (%s) until the deadline; lower the session limit", refused.Message)
			}
		}
		if errors.As(r.err, &refused) {
			return nil, unreachable("RDS refused a new session: %s", refused.Message)
		}
		c.drop(conn, r.err)
		if redialed {
			return nil, unreachable("opening session: %v", r.err)
		}
		redialed = true
	}
}

func withCommand(err error, verb string) error {
	var ce *CommandError
	if errors.As(err, &ce) && ce.Command == "" {
		cp := *ce
		cp.Command = verb
		return &cp
	}
	return err
}

// quietOutput reports whether a mutating command's output is empty or only
// the internal ID RouterOS may print for a new item ("*1A").
func quietOutput(out string) bool {
	t := strings.TrimSpace(out)
	if t == "" {
		return true
	}
	if t[0] != '*' || len(t) == 1 {
		return false
	}
	for _, r := range t[1:] {
		if !(r >= '0' && r <= '9' || r >= 'A' && r <= 'F' || r >= 'a' && r <= 'f') {
			return false
		}
	}
	return true
}

func (c *Client) current() *ssh.Client {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.conn
}

func firstLine(s string) string {
	for _, l := range bytes.Split([]byte(s), []byte("\n")) {
		if t := bytes.TrimSpace(l); len(t) > 0 {
			return string(t)
		}
	}
	return ""
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
