package app

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/rds-fence/rds-fence/devenv"
)

// RunDev runs the local environment (devenv) until ctx is done: the
// control plane, the RDS simulator, the controller, the webhook, the CSI
// sidecars and two simulated nodes. With --story it plays the fencing
// story once it is up; with --exit-after-story it stops afterwards.
func RunDev(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("dev", flag.ContinueOnError)
	wd, _ := os.Getwd()
	dir := fs.String("dir", filepath.Join(wd, ".run"), "the environment's directory (state, logs, kubeconfig; cleared at start)")
	bin := fs.String("bin", filepath.Join(wd, "bin"), "directory of the binaries (make local-cluster build)")
	root := fs.String("root", wd, "repository root (manifests/ are read from it)")
	mode := fs.String("webhook-mode", "enforce", "admission webhook mode: enforce, warn or dry-run")
	story := fs.Bool("story", false, "play the fencing story once the environment is up")
	exit := fs.Bool("exit-after-story", false, "with --story: stop after it (otherwise stay up until Ctrl-C)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	start := time.Now()
	fmt.Printf("starting the local environment in %s\n", *dir)
	e, err := devenv.Start(ctx, devenv.Options{Dir: *dir, Bin: *bin, Root: *root, WebhookMode: *mode, Out: os.Stdout})
	if err != nil {
		return err
	}
	defer func() {
		fmt.Println("stopping: unpublishing and unstaging volumes, ending every process, removing mounts and loop devices")
		e.Stop()
	}()
	fmt.Printf(`
ready in %s. Use the cluster with:

  export KUBECONFIG=%s
  kubectl get nodes,csinodes,storageclasses
  kubectl get pvc,pods,volumeattachments -A

Logs: %s/logs/. Nodes: %v (node plugins on the loop transport; a stand-in for
the kubelet stages and publishes the volumes of pods bound to them). Ctrl-C stops
everything and removes every mount and loop device.
`, e.ReadyIn.Round(100*time.Millisecond), e.Kubeconfig, *dir, e.Nodes)
	if *story {
		fmt.Println("\nthe story:")
		r, err := e.Story(ctx, "demo")
		if err != nil {
			return fmt.Errorf("the story failed: %w", err)
		}
		fmt.Printf("\nstory done in %s; node deletion to the volume attached on the other node: %s (environment ready in %s, %s since start)\n",
			r.Total.Round(time.Millisecond), r.NodeLossToAttached.Round(time.Millisecond), e.ReadyIn.Round(100*time.Millisecond), time.Since(start).Round(100*time.Millisecond))
		if *exit {
			return nil
		}
	}
	<-ctx.Done()
	return nil
}
