package rdssim

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/rds-fence/rds-fence/rds"
)

// cliError is a RouterOS error printed on stdout with exit status 0.
type cliError string

func (e cliError) Error() string { return string(e) }

const (
	errNoSuchItem  = cliError("no such item")
	errNoSpace     = cliError("failure: not enough space")
	errSlotExists  = cliError("failure: item with this slot already exists")
	errFileExists  = cliError("failure: file already exists")
	errCannotShrnk = cliError("failure: new file size is smaller than current")
)

// Exec runs one command line (possibly several statements) and returns what
// RouterOS would print. Execution stops at the first failing statement.
func (s *Simulator) Exec(line string) string {
	stmts, err := parseLine(line)
	if err != nil {
		return FormatError(err.Error())
	}
	var out strings.Builder
	for _, st := range stmts {
		res, err := s.execOne(st)
		out.WriteString(res)
		if err != nil {
			out.WriteString(FormatError(err.Error()))
			break
		}
	}
	return out.String()
}

func (s *Simulator) execOne(st statement) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.commands = append(s.commands, st.text)
	if msg, ok := s.faults.failFor(st.text); ok {
		return "", cliError(msg)
	}
	switch st.verb() {
	case "/disk add":
		return "", s.diskAdd(st.args)
	case "/disk set":
		return "", s.diskSet(st.args)
	case "/disk remove":
		return "", s.diskRemove(st.args)
	case "/disk print":
		return s.diskPrint(st.args)
	case "/file remove":
		return "", s.fileRemove(st.args)
	case "/file print":
		return s.filePrint(st.args)
	case "/system identity print":
		return "  name: RDS-sim\r\n", nil
	}
	return "", cliError(fmt.Sprintf("bad command name %s (line 1 column 1)", strings.TrimPrefix(st.verb(), "/")))
}

// props turns key=value arguments into a map, refusing unknown keys.
func props(args []arg, allowed ...string) (map[string]arg, error) {
	m := map[string]arg{}
	for _, a := range args {
		if a.key == "" || a.op != '=' {
			return nil, cliError("expected end of command (line 1 column 1)")
		}
		if !contains(allowed, a.key) {
			return nil, cliError("expected end of command (unknown parameter " + a.key + ")")
		}
		m[a.key] = a
	}
	return m, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func (s *Simulator) checkSlot(slot string) error {
	if slot == "" {
		return cliError("missing value(s) of argument(s) slot")
	}
	if s.opts.SlotMaxLen > 0 && len(slot) > s.opts.SlotMaxLen {
		return cliError(fmt.Sprintf("invalid value for argument slot: longer than %d characters", s.opts.SlotMaxLen))
	}
	return nil
}

func (s *Simulator) diskAdd(args []arg) error {
	p, err := props(args, "type", "file-path", "file-size", "slot", "nvme-tcp-export", "nvme-tcp-server-port",
		"nvme-tcp-server-nqn", "nvme-tcp-server-allow-host-name", "copy-from")
	if err != nil {
		return err
	}
	if p["type"].value != "file" {
		return cliError("invalid value for argument type")
	}
	d := &disk{slot: p["slot"].value, filePath: p["file-path"].value, nqn: p["nvme-tcp-server-nqn"].value,
		allowHost: p["nvme-tcp-server-allow-host-name"].value, export: p["nvme-tcp-export"].value == "yes", created: time.Now()}
	if err := s.checkSlot(d.slot); err != nil {
		return err
	}
	if d.filePath == "" {
		return cliError("missing value(s) of argument(s) file-path")
	}
	if port := p["nvme-tcp-server-port"].value; port != "" {
		if d.port, err = strconv.Atoi(port); err != nil || d.port <= 0 || d.port > 65535 {
			return cliError("value of nvme-tcp-server-port out of range (1..65535)")
		}
	}
	var src *disk
	if cf, ok := p["copy-from"]; ok {
		slots, err := s.evalFind(cf, "slot")
		if err != nil {
			return err
		}
		if len(slots) != 1 {
			return errNoSuchItem
		}
		_, src = s.find(slots[0])
	}
	switch fs, ok := p["file-size"]; {
	case ok:
		if d.size, err = rds.ParseSize(fs.value); err != nil || d.size <= 0 {
			return cliError("invalid value for argument file-size")
		}
	case src != nil:
		d.size = src.size
	default:
		return cliError("missing value(s) of argument(s) file-size")
	}
	if _, other := s.find(d.slot); other != nil {
		return errSlotExists
	}
	hp, err := s.hostPath(d.filePath)
	if err != nil {
		return err
	}
	if !strings.HasPrefix(hp, filepath.Join(s.opts.Root, s.opts.Pool)+string(filepath.Separator)) {
		return cliError("failure: file-path is not on a mounted disk")
	}
	if _, err := os.Stat(hp); err == nil {
		return errFileExists
	}
	if s.faults.diskFull || d.size > s.opts.PoolSize-s.used() {
		return errNoSpace
	}
	if err := os.MkdirAll(filepath.Dir(hp), 0o755); err != nil {
		return cliError("failure: " + err.Error())
	}
	if src != nil {
		srcPath, _ := s.hostPath(src.filePath)
		if err := copySparse(srcPath, hp, d.size); err != nil {
			return cliError("failure: " + err.Error())
		}
	} else if err := createSparse(hp, d.size); err != nil {
		return cliError("failure: " + err.Error())
	}
	s.disks = append(s.disks, d)
	return nil
}

func createSparse(path string, size int64) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	if err := f.Truncate(size); err != nil {
		_ = f.Close()
		_ = os.Remove(path)
		return err
	}
	return f.Close()
}

// copySparse copies src into a new sparse file dst of the given size,
// copying only the data extents (SEEK_DATA/SEEK_HOLE) so that holes stay
// holes and a large empty source costs nothing.
func copySparse(src, dst string, size int64) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer func() { _ = in.Close() }()
	if err := createSparse(dst, size); err != nil {
		return err
	}
	out, err := os.OpenFile(dst, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	var off int64
	for {
		data, err := unix.Seek(int(in.Fd()), off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break // no data after off
		}
		if err != nil {
			_ = out.Close()
			return err
		}
		hole, err := unix.Seek(int(in.Fd()), data, unix.SEEK_HOLE)
		if err != nil {
			_ = out.Close()
			return err
		}
		if _, err := io.Copy(io.NewOffsetWriter(out, data), io.NewSectionReader(in, data, hole-data)); err != nil {
			_ = out.Close()
			return err
		}
		off = hole
	}
	return out.Close()
}

// target resolves the [find ...] positional argument of set/remove.
func (s *Simulator) target(args []arg, field string) ([]string, []arg, error) {
	if len(args) == 0 || !args[0].isSub {
		return nil, nil, cliError("missing value(s) of argument(s) numbers")
	}
	items, err := s.evalFind(args[0], field)
	return items, args[1:], err
}

// evalFind evaluates `[find key="v"]` or `[find key~"re"]` and returns the
// matching slots (disks) or names (files).
func (s *Simulator) evalFind(a arg, field string) ([]string, error) {
	if !a.isSub || len(a.sub) == 0 || a.sub[0].key != "" || a.sub[0].value != "find" {
		return nil, cliError("expected find expression")
	}
	match, err := conditions(a.sub[1:])
	if err != nil {
		return nil, err
	}
	var out []string
	if field == "slot" {
		for _, d := range s.disks {
			if match(map[string]string{"slot": d.slot, "file-path": d.filePath}) {
				out = append(out, d.slot)
			}
		}
		return out, nil
	}
	for _, name := range s.files() {
		if match(map[string]string{"name": name}) {
			out = append(out, name)
		}
	}
	return out, nil
}

// conditions compiles key=value / key~regexp conditions (ANDed).
func conditions(args []arg) (func(map[string]string) bool, error) {
	type cond struct {
		key string
		eq  string
		re  *regexp.Regexp
	}
	var cs []cond
	for _, a := range args {
		switch {
		case a.key != "" && a.op == '=':
			cs = append(cs, cond{key: a.key, eq: a.value})
		case a.key != "" && a.op == '~':
			re, err := regexp.Compile(a.value)
			if err != nil {
				return nil, cliError("invalid regular expression")
			}
			cs = append(cs, cond{key: a.key, re: re})
		default:
			return nil, cliError("expected end of command (line 1 column 1)")
		}
	}
	return func(item map[string]string) bool {
		for _, c := range cs {
			v, ok := item[c.key]
			if !ok || (c.re == nil && v != c.eq) || (c.re != nil && !c.re.MatchString(v)) {
				return false
			}
		}
		return true
	}, nil
}

func (s *Simulator) diskSet(args []arg) error {
	slots, rest, err := s.target(args, "slot")
	if err != nil {
		return err
	}
	p, err := props(rest, "file-size", "nvme-tcp-server-allow-host-name")
	if err != nil {
		return err
	}
	if len(slots) == 0 {
		return errNoSuchItem
	}
	for _, slot := range slots {
		_, d := s.find(slot)
		if ah, ok := p["nvme-tcp-server-allow-host-name"]; ok {
			d.allowHost = ah.value
		}
		if fs, ok := p["file-size"]; ok {
			size, err := rds.ParseSize(fs.value)
			if err != nil || size <= 0 {
				return cliError("invalid value for argument file-size")
			}
			if size < d.size {
				return errCannotShrnk
			}
			if s.faults.diskFull || size-d.size > s.opts.PoolSize-s.used() {
				return errNoSpace
			}
			hp, _ := s.hostPath(d.filePath)
			if err := os.Truncate(hp, size); err != nil {
				return cliError("failure: " + err.Error())
			}
			d.size = size
		}
	}
	return nil
}

func (s *Simulator) diskRemove(args []arg) error {
	slots, rest, err := s.target(args, "slot")
	if err != nil {
		return err
	}
	if len(rest) > 0 {
		return cliError("expected end of command (line 1 column 1)")
	}
	if len(slots) == 0 {
		return errNoSuchItem
	}
	for _, slot := range slots {
		i, _ := s.find(slot)
		s.disks = append(s.disks[:i], s.disks[i+1:]...)
	}
	return nil
}

func (s *Simulator) fileRemove(args []arg) error {
	names, rest, err := s.target(args, "name")
	if err != nil {
		return err
	}
	if len(rest) > 0 {
		return cliError("expected end of command (line 1 column 1)")
	}
	if len(names) == 0 {
		return errNoSuchItem
	}
	for _, name := range names {
		for _, d := range s.disks {
			if strings.TrimPrefix(d.filePath, "/") == name {
				return cliError("failure: file is in use by disk " + d.slot)
			}
		}
		hp, err := s.hostPath(name)
		if err != nil {
			return err
		}
		if err := os.Remove(hp); err != nil && !errors.Is(err, os.ErrNotExist) {
			return cliError("failure: " + err.Error())
		}
	}
	return nil
}

// files lists regular files under the pool, as RouterOS names (no leading slash).
func (s *Simulator) files() []string {
	var out []string
	root := filepath.Join(s.opts.Root, s.opts.Pool)
	_ = filepath.WalkDir(root, func(p string, de os.DirEntry, err error) error {
		if err == nil && de.Type().IsRegular() {
			rel, _ := filepath.Rel(s.opts.Root, p)
			out = append(out, filepath.ToSlash(rel))
		}
		return nil
	})
	sort.Strings(out)
	return out
}
