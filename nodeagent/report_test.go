package nodeagent

import (
	"errors"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"k8s.io/client-go/tools/events"
)

func TestReporter(t *testing.T) {
	reg := prometheus.NewRegistry()
	rec := events.NewFakeRecorder(10)
	r := NewReporter(reg, rec, "node-a", "nqn.2000-02.com.mikrotik:")
	tgt := Target{SubsystemNQN: "nqn.2000-02.com.mikrotik:pvc-1"}
	for _, h := range []Health{{State: StateLive}, {State: StateReconnecting}, {State: StateLost, Err: errors.New("connection refused")},
		{State: StateFenced, Err: errors.New("not admitted")}, {State: StateReconnecting}, {State: StateLive}} {
		r.OnChange(tgt, h)
	}
	if got := testutil.ToFloat64(r.state.WithLabelValues("pvc-1", StateLive)); got != 1 {
		t.Fatalf("live gauge %v", got)
	}
	if n := testutil.CollectAndCount(r.state); n != 1 {
		t.Fatalf("%d state series, want only the current one", n)
	}
	if got := testutil.ToFloat64(r.changes.WithLabelValues(StateLost)); got != 1 {
		t.Fatalf("lost changes %v", got)
	}
	close(rec.Events)
	var got []string
	for e := range rec.Events {
		got = append(got, e)
	}
	if len(got) != 3 || !strings.Contains(got[0], ReasonVolumeConnectionLost) || !strings.Contains(got[0], "connection refused") ||
		!strings.Contains(got[1], ReasonVolumeFenced) || !strings.Contains(got[1], "delete the pods") ||
		!strings.Contains(got[2], ReasonVolumeConnectionRestored) {
		t.Fatalf("events %q (a kernel reconnect must not make one)", got)
	}
	r.OnChange(tgt, Health{}) // unstaged
	if n := testutil.CollectAndCount(r.state); n != 0 {
		t.Fatalf("%d state series after unstage", n)
	}
}
