package reconciler

import (
	"context"
	"time"

	"github.com/go-logr/logr"

	"github.com/rds-fence/rds-fence/attachment"
)

// DriftRunner runs the fencing core's drift check (PV records,
// VolumeAttachments and the RDS fence against the controller's records;
// see attachment.Manager.CheckDrift) every Interval and whenever Trigger
// fires — the RDS client signals it after a lost connection comes back,
// since the fence may have been changed (or a write lost) meanwhile.
type DriftRunner struct {
	Check    func(ctx context.Context, dc *attachment.DriftChecker) ([]attachment.Drift, error)
	Checker  *attachment.DriftChecker
	Interval time.Duration
	Trigger  <-chan struct{}
	Log      logr.Logger
}

// Run checks until ctx ends. A failed check is logged and retried at the
// next tick or trigger.
func (r *DriftRunner) Run(ctx context.Context) {
	t := time.NewTicker(r.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			r.once(ctx, "periodic")
		case <-r.Trigger:
			r.once(ctx, "rds-reconnected")
		}
	}
}

func (r *DriftRunner) once(ctx context.Context, why string) {
	start := time.Now()
	drifts, err := r.Check(ctx, r.Checker)
	if err != nil {
		r.Log.Error(err, "drift check", "trigger", why)
		return
	}
	r.Log.Info("drift check done", "trigger", why, "drifts", len(drifts), "duration", time.Since(start))
}
