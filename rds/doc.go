// Package rds is the RouterOS SSH client for a MikroTik RDS: it builds the
// `/disk` and `/file` commands, runs them over SSH, parses their
// `print detail` output (ParseDetail, ParseSize) and classifies RouterOS
// error messages (ClassifyOutput) into the sentinel errors of errors.go.
//
// It never decides gRPC codes: callers map the sentinels (errors.Is) to
// their own codes at the RPC boundary. It must not import rds/rdssim, the
// simulator that tests it.
package rds
