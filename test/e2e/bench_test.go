package e2e

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/rds-fence/rds-fence/devenv"
)

// BenchmarkLocalEnvironment measures what `make run STORY=1` does: the
// environment's start to ready (binaries built), the whole story, and
// from the Node deletion to the volume attached on the other node.
// Reported per run: ready-s, story-s, nodeloss-attached-ms.
func BenchmarkLocalEnvironment(b *testing.B) {
	dir := b.TempDir()
	var ready, story, loss time.Duration
	for i := 0; i < b.N; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		e, err := devenv.Start(ctx, devenv.Options{Dir: dir, Bin: filepath.Join(root(), "bin"), Root: root()})
		if err != nil {
			cancel()
			b.Fatal(err)
		}
		r, err := e.Story(ctx, "bench")
		e.Stop()
		cancel()
		if err != nil {
			b.Fatal(err)
		}
		ready += e.ReadyIn
		story += r.Total
		loss += r.NodeLossToAttached
	}
	n := float64(b.N)
	b.ReportMetric(ready.Seconds()/n, "ready-s")
	b.ReportMetric(story.Seconds()/n, "story-s")
	b.ReportMetric(float64(loss.Milliseconds())/n, "nodeloss-attached-ms")
}
