package rdssim

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"golang.org/x/crypto/ssh"
)

// ServerOptions configure the simulator's SSH front end.
type ServerOptions struct {
	// Address to listen on, e.g. "127.0.0.1:0" (loopback only in tests).
	Address string
	// HostKey is the server's host key. Required, like on a real RDS.
	HostKey ssh.Signer
	// ExtraHostKeys are further host keys (e.g. RSA next to ed25519).
	ExtraHostKeys []ssh.Signer
	// AuthorizedKeys are the client keys allowed to log in. Required.
	AuthorizedKeys []ssh.PublicKey
	// MaxSessions caps concurrent exec sessions per connection (0: no cap).
	// Extra sessions are refused with "resource shortage".
	MaxSessions int
	Logger      logr.Logger
}

// Server is a RouterOS-compatible SSH server in front of a Simulator.
type Server struct {
	sim  *Simulator
	opts ServerOptions
	ln   net.Listener
	log  logr.Logger

	mu     sync.Mutex
	conns  map[*ssh.ServerConn]struct{}
	dropOn []failure // drop the connection after running a matching statement
	active int       // exec sessions running now
	peak   int       // most exec sessions ever running at once
	wg     sync.WaitGroup
	closed bool
}

// Serve starts serving sim over SSH on opts.Address.
// Simulator is the simulated RDS this server fronts.
func (s *Server) Simulator() *Simulator { return s.sim }

func Serve(sim *Simulator, opts ServerOptions) (*Server, error) {
	if opts.HostKey == nil {
		return nil, errors.New("rdssim: a host key is required")
	}
	if len(opts.AuthorizedKeys) == 0 {
		return nil, errors.New("rdssim: at least one authorized key is required")
	}
	ln, err := net.Listen("tcp", opts.Address)
	if err != nil {
		return nil, fmt.Errorf("rdssim: %w", err)
	}
	s := &Server{sim: sim, opts: opts, ln: ln, log: opts.Logger.WithName("rds-sim"), conns: map[*ssh.ServerConn]struct{}{}}
	s.wg.Add(1)
	go s.accept()
	return s, nil
}

// Addr is the listening address (host:port).
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Close stops listening and closes every connection.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	err := s.ln.Close()
	s.DropConnections()
	s.wg.Wait()
	return err
}

// DropConnections closes every open SSH connection, as a network outage or
// an RDS restart would.
func (s *Server) DropConnections() {
	s.mu.Lock()
	conns := make([]*ssh.ServerConn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		_ = c.Close()
	}
}

// DropConnectionOn closes the connection right after the next count
// statements containing match have run, before their answer is sent: the
// client cannot know whether the command took effect.
func (s *Server) DropConnectionOn(match string, count int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.dropOn = append(s.dropOn, failure{match: match, left: count})
}

func (s *Server) track(delta int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.active += delta
	s.peak = max(s.peak, s.active)
}

// PeakSessions is the largest number of commands that ran at once.
func (s *Server) PeakSessions() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.peak
}

func (s *Server) shouldDrop(line string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range s.dropOn {
		d := &s.dropOn[i]
		if d.left != 0 && strings.Contains(line, d.match) {
			if d.left > 0 {
				d.left--
			}
			return true
		}
	}
	return false
}

func (s *Server) config() *ssh.ServerConfig {
	cfg := &ssh.ServerConfig{
		PublicKeyCallback: func(meta ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
			for _, k := range s.opts.AuthorizedKeys {
				if bytes.Equal(k.Marshal(), key.Marshal()) {
					return &ssh.Permissions{}, nil
				}
			}
			return nil, fmt.Errorf("key %s not authorized for %s", ssh.FingerprintSHA256(key), meta.User())
		},
		ServerVersion: "SSH-2.0-ROSSSH",
	}
	cfg.AddHostKey(s.opts.HostKey)
	for _, k := range s.opts.ExtraHostKeys {
		cfg.AddHostKey(k)
	}
	return cfg
}

func (s *Server) accept() {
	defer s.wg.Done()
	cfg := s.config()
	for {
		nc, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.handleConn(nc, cfg)
		}()
	}
}

func (s *Server) handleConn(nc net.Conn, cfg *ssh.ServerConfig) {
	_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
	sc, chans, reqs, err := ssh.NewServerConn(nc, cfg)
	if err != nil {
		s.log.V(2).Info("ssh handshake failed", "remote", nc.RemoteAddr().String(), "err", err.Error())
		_ = nc.Close()
		return
	}
	_ = nc.SetDeadline(time.Time{})
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		_ = sc.Close()
		return
	}
	s.conns[sc] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.conns, sc)
		s.mu.Unlock()
		_ = sc.Close()
	}()
	go func() {
		for r := range reqs { // keepalive@openssh.com and friends
			if r.WantReply {
				_ = r.Reply(r.Type == "keepalive@openssh.com", nil)
			}
		}
	}()
	var active sync.WaitGroup
	sessions := make(chan struct{}, max(s.opts.MaxSessions, 1))
	for nch := range chans {
		if nch.ChannelType() != "session" {
			_ = nch.Reject(ssh.UnknownChannelType, "only session channels")
			continue
		}
		if s.opts.MaxSessions > 0 {
			select {
			case sessions <- struct{}{}:
			default:
				_ = nch.Reject(ssh.ResourceShortage, "too many sessions")
				continue
			}
		}
		ch, chReqs, err := nch.Accept()
		if err != nil {
			continue
		}
		active.Add(1)
		go func() {
			defer active.Done()
			s.handleSession(sc, ch, chReqs)
			if s.opts.MaxSessions > 0 {
				<-sessions
			}
		}()
	}
	active.Wait()
}

func (s *Server) handleSession(sc *ssh.ServerConn, ch ssh.Channel, reqs <-chan *ssh.Request) {
	defer func() { _ = ch.Close() }()
	for r := range reqs {
		switch r.Type {
		case "exec":
			var payload struct{ Command string }
			if err := ssh.Unmarshal(r.Payload, &payload); err != nil {
				_ = r.Reply(false, nil)
				return
			}
			_ = r.Reply(true, nil)
			s.track(+1)
			defer s.track(-1)
			if d := s.sim.latency(); d > 0 {
				time.Sleep(d)
			}
			out := s.sim.Exec(payload.Command)
			if s.shouldDrop(payload.Command) {
				_ = sc.Close()
				return
			}
			_, _ = ch.Write([]byte(out))
			status := make([]byte, 4)
			binary.BigEndian.PutUint32(status, 0) // RouterOS exits 0 even on failure
			_, _ = ch.SendRequest("exit-status", false, status)
			return
		case "pty-req", "env":
			if r.WantReply {
				_ = r.Reply(true, nil)
			}
		default: // interactive shells are not simulated
			if r.WantReply {
				_ = r.Reply(false, nil)
			}
		}
	}
}
