#!/usr/bin/env bash
# Prometheus' promtool (the chart's alerting rules are checked and unit-tested with it),
# from Debian's `prometheus` package: the package is downloaded and only promtool is
# unpacked, so no Prometheus server is installed or started. Cached by package version:
#   ${METAMAPPER_BIN_CACHE:-~/.cache/metamapper-operator/bin}/promtool-<version>/promtool
# Prints that folder.
set -euo pipefail
cache=${METAMAPPER_BIN_CACHE:-$HOME/.cache/metamapper-operator/bin}
version=$(apt-cache policy prometheus | awk '/Candidate:/ { print $2 }')
if [ -z "$version" ] || [ "$version" = "(none)" ]; then
  echo "Debian's prometheus package is not known to apt: run 'apt-get update' first" >&2
  exit 1
fi
out="$cache/promtool-${version//[:+~]/_}"
mkdir -p "$cache"
exec 9>"$cache/.lock-promtool"
flock 9
if [ ! -x "$out/promtool" ]; then
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  (cd "$work" && apt-get download -q "prometheus=$version" >&2 \
    && dpkg-deb -x prometheus_*.deb root)
  mkdir -p "$out"
  cp "$work/root/usr/bin/promtool" "$out/promtool"
fi
echo "$out"
