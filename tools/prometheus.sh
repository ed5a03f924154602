#!/usr/bin/env bash
# Prometheus and promtool from Debian's `prometheus` package: the package is downloaded and
# only the two binaries are unpacked, so nothing is installed as a service and nothing
# starts. promtool checks and unit-tests the chart's alerting rules; the server scrapes the
# demo for the dashboard's picture (`python -m devenv.demo --dashboard PATH`). Cached by
# package version:
#   ${METAMAPPER_BIN_CACHE:-~/.cache/metamapper-operator/bin}/prometheus-<version>/{prometheus,promtool}
# Prints that folder.
set -euo pipefail
cache=${METAMAPPER_BIN_CACHE:-$HOME/.cache/metamapper-operator/bin}
version=$(apt-cache policy prometheus | awk '/Candidate:/ { print $2 }')
if [ -z "$version" ] || [ "$version" = "(none)" ]; then
  echo "Debian's prometheus package is not known to apt: run 'apt-get update' first" >&2
  exit 1
fi
out="$cache/prometheus-${version//[:+~]/_}"
mkdir -p "$cache"
exec 9>"$cache/.lock-prometheus"
flock 9
if [ ! -x "$out/prometheus" ] || [ ! -x "$out/promtool" ]; then
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  (cd "$work" && apt-get download -q "prometheus=$version" >&2 \
    && dpkg-deb -x prometheus_*.deb root)
  mkdir -p "$out"
  cp "$work/root/usr/bin/prometheus" "$work/root/usr/bin/promtool" "$out/"
fi
echo "$out"
