package nodeagent

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/google/uuid"
)

// DefaultHostNQNPath is where nvme-cli and the kernel tooling keep the
// host NQN.
const DefaultHostNQNPath = "/etc/nvme/hostnqn"

// maxNQNLen is the NVMe limit on an NQN (223 bytes).
const maxNQNLen = 223

// ValidateHostNQN checks the shape of a host NQN: "nqn." followed by a
// date-and-domain or the "2014-08.org.nvmexpress:uuid:" form, printable,
// no spaces or quotes (it ends up in a RouterOS command and an
// annotation), at most 223 bytes.
func ValidateHostNQN(nqn string) error {
	switch {
	case !strings.HasPrefix(nqn, "nqn.") || !strings.Contains(nqn, ":"):
		return fmt.Errorf("host NQN %q must look like nqn.yyyy-mm.reverse-domain:identifier", nqn)
	case len(nqn) > maxNQNLen:
		return fmt.Errorf("host NQN is %d bytes, more than the NVMe limit of %d", len(nqn), maxNQNLen)
	}
	for _, r := range nqn {
		if r <= ' ' || r > '~' || r == '"' || r == '\\' || r == '\'' {
			return fmt.Errorf("host NQN %q holds a character that is not allowed (%q)", nqn, r)
		}
	}
	return nil
}

// EnsureHostNQN returns the host NQN stored at path (under root, "" for
// the real root), creating a stable one (nqn.2014-08.org.nvmexpress:uuid:
// with a random UUID) when the host has none, so the node keeps its
// identity across restarts. A file that exists but holds an invalid NQN is
// an error, never silently replaced: another tool may depend on it.
func EnsureHostNQN(root, path string) (nqn string, created bool, err error) {
	full := filepath.Join(root, path)
	b, err := os.ReadFile(full)
	switch {
	case err == nil && strings.TrimSpace(string(b)) != "":
		nqn = strings.TrimSpace(string(b))
		if err := ValidateHostNQN(nqn); err != nil {
			return "", false, fmt.Errorf("%s: %w", full, err)
		}
		return nqn, false, nil
	case err != nil && !errors.Is(err, fs.ErrNotExist):
		return "", false, fmt.Errorf("reading the host NQN: %w", err)
	}
	nqn = "nqn.2014-08.org.nvmexpress:uuid:" + uuid.NewString()
	if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
		return "", false, fmt.Errorf("creating %s: %w", filepath.Dir(full), err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(full), ".hostnqn-")
	if err != nil {
		return "", false, fmt.Errorf("writing the host NQN: %w", err)
	}
	defer func() { _ = os.Remove(tmp.Name()) }()
	if _, err := tmp.WriteString(nqn + "\n"); err != nil {
		_ = tmp.Close()
		return "", false, fmt.Errorf("writing the host NQN: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		_ = tmp.Close()
		return "", false, fmt.Errorf("writing the host NQN: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return "", false, err
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return "", false, err
	}
	// Link, not rename: a file another process created meanwhile wins.
	if err := os.Link(tmp.Name(), full); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return EnsureHostNQN(root, path)
		}
		return "", false, fmt.Errorf("writing the host NQN: %w", err)
	}
	return nqn, true, nil
}
