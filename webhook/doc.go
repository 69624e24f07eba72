// Package webhook holds the admission decisions that refuse, at the API,
// a Pod, a scheduler Binding or a KubeVirt VMI that would attach a
// ReadWriteOnce volume of this driver to a second node.
//
// Each decision is a pure function of the admitted object and a Snapshot
// of cached cluster state (PVs with their attachment records, PVCs,
// VolumeAttachments, Nodes, VMIs, migrations): no API call, no side
// effect. The HTTP/TLS wiring, modes (enforce, warn, dry-run), events and
// metrics live beside them and call these functions.
//
// It reads the same attachment records the controller writes (package
// attachment) and applies the same notion of a live holder: a node that
// exists and is not tainted out-of-service. When the snapshot cannot say
// (cache not synced, unreadable record), it refuses.
package webhook
