// Package csi implements the CSI Identity and Controller services of the
// rds-fence driver (the Node service follows in its own files).
//
// It owns the mapping from CSI requests to RDS disks: volume IDs (slots),
// NQNs and backing-file paths, size rounding, idempotency and per-volume
// in-flight protection. It is the only package that chooses gRPC status
// codes: inner packages (rds, attachment) return sentinel errors that
// errors.go maps in one place. It must not talk SSH itself (that is package
// rds) nor decide who may hold a volume (that is package attachment).
package csi
