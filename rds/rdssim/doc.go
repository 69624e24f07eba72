// Package rdssim is a simulated MikroTik RDS for tests, benchmarks and the
// local environment: a real SSH server (host key and authorized keys
// required, like the appliance) that executes the RouterOS CLI subset the
// driver uses (`/disk add|set|remove|print`, `/file remove|print`,
// `/system identity print`) and prints the real output format with its
// quirks (CRLF, wrapped Flags legend, index prefixes, mid-token wraps,
// space-grouped numbers, errors on stdout with exit status 0).
//
// Disks are sparse files under a root directory, so a node can loop-mount
// a volume's file. The `nvme-tcp-server-allow-host-name` property is kept
// and enforced by Connect, the simulated NVMe/TCP connect. Faults can be
// injected: latency, disk full, failing commands, dropped connections, a
// slot-name length limit and a per-connection session limit.
//
// It must never be used against, or mistaken for, a production RDS: it
// stores state in memory only.
package rdssim
