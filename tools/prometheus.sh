#!/usr/bin/env bash
# Prometheus and promtool from Debian's `prometheus` package: the package is downloaded and
# only the two binaries are unpacked, so nothing is installed as a service and nothing
# starts. promtool checks and unit-tests the chart's alerting rules; the server scrapes the
# demo for the dashboard's picture (`python -m devenv.demo --dashboard PATH`). Unpacked on
# demand (by `make prometheus`, tests/monitoring, the dashboard's tests, the demo's
# --dashboard) and cached by package version:
#   ${METAMAPPER_BIN_CACHE:-~/.cache/metamapper-operator/bin}/prometheus-<version>/{prometheus,promtool}
# When APT does not know the package (its lists cleaned after the packages went in) or
# cannot download the version its lists name (lists older than the mirror), the lists are
# updated once and it is tried again.
# Prints that folder.
set -euo pipefail
cache=${METAMAPPER_BIN_CACHE:-$HOME/.cache/metamapper-operator/bin}
sudo=$([ "$(id -u)" = 0 ] || echo sudo)
mkdir -p "$cache"
exec 9>"$cache/.lock-prometheus"
flock 9
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Prints the cached folder of the version APT's lists name, unpacked first if it is not
# there; fails when APT does not know the package or cannot download that version.
unpack() {
  local version out tmp
  version=$(apt-cache policy prometheus 2>/dev/null | awk '/Candidate:/ { print $2 }')
  if [ -z "$version" ] || [ "$version" = "(none)" ]; then
    echo "Debian's prometheus package is not known to APT" >&2
    return 1
  fi
  out="$cache/prometheus-${version//[:+~]/_}"
  # The folder is filled beside its place and renamed into it whole: a run killed while
  # copying leaves only the .partial one, which the next run starts over.
  if [ ! -x "$out/prometheus" ] || [ ! -x "$out/promtool" ]; then
    tmp=$(mktemp -d -p "$work") || return 1
    (cd "$tmp" && apt-get download -q "prometheus=$version" >&2 \
      && dpkg-deb -x prometheus_*.deb root) || return 1
    rm -rf "$out.partial" "$out" && mkdir "$out.partial" \
      && cp "$tmp/root/usr/bin/prometheus" "$tmp/root/usr/bin/promtool" "$out.partial/" \
      && mv -T "$out.partial" "$out" || return 1
  fi
  echo "$out"
}

if ! out=$(unpack); then
  echo "updating APT's package lists for Debian's prometheus ..." >&2
  $sudo apt-get update -qq
  out=$(unpack)
fi
echo "$out"
