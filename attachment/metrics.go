package attachment

import (
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the fencing core's Prometheus metrics. A nil *Metrics
// records nothing.
type Metrics struct {
	Operations   *prometheus.CounterVec   // rds_fence_attachment_operations_total{operation,result}
	Duration     *prometheus.HistogramVec // rds_fence_attachment_operation_duration_seconds{operation}
	Conflicts    prometheus.Counter       // rds_fence_attachment_conflicts_total
	StaleCleared prometheus.Counter       // rds_fence_stale_attachments_cleared_total
	Drift        *prometheus.CounterVec   // rds_fence_attachment_drift_total{kind}
	Rebuild      prometheus.Gauge         // rds_fence_attachment_rebuild_duration_seconds
	Held         prometheus.GaugeFunc     // rds_fence_attachments_held (set by NewMetrics when a store is given)
}

// NewMetrics creates the metrics and registers them on reg (if not nil).
func NewMetrics(reg prometheus.Registerer, store *Store) *Metrics {
	m := &Metrics{
		Operations: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "rds_fence_attachment_operations_total",
			Help: "Publish and unpublish operations by result (success, conflict, error)."}, []string{"operation", "result"}),
		Duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "rds_fence_attachment_operation_duration_seconds",
			Help:    "Latency of publish and unpublish, including the storage fence and the PV write.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 14)}, []string{"operation"}),
		Conflicts: prometheus.NewCounter(prometheus.CounterOpts{Name: "rds_fence_attachment_conflicts_total",
			Help: "Publishes refused because another live node holds the volume."}),
		StaleCleared: prometheus.NewCounter(prometheus.CounterOpts{Name: "rds_fence_stale_attachments_cleared_total",
			Help: "Holders released because their node was deleted or out of service."}),
		Drift: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "rds_fence_attachment_drift_total",
			Help: "Disagreements between PV annotations, VolumeAttachments and the storage fence, by kind."}, []string{"kind"}),
		Rebuild: prometheus.NewGauge(prometheus.GaugeOpts{Name: "rds_fence_attachment_rebuild_duration_seconds",
			Help: "Duration of the last rebuild of the attachment store at start-up."}),
	}
	cs := []prometheus.Collector{m.Operations, m.Duration, m.Conflicts, m.StaleCleared, m.Drift, m.Rebuild}
	if store != nil {
		m.Held = prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "rds_fence_attachments_held",
			Help: "Volumes currently held by at least one node."}, func() float64 { return float64(store.Len()) })
		cs = append(cs, m.Held)
	}
	if reg != nil {
		for _, c := range cs {
			reg.MustRegister(c)
		}
	}
	return m
}

func (m *Metrics) observe(op string, start, end time.Time, err error) {
	if m == nil {
		return
	}
	result := "success"
	var ce *ConflictError
	switch {
	case errors.As(err, &ce):
		result = "conflict"
	case err != nil:
		result = "error"
	}
	m.Operations.WithLabelValues(op, result).Inc()
	m.Duration.WithLabelValues(op).Observe(end.Sub(start).Seconds())
}

func (m *Metrics) conflict() {
	if m != nil {
		m.Conflicts.Inc()
	}
}

func (m *Metrics) staleCleared() {
	if m != nil {
		m.StaleCleared.Inc()
	}
}

// DriftSeen counts one disagreement of the given kind.
func (m *Metrics) DriftSeen(kind string) {
	if m != nil {
		m.Drift.WithLabelValues(kind).Inc()
	}
}
