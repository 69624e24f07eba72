// Package simtest starts an RDS simulator behind a real SSH server on
// loopback for tests and benchmarks, with fresh host and client keys, and
// builds rds clients that pin the simulator's host key. Test code only.
package simtest
