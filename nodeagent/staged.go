package nodeagent

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// Staged is what the node agent remembers of a staged volume, so a
// restarted node plugin watches (and reconnects) it again before the
// kubelet calls anything: the target to connect to and the volume's
// stable device name.
type Staged struct {
	VolumeID string `json:"volumeID"`
	Target   Target `json:"target"`
	// MapName is the volume's stable device (Mapper) name.
	MapName string `json:"mapName"`
	// Boot is the kernel's boot_id when the record was written: after a
	// reboot nothing is attached or mounted, and the records of the
	// previous boot are dropped rather than reconnected.
	Boot string `json:"boot"`
	// FencedSince is set once the storage's fence refused this node for
	// the volume: it stays fenced (never connected again) across restarts
	// of the plugin until the volume is unstaged.
	FencedSince *time.Time `json:"fencedSince,omitempty"`
}

// StagedStore keeps one small JSON file per staged volume in Dir.
type StagedStore struct {
	Dir string
	// BootIDFile is where the kernel's boot ID is read (default
	// /proc/sys/kernel/random/boot_id).
	BootIDFile string
}

func (s StagedStore) bootID() string {
	f := s.BootIDFile
	if f == "" {
		f = "/proc/sys/kernel/random/boot_id"
	}
	b, _ := os.ReadFile(f)
	return strings.TrimSpace(string(b))
}

func (s StagedStore) file(nqn string) string {
	sum := sha256.Sum256([]byte(nqn))
	return filepath.Join(s.Dir, "staged-"+hex.EncodeToString(sum[:12])+".json")
}

// Put records v (atomically; overwrites).
func (s StagedStore) Put(v Staged) error {
	if err := os.MkdirAll(s.Dir, 0o700); err != nil {
		return err
	}
	v.Boot = s.bootID()
	if v.Boot == "" {
		return errors.New("cannot read the kernel's boot ID: refusing to write a staged-volume record that a later start could not place")
	}
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return writeAtomic(s.file(v.Target.SubsystemNQN), b)
}

// MarkFenced records that the volume of subsystem nqn is fenced (kept
// across restarts). A volume without a record gets one.
func (s StagedStore) MarkFenced(t Target, id, mapName string, since time.Time) error {
	recs, err := s.List()
	if err != nil && len(recs) == 0 {
		return err
	}
	rec := Staged{VolumeID: id, Target: t, MapName: mapName}
	for _, r := range recs {
		if r.Target.SubsystemNQN == t.SubsystemNQN {
			rec = r
		}
	}
	if rec.FencedSince != nil {
		return nil
	}
	since = since.UTC()
	rec.FencedSince = &since
	return s.Put(rec)
}

// Delete forgets the volume of subsystem nqn (idempotent).
func (s StagedStore) Delete(nqn string) error {
	if err := os.Remove(s.file(nqn)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// List returns every record of this boot, sorted by volume ID; records
// of an earlier boot are deleted. A record that cannot be read is an
// error naming the file (the agent must not silently stop watching a
// volume).
func (s StagedStore) List() ([]Staged, error) {
	boot := s.bootID() // "" (unreadable): keep every record
	names, err := filepath.Glob(filepath.Join(s.Dir, "staged-*.json"))
	if err != nil {
		return nil, err
	}
	var out []Staged
	var errs []error
	for _, n := range names {
		b, err := os.ReadFile(n)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		var v Staged
		if err := json.Unmarshal(b, &v); err != nil || v.Target.SubsystemNQN == "" || s.file(v.Target.SubsystemNQN) != n {
			errs = append(errs, fmt.Errorf("staged-volume record %s is not one this agent wrote (%q)", n, strings.TrimSpace(string(b))))
			continue
		}
		if boot != "" && v.Boot != "" && v.Boot != boot {
			_ = os.Remove(n) // staged before a reboot: nothing of it is attached now
			continue
		}
		out = append(out, v)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].VolumeID < out[j].VolumeID })
	return out, errors.Join(errs...)
}
