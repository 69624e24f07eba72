// Package fencing tests the fencing core end to end against real parts:
// the kube-apiserver and etcd that `make test` builds (envtest, with
// minimal KubeVirt CRDs from test/crds), a controller-runtime cache, the
// client-go event recorder, and the RDS simulator over SSH. It drives the
// CSI controller's ControllerPublish/Unpublish exactly as the
// external-attacher would.
package fencing
