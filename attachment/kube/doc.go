// Package kube connects the fencing core to Kubernetes with
// controller-runtime: the attachment.Cluster implementation (PV by volume
// handle through a cache index, Node state and host NQN, KubeVirt
// migrations), the attachment.Events implementation (Warning/Normal events
// on the PVC and, when it can be found, the pod) and an attachment.Reader
// over a PV informer cache for the webhook and the reconciler.
//
// It decides nothing: the rules live in package attachment.
package kube
