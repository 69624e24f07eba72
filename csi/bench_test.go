package csi

import (
	"context"
	"flag"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"

	"github.com/rds-fence/rds-fence/rds"
	"github.com/rds-fence/rds-fence/rds/rdssim"
	"github.com/rds-fence/rds-fence/rds/rdssim/simtest"
)

var (
	benchSessions = flag.Int("bench-sessions", 8, "SSH session limit for BenchmarkCreateVolumeConcurrent")
	benchLatency  = flag.Duration("bench-latency", 200*time.Millisecond, "simulator latency per command")
	benchRequests = flag.Int("bench-requests", 100, "concurrent CreateVolume requests per iteration")
)

// BenchmarkCreateVolumeConcurrent measures -bench-requests concurrent
// CreateVolume calls against the simulator over SSH with -bench-latency per
// command and -bench-sessions concurrent sessions. Ideal time is
// requests * k * latency / sessions, where k is the commands one create
// issues; the benchmark reports the measured k and the ratio to ideal.
func BenchmarkCreateVolumeConcurrent(b *testing.B) {
	d, env := newBenchDriver(b, *benchSessions)
	env.Sim.SetLatency(*benchLatency)
	n := *benchRequests
	var elapsed time.Duration
	var commands int
	b.ResetTimer()
	for iter := 0; iter < b.N; iter++ {
		before := len(env.Sim.Commands())
		start := time.Now()
		var wg sync.WaitGroup
		errs := make(chan error, n)
		for i := range n {
			wg.Go(func() {
				_, err := d.CreateVolume(context.Background(), createReq(fmt.Sprintf("bench-%d-%d", iter, i), rds.MiB, 0))
				if err != nil {
					errs <- err
				}
			})
		}
		wg.Wait()
		elapsed += time.Since(start)
		commands += len(env.Sim.Commands()) - before
		close(errs)
		for err := range errs {
			b.Fatal(err)
		}
	}
	perIter := elapsed.Seconds() / float64(b.N)
	k := float64(commands) / float64(n*b.N)
	ideal := float64(n) * k * benchLatency.Seconds() / float64(*benchSessions)
	b.ReportMetric(perIter, "s/batch")
	b.ReportMetric(k, "cmds/create")
	b.ReportMetric(ideal, "ideal-s/batch")
	b.ReportMetric(perIter/ideal, "ratio-to-ideal")
}

func newBenchDriver(b *testing.B, sessions int) (*Driver, *simtest.Env) {
	b.Helper()
	env := simtest.Start(b, rdssim.Options{PoolSize: 1 << 50}, rdssim.ServerOptions{})
	cl := env.Client(b, func(c *rds.Config) { c.MaxSessions = sessions; c.CommandTimeout = time.Minute })
	d, err := NewDriver(Options{TargetAddress: "192.0.2.10"}, cl, logr.Discard())
	if err != nil {
		b.Fatal(err)
	}
	return d, env
}
