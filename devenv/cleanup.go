package devenv

import (
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// cleanupDir unmounts every mount under dir (deepest first) and detaches
// every loop device whose backing file is under dir: the safety net
// after the node plugins' own unstage, and for what a killed earlier run
// left behind. It returns what it had to remove.
func cleanupDir(dir string) []string {
	var removed []string
	abs, err := filepath.Abs(dir)
	if err != nil || abs == "/" {
		return nil
	}
	if b, err := os.ReadFile("/proc/self/mounts"); err == nil {
		var mounts []string
		for _, l := range strings.Split(string(b), "\n") {
			f := strings.Fields(l)
			if len(f) < 2 {
				continue
			}
			mp := unescapeMount(f[1])
			if mp == abs || strings.HasPrefix(mp, abs+"/") {
				mounts = append(mounts, mp)
			}
		}
		sort.Slice(mounts, func(i, j int) bool { return len(mounts[i]) > len(mounts[j]) })
		for _, m := range mounts {
			_ = exec.Command("umount", "-l", m).Run()
			removed = append(removed, "mount "+m)
		}
	}
	out, err := exec.Command("losetup", "-l", "-n", "-O", "NAME,BACK-FILE").Output()
	if err != nil {
		return removed
	}
	for _, l := range strings.Split(string(out), "\n") {
		name, back, ok := strings.Cut(strings.TrimSpace(l), " ")
		back = strings.TrimSuffix(strings.TrimSpace(back), " (deleted)")
		if ok && strings.HasPrefix(back, abs+"/") {
			_ = exec.Command("losetup", "-d", name).Run()
			removed = append(removed, "loop device "+name+" on "+back)
		}
	}
	return removed
}

// unescapeMount decodes the octal escapes of /proc/self/mounts (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, "\\") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
