#!/usr/bin/env bash
# Render the one-file install, deploy/install.yaml, from the Helm chart with its default
# values, and copy the CRDs of crds/ (their one source) into the chart's crds/ folder.
#   hack/render-manifests.sh           write both
#   hack/render-manifests.sh --check   write nothing; fail with a diff if either is stale
# HELM names the helm binary; by default the one tools/build.sh builds (or finds cached).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
chart=$repo/charts/metamapper-operator
install=$repo/deploy/install.yaml
helm=${HELM:-$("$repo/tools/build.sh" | sed -n 2p)/helm}
namespace=metamapper-system

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -R "$chart" "$work/chart"
cp "$repo"/crds/*.yaml "$work/chart/crds/"
{
  cat <<HEADER
# metamapper-operator: CRDs, RBAC and the operator (cluster-wide) in namespace $namespace.
#   kubectl apply -f deploy/install.yaml
# Rendered by \`make manifests\` from charts/metamapper-operator with its default values:
# do not edit. For other settings install the chart instead (helm install --set ...).
---
apiVersion: v1
kind: Namespace
metadata:
  name: $namespace
  labels:
    app.kubernetes.io/part-of: metamapper-operator
    pod-security.kubernetes.io/enforce: restricted
    pod-security.kubernetes.io/warn: restricted
HEADER
  "$helm" template metamapper-operator "$work/chart" --namespace "$namespace" --include-crds
} >"$work/install.yaml"

if [ "${1:-}" = --check ]; then
  stale=0
  for crd in "$repo"/crds/*.yaml; do
    diff -u "$chart/crds/${crd##*/}" "$crd" || stale=1
  done
  diff -u "$install" "$work/install.yaml" || stale=1
  if [ "$stale" = 1 ]; then
    echo "stale: run \`make manifests\` and commit the result" >&2
    exit 1
  fi
else
  cp "$repo"/crds/*.yaml "$chart/crds/"
  cp "$work/install.yaml" "$install"
fi
