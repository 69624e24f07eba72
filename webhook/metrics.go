package webhook

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics of the admission webhook.
type Metrics struct {
	decisions *prometheus.CounterVec
	latency   *prometheus.HistogramVec
	synced    prometheus.GaugeFunc
}

// NewMetrics registers the webhook metrics on reg:
//
//	rds_fence_admission_decisions_total{resource,result,reason}
//	  result: allowed, denied, warned (warn mode), dry-run-denied (dry-run mode), errored
//	rds_fence_admission_decision_seconds{resource}
//	rds_fence_admission_cache_synced (1 once every informer has synced)
func NewMetrics(reg prometheus.Registerer, state interface{ Synced() bool }) *Metrics {
	m := &Metrics{
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rds_fence_admission_decisions_total",
			Help: "Admission decisions by resource (pods, bindings, vmis), result and reason.",
		}, []string{"resource", "result", "reason"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "rds_fence_admission_decision_seconds",
			Help:    "Time to decide one admission request, decoding included.",
			Buckets: []float64{50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 50e-3, 0.25},
		}, []string{"resource"}),
		synced: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "rds_fence_admission_cache_synced",
			Help: "1 when the webhook's informer caches have synced, else 0 (every request is refused).",
		}, func() float64 {
			if state.Synced() {
				return 1
			}
			return 0
		}),
	}
	reg.MustRegister(m.decisions, m.latency, m.synced)
	return m
}

func (m *Metrics) observe(resource, result, reason string, took time.Duration) {
	if m == nil {
		return
	}
	m.decisions.WithLabelValues(resource, result, reason).Inc()
	m.latency.WithLabelValues(resource).Observe(took.Seconds())
}
