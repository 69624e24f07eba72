// Package attachment is the fencing core: the one place that knows which
// node(s) hold which volume, and the rules that decide whether another node
// may take it.
//
// It owns the attachment Record, the in-memory Store (per-volume locks, no
// global lock held across I/O), the pure decision functions for RWO and
// RWX-block (KubeVirt live migration) volumes, and the PV-annotation codec
// that persists records. Its read side (Decode, Reader) works on a PV from
// an informer cache as well as on the live store, so the webhook and the
// reconciler read the same truth the controller writes.
//
// It must not talk SSH or gRPC: the storage-side fence and the Kubernetes
// API are reached through small interfaces injected by the caller, and
// errors are typed (ConflictError, ErrUnavailable) for the caller to map to
// its own codes.
package attachment
