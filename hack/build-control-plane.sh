#!/usr/bin/env bash
# Builds the control plane (kube-apiserver, kube-controller-manager and
# kube-scheduler from k8s.io/kubernetes; etcd from go.etcd.io) and the CSI
# sidecars the local environment runs (csi-provisioner, csi-attacher) from
# the Go module proxy into $BIN, each from its own module under hack/tools
# (their Kubernetes library versions differ). Each binary is built only
# when missing, so later runs reuse it. Usage:
#   hack/build-control-plane.sh BIN_DIR [kube-apiserver|kube-controller-manager|kube-scheduler|etcd|csi-attacher|csi-provisioner ...]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=$(mkdir -p "$1" && cd "$1" && pwd); shift
want=("$@")
[ ${#want[@]} -eq 0 ] && want=(kube-apiserver etcd)
K8S_VERSION=v1.37.2
ld="-s -w -X k8s.io/component-base/version.gitVersion=${K8S_VERSION} -X k8s.io/component-base/version.gitMajor=1 \
-X k8s.io/component-base/version.gitMinor=37 -X k8s.io/client-go/pkg/version.gitVersion=${K8S_VERSION}"
for c in "${want[@]}"; do
  if [ -x "$bin/$c" ]; then continue; fi
  start=$(date +%s)
  echo ">> building $c into $bin (cached there for later runs)"
  case "$c" in
    etcd) (cd "$root/hack/tools/etcd" && go build -trimpath -ldflags "-s -w" -o "$bin/$c.tmp" .) ;;
    kube-*) (cd "$root/hack/tools/k8s" && go build -trimpath -ldflags "$ld" -o "$bin/$c.tmp" "k8s.io/kubernetes/cmd/$c") ;;
    csi-attacher) (cd "$root/hack/tools/$c" && go build -trimpath -ldflags "-s -w -X main.version=v4.13.0" -o "$bin/$c.tmp" github.com/kubernetes-csi/external-attacher/v4/cmd/csi-attacher) ;;
    csi-provisioner) (cd "$root/hack/tools/$c" && go build -trimpath -ldflags "-s -w -X main.version=v5.3.0" -o "$bin/$c.tmp" github.com/kubernetes-csi/external-provisioner/v5/cmd/csi-provisioner) ;;
    *) echo "unknown component $c" >&2; exit 2 ;;
  esac
  mv "$bin/$c.tmp" "$bin/$c"
  echo ">> built $c in $(( $(date +%s) - start ))s"
done
