package webhook

import (
	"context"
	"strings"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Event reasons on the PVC, a documented and stable list.
const (
	// EventAdmissionDenied: enforce mode refused a consumer of the claim.
	EventAdmissionDenied = "AdmissionDenied"
	// EventAdmissionWouldDeny: warn or dry-run mode would have refused it.
	EventAdmissionWouldDeny = "AdmissionWouldDeny"
)

// Events records what the webhook refused (or would have).
type Events interface {
	Denied(ctx context.Context, claims []string, reason, message string)
}

// KubeEvents records Warning events on the claims through the
// events.k8s.io/v1 recorder, which merges repeats into a series (a
// controller retrying a refused pod cannot flood the API).
type KubeEvents struct {
	Recorder events.EventRecorder
	// Reader finds the claim (the cache).
	Reader client.Reader
	Log    logr.Logger
}

// Denied records the event on each claim ("namespace/name") it can find.
func (e *KubeEvents) Denied(ctx context.Context, claims []string, reason, message string) {
	for _, c := range claims {
		ns, name, ok := strings.Cut(c, "/")
		if !ok {
			continue
		}
		var pvc corev1.PersistentVolumeClaim
		if err := e.Reader.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &pvc); err != nil {
			e.Log.Info("no event: claim not readable", "claim", c, "error", err.Error())
			continue
		}
		e.Recorder.Eventf(&pvc, nil, corev1.EventTypeWarning, reason, "Admit", "%s", message)
	}
}
