package fencing

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/rds-fence/rds-fence/csi"
)

// BenchmarkNodeLoss measures the time from a Node's deletion (the API
// call returning) to every volume it held being released: fence revoked
// on the simulated RDS, record written on the PV, store cleared (revoke's
// order, so an empty store means the other two are done). 1 volume:
// b.N losses, p50/p99 reported; 500 volumes: one loss per iteration.
func BenchmarkNodeLoss(b *testing.B) {
	for _, n := range []int{1, 500} {
		b.Run(fmt.Sprintf("volumes=%d", n), func(b *testing.B) {
			f := newFixture(b)
			startNodeLoss(b, f, time.Hour, time.Hour)
			ids := make([]string, n)
			var wg sync.WaitGroup
			sem := make(chan struct{}, 16)
			for i := range n {
				sem <- struct{}{}
				wg.Go(func() { defer func() { <-sem }(); ids[i] = f.volume(fmt.Sprintf("v%03d", i), false) })
			}
			wg.Wait()
			var lat []time.Duration
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				b.StopTimer()
				node := f.node(fmt.Sprintf("n%d", i))
				for _, id := range ids {
					sem <- struct{}{}
					wg.Go(func() { defer func() { <-sem }(); f.mustPublish(id, node, false) })
				}
				wg.Wait()
				b.StartTimer()
				start := time.Now()
				if err := direct.Delete(context.Background(), &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: node}}); err != nil {
					b.Fatal(err)
				}
				for len(f.mgr.HeldBy(node)) > 0 {
					if time.Since(start) > time.Minute {
						b.Fatalf("%d volumes still held a minute after the node was deleted", len(f.mgr.HeldBy(node)))
					}
					time.Sleep(2 * time.Millisecond)
				}
				lat = append(lat, time.Since(start))
				b.StopTimer()
				for _, id := range ids {
					if got := f.allowed(id); got != csi.NobodyNQN {
						b.Fatalf("volume %s released in memory but fenced to %q", id, got)
					}
				}
				b.StartTimer()
			}
			b.StopTimer()
			slices.Sort(lat)
			b.ReportMetric(lat[len(lat)/2].Seconds(), "p50-s")
			b.ReportMetric(lat[len(lat)*99/100].Seconds(), "p99-s")
		})
	}
}
