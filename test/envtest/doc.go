// Package envtest checks the test control plane that later suites build on:
// the kube-apiserver and etcd that `make test` builds into bin/ from the Go
// module proxy, started by controller-runtime's envtest.
package envtest
