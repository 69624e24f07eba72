package rds

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// Validation patterns for every value this package interpolates into a
// RouterOS command line. Values are validated here AND double-quoted with
// escapes when rendered, so that neither a bug in one layer nor a hostile
// volume name can smuggle in a second command (`;`, newline), a command
// substitution (`[...]`) or a variable expansion (`$x`).
var (
	slotPattern = regexp.MustCompile(`^[a-z0-9][a-z0-9-]*$`)
	pathPattern = regexp.MustCompile(`^/[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$`)
	nqnPattern  = regexp.MustCompile(`^nqn\.[0-9]{4}-[0-9]{2}\.[A-Za-z0-9.-]+(:[A-Za-z0-9._:-]+)?$`)
	poolPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)
)

// MaxSlotLen is the longest slot name this package sends. One RDS report
// limits slots to 32 characters; callers derive IDs that fit (see
// csi.SlotForName). The simulator's limit is configurable separately.
const MaxSlotLen = 32

// maxNQNLen is the NVMe specification's limit for an NQN (223 bytes).
const maxNQNLen = 223

// ValidateSlot checks a disk slot name: lower-case letters, digits and '-',
// starting with a letter or digit, at most MaxSlotLen characters.
func ValidateSlot(slot string) error {
	if len(slot) == 0 || len(slot) > MaxSlotLen || !slotPattern.MatchString(slot) {
		return invalidf("slot %q must be 1-%d characters of [a-z0-9-] starting with a letter or digit", slot, MaxSlotLen)
	}
	return nil
}

// ValidatePath checks an absolute backing-file path made of [A-Za-z0-9._-]
// segments; ".." segments are refused.
func ValidatePath(p string) error {
	if len(p) > 4096 || !pathPattern.MatchString(p) {
		return invalidf("file path %q must be absolute and made of [A-Za-z0-9._-] segments", p)
	}
	for _, seg := range strings.Split(p[1:], "/") {
		if seg == "." || seg == ".." {
			return invalidf("file path %q must not contain %q segments", p, seg)
		}
	}
	return nil
}

// ValidateNQN checks an NVMe Qualified Name (nqn.yyyy-mm.reverse-domain[:id]).
func ValidateNQN(nqn string) error {
	if len(nqn) > maxNQNLen || !nqnPattern.MatchString(nqn) {
		return invalidf("NQN %q is not of the form nqn.yyyy-mm.domain:identifier", nqn)
	}
	return nil
}

// ValidatePool checks a storage-pool mount-point name.
func ValidatePool(pool string) error {
	if len(pool) == 0 || len(pool) > 64 || !poolPattern.MatchString(pool) {
		return invalidf("pool %q must be made of [A-Za-z0-9._-]", pool)
	}
	return nil
}

func invalidf(format string, args ...any) error {
	return &CommandError{Kind: ErrInvalidArgument, Output: fmt.Sprintf(format, args...)}
}

// Quote renders s as a RouterOS double-quoted string. Backslash, double
// quote, '$' and '?' are escaped; control characters and non-ASCII bytes
// become \HH escapes, so the result is always one printable line.
func Quote(s string) string {
	var b strings.Builder
	b.Grow(len(s) + 2)
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '\\' || c == '"' || c == '$' || c == '?':
			b.WriteByte('\\')
			b.WriteByte(c)
		case c < 0x20 || c >= 0x7f:
			fmt.Fprintf(&b, "\\%02X", c)
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// command is one RouterOS CLI line, built from a verb and key=value
// arguments. Values are always quoted; the verb and keys are constants of
// this package, never caller input.
type command struct {
	verb string // e.g. "/disk add"
	args []string
}

func newCommand(verb string) *command { return &command{verb: verb} }

// set appends key="value".
func (c *command) set(key, value string) *command {
	c.args = append(c.args, key+"="+Quote(value))
	return c
}

// setRaw appends key=value for values produced by this package (numbers,
// yes/no, [find ...] expressions built from quoted parts).
func (c *command) setRaw(key, value string) *command {
	c.args = append(c.args, key+"="+value)
	return c
}

// arg appends a positional argument built by this package.
func (c *command) arg(a string) *command {
	c.args = append(c.args, a)
	return c
}

// mutating reports whether the command changes state (not a print).
func (c *command) mutating() bool { return !strings.HasSuffix(c.verb, " print") }

func (c *command) String() string {
	if len(c.args) == 0 {
		return c.verb
	}
	return c.verb + " " + strings.Join(c.args, " ")
}

// findSlot renders `[find slot="<slot>"]`.
func findSlot(slot string) string { return "[find slot=" + Quote(slot) + "]" }

// FormatSize renders a byte count the way this package sends it to
// RouterOS: a whole number of MiB with the "M" suffix (RouterOS size suffixes
// are binary). Callers must pass a multiple of MiB (see RoundUpSize), so
// nothing is ever truncated.
func FormatSize(bytes int64) (string, error) {
	if bytes <= 0 || bytes%MiB != 0 {
		return "", invalidf("size %d is not a positive multiple of 1 MiB", bytes)
	}
	return strconv.FormatInt(bytes/MiB, 10) + "M", nil
}

// Binary size units.
const (
	KiB int64 = 1 << 10
	MiB int64 = 1 << 20
	GiB int64 = 1 << 30
)

// RoundUpSize rounds bytes up to the allocation unit (1 MiB). It reports
// false when the result would overflow.
func RoundUpSize(bytes int64) (int64, bool) {
	if bytes <= 0 {
		return MiB, true
	}
	if bytes > (1<<63-1)-MiB {
		return 0, false
	}
	return (bytes + MiB - 1) / MiB * MiB, true
}
