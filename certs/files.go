package certs

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// The certificate directory uses the layout of the kubelet's secret
// volumes, so that a reader never sees a new tls.crt beside an old tls.key:
//
//	dir/..rds-fence-<random>/tls.crt   the files of one version
//	dir/..data -> ..rds-fence-<random> swapped by one rename
//	dir/tls.crt -> ..data/tls.crt      stable names
//
// certwatcher watches dir/tls.crt (following the link); removing the old
// version's files after the swap makes it re-add its watch and re-read.
const (
	dataLink      = "..data"
	versionPrefix = "..rds-fence-"
)

// writeFiles atomically replaces the named files of dir with files (mode
// 0600; names must be plain file names). Older versions are removed.
func writeFiles(dir string, files map[string][]byte) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("creating certificate directory: %w", err)
	}
	version, err := os.MkdirTemp(dir, versionPrefix)
	if err != nil {
		return fmt.Errorf("creating certificate version directory: %w", err)
	}
	for name, data := range files {
		if err := writeSynced(filepath.Join(version, name), data); err != nil {
			_ = os.RemoveAll(version)
			return err
		}
	}
	if err := replaceLink(dir, dataLink, filepath.Base(version)); err != nil {
		_ = os.RemoveAll(version)
		return err
	}
	for name := range files {
		target := filepath.Join(dataLink, name)
		if cur, err := os.Readlink(filepath.Join(dir, name)); err == nil && cur == target {
			continue
		}
		if err := replaceLink(dir, name, target); err != nil {
			return err
		}
	}
	syncDir(dir)
	// Drop older versions: this is the event certwatcher reacts to.
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("listing certificate directory: %w", err)
	}
	var errs []error
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), versionPrefix) && e.Name() != filepath.Base(version) {
			errs = append(errs, os.RemoveAll(filepath.Join(dir, e.Name())))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("removing old certificate versions: %w", err)
	}
	return nil
}

// replaceLink points dir/name at target with a rename, atomically.
func replaceLink(dir, name, target string) error {
	tmp := filepath.Join(dir, name+".tmp")
	if err := os.Remove(tmp); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("removing stale %s: %w", tmp, err)
	}
	if err := os.Symlink(target, tmp); err != nil {
		return fmt.Errorf("linking %s: %w", name, err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		return fmt.Errorf("replacing %s: %w", name, err)
	}
	return nil
}

func writeSynced(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}

// syncDir flushes dir's entries; best effort (not every filesystem can).
func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
}
