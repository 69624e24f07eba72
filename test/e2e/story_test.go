package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/rds-fence/rds-fence/devenv"
)

func root() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// TestFencingStory starts the local environment and plays the story: the
// PVC provisioned for a pod on node-a and attached; a pod for node-b and a
// scheduler binding to node-b refused by the webhook; a VolumeAttachment
// for node-b (the webhook bypassed) refused by the controller with
// FAILED_PRECONDITION and an AttachmentConflict event; node-a deleted and
// the volume freed by the reconciler; the pod on node-b attached; the RDS
// fence following the holder at every step (devenv.Story checks each and
// fails naming the step). Then the environment stops and must leave no
// mount and no loop device behind.
func TestFencingStory(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	var log strings.Builder
	e, err := devenv.Start(ctx, devenv.Options{Dir: dir, Bin: filepath.Join(root(), "bin"), Root: root(), Out: &log})
	if err != nil {
		t.Fatalf("starting the local environment: %v\n%s", err, log.String())
	}
	stopped := false
	defer func() {
		if !stopped {
			e.Stop()
		}
	}()
	t.Logf("environment ready in %s", e.ReadyIn.Round(time.Millisecond))
	r, err := e.Story(ctx, "story")
	t.Log("\n" + log.String())
	if err != nil {
		for _, p := range []string{"controller", "webhook", "csi-attacher", "csi-provisioner", "node-a", "node-b", "kubelet-node-a", "kubelet-node-b"} {
			b, _ := os.ReadFile(e.Log(p))
			if len(b) > 3000 {
				b = b[len(b)-3000:]
			}
			t.Logf("--- %s log (end):\n%s", p, b)
		}
		t.Fatalf("the story failed: %v", err)
	}
	if len(r.Steps) != 7 {
		t.Errorf("%d steps, want 7: %+v", len(r.Steps), r.Steps)
	}
	t.Logf("FIGURE story %s; node deletion to the volume attached on node-b %s", r.Total.Round(time.Millisecond), r.NodeLossToAttached.Round(time.Millisecond))
	// every component cleans up after itself: the last safety net
	// finds nothing to remove
	if left := e.Stop(); len(left) > 0 {
		t.Errorf("stopping left these behind (removed by the safety net): %v", left)
	}
	stopped = true
	mounts, _ := os.ReadFile("/proc/self/mounts")
	if strings.Contains(string(mounts), dir) {
		t.Errorf("mounts left under %s:\n%s", dir, mounts)
	}
	loops, err := exec.Command("losetup", "-l", "-n", "-O", "NAME,BACK-FILE").Output()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(loops), dir) {
		t.Errorf("loop devices left on files under %s:\n%s", dir, loops)
	}
}
