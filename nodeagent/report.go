package nodeagent

import (
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
)

// Event reasons of the node agent, on the Node object.
const (
	// ReasonVolumeConnectionLost: a staged volume has no controller and
	// connecting again fails; its I/O waits.
	ReasonVolumeConnectionLost = "VolumeConnectionLost"
	// ReasonVolumeFenced: connecting again was refused by the storage's
	// host-NQN fence (the volume was given to another node).
	ReasonVolumeFenced = "VolumeFenced"
	// ReasonVolumeConnectionRestored: a volume reported lost or fenced is
	// live again.
	ReasonVolumeConnectionRestored = "VolumeConnectionRestored"
)

// Reporter turns the monitor's health changes into metrics and events:
//
//	rds_fence_node_volume_state{volume,state} 1 for the volume's current state
//	  (live, reconnecting, lost, fenced)
//	rds_fence_node_volume_state_changes_total{state} health changes by new state
//
// and a Warning event on the Node when a volume is lost or fenced, a
// Normal one when it is back. A reconnect the kernel handles by itself
// (state reconnecting) is a metric only: short outages must not flood the
// API with events.
type Reporter struct {
	Recorder  events.EventRecorder // nil: metrics only
	NodeName  string
	NQNPrefix string

	state   *prometheus.GaugeVec
	changes *prometheus.CounterVec
	mu      sync.Mutex
	last    map[string]string
	alarmed map[string]bool // a lost/fenced event was recorded, no restored one yet
}

// NewReporter registers the metrics on reg.
func NewReporter(reg prometheus.Registerer, rec events.EventRecorder, node, nqnPrefix string) *Reporter {
	r := &Reporter{Recorder: rec, NodeName: node, NQNPrefix: nqnPrefix, last: map[string]string{}, alarmed: map[string]bool{},
		state: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "rds_fence_node_volume_state",
			Help: "1 for each staged volume's current connection state (live, reconnecting, lost, fenced).",
		}, []string{"volume", "state"}),
		changes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rds_fence_node_volume_state_changes_total",
			Help: "Connection state changes of staged volumes, by new state.",
		}, []string{"state"}),
	}
	reg.MustRegister(r.state, r.changes)
	return r
}

// OnChange is the monitor's hook (an empty state: the volume was
// unstaged, its metrics go).
func (r *Reporter) OnChange(t Target, h Health) {
	vol := strings.TrimPrefix(t.SubsystemNQN, r.NQNPrefix)
	r.mu.Lock()
	prev := r.last[vol]
	r.last[vol] = h.State
	alarmed := r.alarmed[vol]
	switch h.State {
	case "":
		delete(r.last, vol)
		delete(r.alarmed, vol)
	case StateLost, StateFenced:
		r.alarmed[vol] = true
	case StateLive:
		delete(r.alarmed, vol)
	}
	r.mu.Unlock()
	if prev != "" {
		r.state.DeleteLabelValues(vol, prev)
	}
	if h.State == "" {
		return
	}
	r.state.WithLabelValues(vol, h.State).Set(1)
	r.changes.WithLabelValues(h.State).Inc()
	if r.Recorder == nil {
		return
	}
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: r.NodeName, UID: types.UID(r.NodeName)}} // the kubelet's node reference
	switch h.State {
	case StateLost:
		r.Recorder.Eventf(node, nil, corev1.EventTypeWarning, ReasonVolumeConnectionLost, "Reconnect",
			"volume %s: no NVMe/TCP controller and connecting again fails (%v); its I/O waits and the node agent keeps trying", vol, h.Err)
	case StateFenced:
		r.Recorder.Eventf(node, nil, corev1.EventTypeWarning, ReasonVolumeFenced, "Reconnect",
			"volume %s: the storage refuses this node's host NQN (%v): the volume was given to another node; its waiting I/O was failed and it is never connected here again — delete the pods on this node that use it", vol, h.Err)
	case StateLive:
		if alarmed {
			r.Recorder.Eventf(node, nil, corev1.EventTypeNormal, ReasonVolumeConnectionRestored, "Reconnect",
				"volume %s: connected again; waiting I/O resumed", vol)
		}
	}
}
