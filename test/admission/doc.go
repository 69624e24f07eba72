// Package admission runs the admission webhook (wired as `rds-fence
// webhook` wires it, self-signed certificates included) behind the real
// kube-apiserver under envtest, with the shipped ValidatingWebhookConfiguration
// pointed at loopback: pods, scheduler bindings, VMIs and KubeVirt
// migration targets go through the API server exactly as in a cluster.
// Benchmarks measure the decision latency with a large cache and the
// pod-creation overhead of the webhook.
package admission
