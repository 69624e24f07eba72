package rdssim

import (
	"os"
	"path/filepath"
	"strconv"
)

// printArgs accepts `detail` and an optional `where` with conditions.
func printArgs(args []arg) (func(map[string]string) bool, error) {
	if len(args) == 0 || args[0].key != "" || args[0].value != "detail" {
		return nil, cliError("expected end of command (this simulator supports 'print detail' only)")
	}
	args = args[1:]
	if len(args) == 0 {
		return func(map[string]string) bool { return true }, nil
	}
	if args[0].key != "" || args[0].value != "where" {
		return nil, cliError("expected end of command (line 1 column 1)")
	}
	return conditions(args[1:])
}

// diskPrint prints `/disk print detail`: the physical NVMe disk (index 0),
// the pool partition (index 1) and the file disks from index 2, in the real
// field order and quoting.
func (s *Simulator) diskPrint(args []arg) (string, error) {
	match, err := printArgs(args)
	if err != nil {
		return "", err
	}
	var entries []Entry
	pool := s.opts.Pool
	total := strconv.FormatInt(s.opts.PoolSize, 10)
	free := strconv.FormatInt(s.opts.PoolSize-s.used(), 10)
	use := strconv.FormatInt(s.used()*100/s.opts.PoolSize, 10) + "%"
	fixed := []struct {
		item   map[string]string
		flags  string
		fields []Field
	}{
		{map[string]string{"slot": "nvme1", "type": "hardware"}, "B", []Field{
			{"type", "hardware", Plain}, {"slot", "nvme1", Quoted}, {"slot-default", "nvme1", Quoted}, {"parent", "", Quoted},
			{"model", "SIMULATED NVMe", Quoted}, {"serial", "SIM0001", Quoted}, {"fw-version", "1.0", Quoted},
			{"size", total, Grouped}, {"sector-size", "4096", Plain}, {"nvme-tcp-export", "no", Plain},
		}},
		{map[string]string{"slot": pool, "type": "partition", "mount-point": pool}, "BM", []Field{
			{"type", "partition", Plain}, {"slot", pool, Quoted}, {"slot-default", "nvme1-part1", Quoted},
			{"parent", "nvme1", Quoted}, {"partition-number", "1", Plain}, {"partition-offset", "1048576", Grouped},
			{"fs", "btrfs", Plain}, {"sector-size", "4096", Plain}, {"size", total, Grouped}, {"mount-point", pool, Quoted},
			{"file-system", "btrfs", Plain}, {"free", free, Grouped}, {"use", use, Plain}, {"mount-filesystem", "yes", Plain},
			{"mount-read-only", "no", Plain}, {"compress", "no", Plain}, {"raid-master", "none", Plain},
			{"nvme-tcp-export", "no", Plain}, {"iscsi-export", "no", Plain}, {"nfs-sharing", "no", Plain},
			{"smb-sharing", "no", Plain}, {"media-sharing", "no", Plain},
		}},
	}
	for i, f := range fixed {
		if match(f.item) {
			entries = append(entries, Entry{Index: i, Flags: f.flags, Fields: f.fields})
		}
	}
	for i, d := range s.disks {
		item := map[string]string{"slot": d.slot, "type": "file", "file-path": d.filePath, "nvme-tcp-server-nqn": d.nqn}
		if !match(item) {
			continue
		}
		export := "no"
		if d.export {
			export = "yes"
		}
		fields := []Field{
			{"type", "file", Plain}, {"slot", d.slot, Quoted}, {"slot-default", "", Quoted}, {"parent", "", Quoted},
			{"fs", "-", Plain}, {"model", d.filePath, Quoted}, {"sector-size", "512", Plain},
			{"size", strconv.FormatInt(d.size, 10), Grouped}, {"mount-filesystem", "yes", Plain},
			{"mount-read-only", "no", Plain}, {"compress", "no", Plain}, {"raid-master", "none", Plain},
			{"nvme-tcp-export", export, Plain},
		}
		if d.export {
			fields = append(fields, Field{"nvme-tcp-server-port", strconv.Itoa(d.port), Plain},
				Field{"nvme-tcp-server-nqn", d.nqn, Quoted})
		}
		fields = append(fields, Field{"nvme-tcp-server-allow-host-name", d.allowHost, Quoted},
			Field{"iscsi-export", "no", Plain}, Field{"nfs-sharing", "no", Plain}, Field{"smb-sharing", "no", Plain},
			Field{"media-sharing", "no", Plain}, Field{"file-path", d.filePath, Plain},
			Field{"file-size", HumanSize(d.size), Plain}, Field{"file-offset", "0", Plain})
		entries = append(entries, Entry{Index: len(fixed) + i, Fields: fields})
	}
	return FormatDetail(entries, s.opts.Width), nil
}

// filePrint prints `/file print detail` for regular files under the pool.
func (s *Simulator) filePrint(args []arg) (string, error) {
	match, err := printArgs(args)
	if err != nil {
		return "", err
	}
	var entries []Entry
	for i, name := range s.files() {
		if !match(map[string]string{"name": name}) {
			continue
		}
		var size int64
		if st, err := os.Stat(filepath.Join(s.opts.Root, name)); err == nil {
			size = st.Size()
		}
		entries = append(entries, Entry{Index: i, Fields: []Field{
			{"name", name, Plain}, {"type", ".img file", Quoted}, {"size", HumanSize(size), Plain},
		}})
	}
	return FormatDetailLegend("", entries, s.opts.Width), nil
}
