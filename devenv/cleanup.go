package devenv

import (
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
)

// cleanupDir unmounts every mount under dir (deepest first) and detaches
// every loop device whose backing file is under dir: the safety net
// after the node plugins' own unstage, and for what a killed earlier run
// left behind.
func cleanupDir(dir string) {
	abs, err := filepath.Abs(dir)
	if err != nil || abs == "/" {
		return
	}
	if b, err := os.ReadFile("/proc/self/mounts"); err == nil {
		var mounts []string
		for _, l := range strings.Split(string(b), "\n") {
			f := strings.Fields(l)
			if len(f) > 1 && (f[1] == abs || strings.HasPrefix(f[1], abs+"/")) {
				mounts = append(mounts, f[1])
			}
		}
		sort.Slice(mounts, func(i, j int) bool { return len(mounts[i]) > len(mounts[j]) })
		for _, m := range mounts {
			_ = exec.Command("umount", "-l", m).Run()
		}
	}
	out, err := exec.Command("losetup", "-l", "-n", "-O", "NAME,BACK-FILE").Output()
	if err != nil {
		return
	}
	for _, l := range strings.Split(string(out), "\n") {
		f := strings.Fields(l)
		if len(f) == 2 && strings.HasPrefix(f[1], abs+"/") {
			_ = exec.Command("losetup", "-d", f[0]).Run()
		}
	}
}
