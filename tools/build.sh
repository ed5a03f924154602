#!/usr/bin/env bash
# Build the local control plane (etcd, kube-apiserver, kube-controller-manager), kubectl
# and helm from their published Go modules, into a cache keyed by version:
#   ${METAMAPPER_BIN_CACHE:-~/.cache/metamapper-operator/bin}/k8s-<version>/
#   ${METAMAPPER_BIN_CACHE:-~/.cache/metamapper-operator/bin}/helm-<version>/
# A second run finds the binaries there and returns at once. Prints the two folders.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache=${METAMAPPER_BIN_CACHE:-$HOME/.cache/metamapper-operator/bin}
export GOFLAGS=-mod=mod CGO_ENABLED=0

version_of() { awk -v m="$2" '$1 == m { print $2; exit }' "$1"; }
k8s=$(version_of "$here/kube/go.mod" k8s.io/kubernetes)
helm=$(version_of "$here/helm/go.mod" helm.sh/helm/v4)

build() {  # build <module dir> <output dir> <package=binary name>...
  local dir=$1 out=$2; shift 2
  local missing=()
  for spec in "$@"; do [ -x "$out/${spec#*=}" ] || missing+=("$spec"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  mkdir -p "$out.partial"
  for spec in "${missing[@]}"; do
    local pkg=${spec%=*} bin=${spec#*=} start=$SECONDS
    echo "building $bin ($pkg) ..." >&2
    (cd "$dir" && go build -trimpath -ldflags='-s -w' -o "$out.partial/$bin" "$pkg")
    echo "  $bin built in $((SECONDS - start))s" >&2
  done
  mkdir -p "$out"
  mv "$out.partial"/* "$out"/ && rmdir "$out.partial"
}

command -v go >/dev/null || { echo "go not found: install Go (>= 1.25)" >&2; exit 1; }
build "$here/kube" "$cache/k8s-$k8s" \
  go.etcd.io/etcd/server/v3=etcd \
  k8s.io/kubernetes/cmd/kube-apiserver=kube-apiserver \
  k8s.io/kubernetes/cmd/kube-controller-manager=kube-controller-manager \
  k8s.io/kubernetes/cmd/kubectl=kubectl
build "$here/helm" "$cache/helm-$helm" helm.sh/helm/v4/cmd/helm=helm
echo "$cache/k8s-$k8s"
echo "$cache/helm-$helm"
