// Package manifests renders the kustomize overlays under manifests/ for
// the tests that send them to a real API server (server-side dry-run) and
// that run the components as their ServiceAccounts with the rendered RBAC.
package manifests
