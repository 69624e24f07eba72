// Package nodeagent is the node side of the driver that is not CSI
// plumbing: the node's NVMe identity (host NQN) and publishing it on the
// Node object, where the controller's storage fence reads it; the
// transports that attach a volume (NVMeConnector over the kernel's
// NVMe/TCP host, LoopConnector for hosts without NVMe); the stable
// device above an attached volume (DMMultipath: a device-mapper
// multipath device that queues I/O while the volume has no path and is
// swapped to a renumbered namespace); the records of staged volumes
// (StagedStore) that a restarted plugin resumes from; and the Monitor that
// keeps every staged volume connected, with its Reporter (events on the
// Node, metrics).
//
// Side effects go through small interfaces (Exec for host tools, sysfs
// and /dev at configurable roots, a Kubernetes client, an event recorder)
// so the same code runs on a host, in a VM and in tests.
package nodeagent
