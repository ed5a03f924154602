#!/usr/bin/env bash
# Build the local cluster (etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
# and the node's kubelet and kube-proxy), kubectl, helm and the cluster DNS (CoreDNS)
# from their published Go modules, into a cache keyed by version and recipe:
#   ${METAMAPPER_BIN_CACHE:-~/.cache/metamapper-operator/bin}/k8s-<version>-<recipe>/
#   ${METAMAPPER_BIN_CACHE:-~/.cache/metamapper-operator/bin}/helm-<version>-<recipe>/
#   ${METAMAPPER_BIN_CACHE:-~/.cache/metamapper-operator/bin}/coredns-<version>-<recipe>/
# (<recipe> hashes the build flags and the go.sum files, and CoreDNS's main.go, which
# picks its plugins, so a changed build is rebuilt.)
# A second run finds the binaries there and returns at once. Prints the three folders,
# one a line, in that order.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache=${METAMAPPER_BIN_CACHE:-$HOME/.cache/metamapper-operator/bin}
export GOFLAGS=-mod=mod CGO_ENABLED=0

# The version go.mod requires of a module, in a require block or a one-line require.
version_of() {
  awk -v m="$2" '$1 == m { print $2; exit } $1 == "require" && $2 == m { print $3; exit }' "$1"
}
k8s=$(version_of "$here/kube/go.mod" k8s.io/kubernetes)
helm=$(version_of "$here/helm/go.mod" helm.sh/helm/v4)
# Stamp the Kubernetes version into the binaries as a release build would (a module
# build otherwise reports v0.0.0-master, which e.g. a chart's kubeVersion refuses).
IFS=. read -r major minor _ <<<"${k8s#v}"
stamp="-X k8s.io/component-base/version.gitVersion=$k8s -X k8s.io/component-base/version.gitMajor=$major"
stamp+=" -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/client-go/pkg/version.gitVersion=$k8s"
stamp+=" -X k8s.io/client-go/pkg/version.gitMajor=$major -X k8s.io/client-go/pkg/version.gitMinor=$minor"
flags=(-trimpath "-ldflags=-s -w $stamp")
recipe=$(echo "${flags[*]}" | cat - "$here/kube/go.sum" "$here/helm/go.sum" | sha256sum | cut -c1-8)
coredns=$(version_of "$here/coredns/go.mod" github.com/coredns/coredns)
coredns_flags=(-trimpath "-ldflags=-s -w")
coredns_recipe=$(echo "${coredns_flags[*]}" | cat - "$here/coredns/go.sum" "$here/coredns/main.go" \
  | sha256sum | cut -c1-8)

build() {  # build <name of its flags array> <module dir> <output dir> <package=binary name>...
  local -n build_flags=$1
  local dir=$2 out=$3; shift 3
  local missing=()
  for spec in "$@"; do [ -x "$out/${spec#*=}" ] || missing+=("$spec"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  mkdir -p "$out.partial"
  for spec in "${missing[@]}"; do
    local pkg=${spec%=*} bin=${spec#*=} start=$SECONDS
    echo "building $bin ($pkg) ..." >&2
    (cd "$dir" && go build "${build_flags[@]}" -o "$out.partial/$bin" "$pkg")
    echo "  $bin built in $((SECONDS - start))s" >&2
  done
  mkdir -p "$out"
  mv "$out.partial"/* "$out"/ && rmdir "$out.partial"
}

command -v go >/dev/null || { echo "go not found: install Go (>= 1.25)" >&2; exit 1; }
mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9  # one build at a time; a second caller waits, then finds the binaries built
build flags "$here/kube" "$cache/k8s-$k8s-$recipe" \
  go.etcd.io/etcd/server/v3=etcd \
  k8s.io/kubernetes/cmd/kube-apiserver=kube-apiserver \
  k8s.io/kubernetes/cmd/kube-controller-manager=kube-controller-manager \
  k8s.io/kubernetes/cmd/kube-scheduler=kube-scheduler \
  k8s.io/kubernetes/cmd/kubelet=kubelet \
  k8s.io/kubernetes/cmd/kube-proxy=kube-proxy \
  k8s.io/kubernetes/cmd/kubectl=kubectl
build flags "$here/helm" "$cache/helm-$helm-$recipe" helm.sh/helm/v4/cmd/helm=helm
# CoreDNS with only the plugins the local cluster's Corefile uses (coredns/main.go)
build coredns_flags "$here/coredns" "$cache/coredns-$coredns-$coredns_recipe" .=coredns
echo "$cache/k8s-$k8s-$recipe"
echo "$cache/helm-$helm-$recipe"
echo "$cache/coredns-$coredns-$coredns_recipe"
