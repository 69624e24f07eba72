package webhook

import (
	"context"
	"fmt"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	kubevirtv1 "kubevirt.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
)

// Mode says what a refusal does.
type Mode string

const (
	// ModeEnforce refuses the request.
	ModeEnforce Mode = "enforce"
	// ModeWarn admits it with an admission warning carrying the refusal.
	ModeWarn Mode = "warn"
	// ModeDryRun admits it silently; the refusal is only an event and a metric.
	ModeDryRun Mode = "dry-run"
)

// ParseMode validates a mode flag.
func ParseMode(s string) (Mode, error) {
	switch m := Mode(s); m {
	case ModeEnforce, ModeWarn, ModeDryRun:
		return m, nil
	}
	return "", fmt.Errorf("unknown webhook mode %q: want enforce, warn or dry-run", s)
}

// Paths the handler is served on (one per webhook of the configuration).
const (
	PathPods     = "/validate/pods"
	PathBindings = "/validate/bindings"
	PathVMIs     = "/validate/vmis"
)

// Handler is the admission handler for pods, pods/binding and VMIs. It
// decodes the object, reads a per-request View of the cached state, runs
// the pure decision and applies the mode. Requests marked dryRun get the
// same answer and no event.
type Handler struct {
	State   *CachedState
	Options Options
	// mode is set with SetMode (enforce until then); it may change while
	// serving.
	mode    atomic.Value
	Events  Events
	Metrics *Metrics
	Decoder admission.Decoder
	Log     logr.Logger
}

var _ admission.Handler = (*Handler)(nil)

// SetMode changes what a refusal does, for the requests that follow.
func (h *Handler) SetMode(m Mode) { h.mode.Store(m) }

// Mode is the current mode (enforce unless set).
func (h *Handler) Mode() Mode {
	if m, ok := h.mode.Load().(Mode); ok {
		return m
	}
	return ModeEnforce
}

// Handle implements admission.Handler.
func (h *Handler) Handle(ctx context.Context, req admission.Request) admission.Response {
	start := time.Now()
	resource, d, err := h.decide(ctx, req)
	if err != nil {
		h.Metrics.observe(resource, "errored", ReasonMalformed, time.Since(start))
		h.Log.Error(err, "malformed admission request", "uid", req.UID, "resource", resource)
		return admission.Errored(http.StatusBadRequest, err)
	}
	mode := h.Mode()
	resp, result := h.apply(ctx, req, d, mode)
	h.Metrics.observe(resource, result, d.Reason, time.Since(start))
	if !d.Allowed {
		h.Log.Info("admission refusal", "mode", mode, "result", result, "reason", d.Reason, "resource", resource,
			"namespace", req.Namespace, "name", req.Name, "user", req.UserInfo.Username, "dryRun", isDryRun(req), "message", d.Message)
	}
	return resp
}

// decide routes the request to its decision. err is for requests that
// cannot be read at all.
func (h *Handler) decide(ctx context.Context, req admission.Request) (string, Decision, error) {
	res := req.Resource
	if req.UID == "" || req.Operation == "" || res.Resource == "" {
		return res.Resource, Decision{}, fmt.Errorf("malformed AdmissionReview: the request has no uid, operation or resource")
	}
	view := h.State.View(ctx)
	if req.Operation == admissionv1.Update && res.Group == "" && res.Resource == "pods" && req.SubResource == "" {
		return h.decideLabelChange(req, view)
	}
	if req.Operation != admissionv1.Create {
		return res.Resource, Decision{Allowed: true, Reason: "not-create"}, nil
	}
	var d Decision
	switch {
	case res.Group == "" && res.Resource == "pods" && req.SubResource == "":
		var pod corev1.Pod
		if err := h.decodeInto(req, &pod, "Pod"); err != nil {
			return "pods", d, err
		}
		if pod.Namespace == "" {
			pod.Namespace = req.Namespace
		}
		if pod.Name == "" {
			pod.Name = req.Name
		}
		if pod.Spec.NodeName != "" {
			d = DecidePodOnNode(&pod, pod.Spec.NodeName, req.UserInfo.Username, view, h.Options)
		} else {
			d = DecidePodUnscheduled(&pod, req.UserInfo.Username, view, h.Options)
		}
	case res.Group == "" && res.Resource == "pods" && req.SubResource == "binding":
		var b corev1.Binding
		if err := h.decodeInto(req, &b, "Binding"); err != nil {
			return "bindings", d, err
		}
		if b.Target.Name == "" {
			return "bindings", d, fmt.Errorf("the Binding of pod %s/%s names no target node", req.Namespace, req.Name)
		}
		if !view.Synced() {
			return "bindings", notSynced(), nil
		}
		pod, err := view.Pod(req.Namespace, req.Name, b.UID)
		if err != nil {
			return "bindings", Decision{Reason: ReasonUnknown, Message: fmt.Sprintf(
				"cannot check the binding of pod %s/%s to node %s: %v; retry", req.Namespace, req.Name, b.Target.Name, err)}, nil
		}
		d = DecideBinding(pod, b.Target.Name, view, h.Options)
		return "bindings", h.failClosed(view, d), nil
	case res.Group == kubevirtv1.SchemeGroupVersion.Group && res.Resource == "virtualmachineinstances" && req.SubResource == "":
		if !h.State.KubeVirt {
			return "vmis", Decision{Reason: ReasonUnknown, Message: "the rds-fence webhook was started before KubeVirt was installed and does not watch VMIs or migrations; restart the webhook pods"}, nil
		}
		var vmi kubevirtv1.VirtualMachineInstance
		if err := h.decodeInto(req, &vmi, "VirtualMachineInstance"); err != nil {
			return "vmis", d, err
		}
		if vmi.Namespace == "" {
			vmi.Namespace = req.Namespace
		}
		d = DecideVMI(&vmi, view, h.Options)
		return "vmis", h.failClosed(view, d), nil
	default:
		return res.Resource, Decision{Allowed: true, Reason: "not-handled"}, nil
	}
	return "pods", h.failClosed(view, d), nil
}

// decideLabelChange decides a pod UPDATE: only a change of KubeVirt's
// migration labels matters (a binding trusts them to be KubeVirt's).
func (h *Handler) decideLabelChange(req admission.Request, view *View) (string, Decision, error) {
	var pod, old corev1.Pod
	if err := h.decodeInto(req, &pod, "Pod"); err != nil {
		return "pods", Decision{}, err
	}
	if err := h.Decoder.DecodeRaw(req.OldObject, &old); err != nil {
		return "pods", Decision{}, fmt.Errorf("cannot decode the old Pod in AdmissionReview %s: %w", req.UID, err)
	}
	changed := false
	for _, l := range []string{LabelMigrationJobUID, LabelCreatedBy} {
		if pod.Labels[l] != old.Labels[l] {
			changed = true
		}
	}
	if !changed || pod.Labels[LabelMigrationJobUID] == "" {
		return "pods", Decision{Allowed: true, Reason: "labels-unchanged"}, nil
	}
	if pod.Namespace == "" {
		pod.Namespace = req.Namespace
	}
	return "pods", h.failClosed(view, DecideMigrationLabels(&pod, req.UserInfo.Username, view, h.Options)), nil
}

func (h *Handler) decodeInto(req admission.Request, into runtime.Object, kind string) error {
	if err := h.Decoder.Decode(req, into); err != nil {
		return fmt.Errorf("cannot decode the %s in AdmissionReview %s: %w", kind, req.UID, err)
	}
	return nil
}

// failClosed turns any decision made on a view with read errors into a
// refusal.
func (h *Handler) failClosed(v *View, d Decision) Decision {
	if err := v.Err(); err != nil {
		return Decision{Reason: ReasonUnknown, Claims: d.Claims,
			Message: fmt.Sprintf("the rds-fence webhook cannot read the cluster state it needs (%v), so it cannot tell whether another node holds this volume; retry, and check the webhook's logs if it persists", err)}
	}
	return d
}

// apply turns a decision into a response under the mode, and records the
// event for a refusal (not for dryRun requests).
func (h *Handler) apply(ctx context.Context, req admission.Request, d Decision, mode Mode) (admission.Response, string) {
	if d.Allowed {
		resp := admission.Allowed("")
		if mode != ModeDryRun && len(d.Warnings) > 0 {
			resp = resp.WithWarnings(d.Warnings...)
		}
		return resp, "allowed"
	}
	reason, result := EventAdmissionWouldDeny, "dry-run-denied"
	resp := admission.Allowed("")
	switch mode {
	case ModeWarn:
		result = "warned"
		resp = resp.WithWarnings("rds-fence would refuse this: " + d.Message)
	case ModeEnforce:
		reason, result = EventAdmissionDenied, "denied"
		resp = admission.Denied(d.Message)
	}
	if h.Events != nil && !isDryRun(req) && len(d.Claims) > 0 {
		h.Events.Denied(ctx, d.Claims, reason, d.Message)
	}
	return resp, result
}

func isDryRun(req admission.Request) bool { return req.DryRun != nil && *req.DryRun }
