// Package devenv is the local environment behind `make run` and the
// end-to-end test: on one machine, without a container runtime, it starts
// etcd, kube-apiserver, kube-controller-manager and kube-scheduler on
// loopback, the RDS simulator (SSH and the loop transport's fabric
// endpoint), the rds-fence controller and webhook, the real CSI sidecars
// external-provisioner and external-attacher, and two simulated nodes
// (Node objects and node-plugin processes on the loop transport) each with
// a small stand-in for the kubelet's volume calls (Kubelet). Story plays
// the fencing story end to end through the API.
//
// Every process runs from the binaries in bin/ (the Makefile builds them)
// with its log in the environment's directory; Stop ends them and removes
// every mount and loop device the environment made. It needs root (loop
// devices, mounts).
package devenv
