package rdssim

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"
)

// The fabric endpoint stands in for the RDS's NVMe/TCP listener on hosts
// without NVMe support (the loop transport): a node "connects" to a
// subsystem NQN with its host NQN, and the simulator applies the same
// fence as Connect. A connection carries one request line and one answer:
//
//	CONNECT <subsystem-nqn> <host-nqn>\n  ->  OK <backing file path>\n
//	                                       |  ERR <reason>\n
//
// The node attaches the backing file itself (a loop device), which only
// works on the simulator's own machine: it is a test and local-environment
// transport, not a storage protocol.

// ConnectNQN is Connect by subsystem NQN and target port, as an NVMe/TCP
// connect addresses a disk.
func (s *Simulator) ConnectNQN(subsystemNQN, hostNQN string, port int) (string, error) {
	s.mu.Lock()
	slot := ""
	for _, d := range s.disks {
		if d.nqn == subsystemNQN {
			if d.port != 0 && port != 0 && d.port != port {
				s.mu.Unlock()
				return "", fmt.Errorf("%w: subsystem %q is exported on port %d, not %d", ErrConnectRefused, subsystemNQN, d.port, port)
			}
			slot = d.slot
		}
	}
	s.mu.Unlock()
	if slot == "" {
		return "", fmt.Errorf("%w: no subsystem %q", ErrConnectRefused, subsystemNQN)
	}
	return s.Connect(slot, hostNQN)
}

// FabricServer serves the fabric endpoint.
type FabricServer struct {
	sim  *Simulator
	lis  net.Listener
	port int
	wg   sync.WaitGroup
}

// ServeFabric answers fabric requests on lis until Close.
func ServeFabric(sim *Simulator, lis net.Listener) *FabricServer {
	f := &FabricServer{sim: sim, lis: lis}
	if a, ok := lis.Addr().(*net.TCPAddr); ok {
		f.port = a.Port
	}
	f.wg.Go(f.accept)
	return f
}

// Addr is the listening address.
func (f *FabricServer) Addr() string { return f.lis.Addr().String() }

// Close stops serving.
func (f *FabricServer) Close() error {
	err := f.lis.Close()
	f.wg.Wait()
	return err
}

func (f *FabricServer) accept() {
	for {
		conn, err := f.lis.Accept()
		if err != nil {
			return
		}
		f.wg.Go(func() { f.serve(conn) })
	}
}

func (f *FabricServer) serve(conn net.Conn) {
	defer func() { _ = conn.Close() }()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return
	}
	fields := strings.Fields(line)
	if len(fields) != 3 || fields[0] != "CONNECT" {
		_, _ = fmt.Fprintf(conn, "ERR malformed request %q: want CONNECT <subsystem-nqn> <host-nqn>\n", strings.TrimSpace(line))
		return
	}
	path, err := f.sim.ConnectNQN(fields[1], fields[2], f.port)
	if err != nil {
		_, _ = fmt.Fprintf(conn, "ERR %s\n", strings.ReplaceAll(err.Error(), "\n", " "))
		return
	}
	_, _ = fmt.Fprintf(conn, "OK %s\n", path)
}

// ErrFenced: the storage refused the host (its fence admits another host).
var ErrFenced = errors.New("the storage refused the host")

// FabricConnect asks a fabric endpoint at addr to connect hostNQN to the
// subsystem and returns the backing file to attach. A refusal wraps
// ErrFenced with the storage's reason.
func FabricConnect(ctx context.Context, addr, subsystemNQN, hostNQN string) (string, error) {
	if strings.ContainsAny(subsystemNQN+hostNQN, " \t\r\n") {
		return "", fmt.Errorf("NQNs %q / %q must not contain white space", subsystemNQN, hostNQN)
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return "", fmt.Errorf("connecting to the storage at %s: %w", addr, err)
	}
	defer func() { _ = conn.Close() }()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	if _, err := fmt.Fprintf(conn, "CONNECT %s %s\n", subsystemNQN, hostNQN); err != nil {
		return "", fmt.Errorf("connecting to the storage at %s: %w", addr, err)
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("reading the storage's answer from %s: %w", addr, err)
	}
	line = strings.TrimSpace(line)
	switch {
	case strings.HasPrefix(line, "OK "):
		return strings.TrimPrefix(line, "OK "), nil
	case strings.HasPrefix(line, "ERR "):
		return "", fmt.Errorf("%w: %s", ErrFenced, strings.TrimPrefix(line, "ERR "))
	}
	return "", fmt.Errorf("unexpected answer %q from the storage at %s", line, addr)
}
