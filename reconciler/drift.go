package reconciler

import (
	"context"
	"errors"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/rds-fence/rds-fence/attachment"
)

// DriftRunner runs the fencing core's drift check (PV records,
// VolumeAttachments and the RDS fence against the controller's records;
// see attachment.Manager.CheckDrift) every Interval, and soon after a
// signal: Reconnected (the RDS client signals it when a lost connection
// comes back, since the fence may have changed or a write been lost
// meanwhile) or Changed (a PV or VolumeAttachment changed). Signals are
// coalesced: a signalled check runs at most once per MinSpacing, since a
// check lists every PV, VolumeAttachment and RDS disk.
type DriftRunner struct {
	Check       func(ctx context.Context, dc *attachment.DriftChecker) ([]attachment.Drift, error)
	Checker     *attachment.DriftChecker
	Interval    time.Duration
	MinSpacing  time.Duration
	Reconnected <-chan struct{}
	Changed     <-chan struct{}
	Log         logr.Logger

	checks      *prometheus.CounterVec
	lastSuccess prometheus.Gauge
}

// RegisterMetrics adds rds_fence_drift_checks_total{trigger,result} and
// rds_fence_drift_check_last_success_timestamp_seconds to reg.
func (r *DriftRunner) RegisterMetrics(reg prometheus.Registerer) error {
	r.checks = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "rds_fence_drift_checks_total",
		Help: "Drift checks by trigger (periodic, rds-reconnected, objects-changed) and result (success, error)."}, []string{"trigger", "result"})
	r.lastSuccess = prometheus.NewGauge(prometheus.GaugeOpts{Name: "rds_fence_drift_check_last_success_timestamp_seconds",
		Help: "When the last drift check completed without error (Unix time)."})
	return errors.Join(reg.Register(r.checks), reg.Register(r.lastSuccess))
}

// Run checks until ctx ends. A failed check is logged and retried at the
// next tick or signal.
func (r *DriftRunner) Run(ctx context.Context) {
	t := time.NewTicker(r.Interval)
	defer t.Stop()
	var last time.Time
	pending := ""
	for {
		var due <-chan time.Time
		if pending != "" {
			wait := r.MinSpacing - time.Since(last)
			if wait <= 0 {
				r.once(ctx, pending)
				last, pending = time.Now(), ""
				continue
			}
			due = time.After(wait)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			r.once(ctx, "periodic")
			last, pending = time.Now(), ""
		case <-r.Reconnected:
			pending = "rds-reconnected"
		case <-r.Changed:
			if pending == "" {
				pending = "objects-changed"
			}
		case <-due:
		}
	}
}

func (r *DriftRunner) once(ctx context.Context, why string) {
	start := time.Now()
	drifts, err := r.Check(ctx, r.Checker)
	result := "success"
	if err != nil {
		result = "error"
	}
	if r.checks != nil {
		r.checks.WithLabelValues(why, result).Inc()
	}
	if err != nil {
		r.Log.Error(err, "drift check", "trigger", why)
		return
	}
	if r.lastSuccess != nil {
		r.lastSuccess.SetToCurrentTime()
	}
	r.Log.Info("drift check done", "trigger", why, "drifts", len(drifts), "duration", time.Since(start))
}

// Signal sends on ch without blocking (a pending signal is enough).
func Signal(ch chan<- struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}
