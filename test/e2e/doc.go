// Package e2e drives the local environment (devenv: the real control
// plane, the RDS simulator, the controller, the webhook, the CSI sidecars
// and two simulated nodes) through the Kubernetes API only, as
// `make run STORY=1` does, and checks every step of the fencing story.
package e2e
