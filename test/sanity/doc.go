// Package sanity runs the upstream csi-sanity suite
// (github.com/kubernetes-csi/csi-test/v5/pkg/sanity) against the real
// driver over a unix socket, backed by the RDS simulator over real SSH and,
// for ControllerPublish, the fencing core on the test control plane.
package sanity
