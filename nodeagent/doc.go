// Package nodeagent is the node side of the driver that is not CSI
// plumbing: the node's NVMe host identity (host NQN) and publishing it on
// the Node object, where the controller's storage fence reads it. The
// NVMe/TCP connector, the loop transport and the reconnect monitor will
// live here too (issue 6).
//
// Side effects go through small interfaces (a file system rooted at a
// configurable directory, a Kubernetes client) so the same code runs on a
// host, in a VM and in tests.
package nodeagent
