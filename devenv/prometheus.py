"""A real Prometheus server (Debian's, unpacked by ``tools/prometheus.sh``) on loopback, its
scrape targets in a file it watches, and its HTTP API's range queries."""

from __future__ import annotations

import json
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from devenv.controlplane import REPO, free_port
from devenv.errors import DevenvError
from devenv.stack import Daemon, spawn, wait_http


class PrometheusError(DevenvError):
    """Prometheus refused a query or could not be had; the message says why."""


def binaries() -> Path:
    """The folder holding ``prometheus`` and ``promtool`` (unpacked once, then cached)."""
    done = subprocess.run(["bash", str(REPO / "tools" / "prometheus.sh")],
                          stdout=subprocess.PIPE, text=True, check=False, timeout=600)
    if done.returncode:
        raise PrometheusError("tools/prometheus.sh failed (see above): Debian's prometheus "
                              "package is needed")
    return Path(done.stdout.split()[-1])


@dataclass(frozen=True)
class Series:
    """One series of a range query: its labels, and its samples' times (seconds since the
    epoch) and values (NaN where PromQL gives NaN, as a quantile of no observation)."""

    labels: dict[str, str]
    times: list[float]
    values: list[float]


def write_targets(path: Path, groups: Sequence[dict[str, Any]]) -> None:
    """Write the target groups a ``file_sd_configs`` job reads, whole or not at all (the
    file is replaced, so Prometheus never reads half of it); untouched when unchanged."""
    text = json.dumps(list(groups), indent=1, sort_keys=True)
    if path.exists() and path.read_text() == text:
        return
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text)
    partial.replace(path)


@dataclass
class Prometheus:
    """A Prometheus server started by :func:`start`; stop it with :meth:`stop`."""

    daemon: Daemon
    url: str

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[Series]:
        """``expr`` evaluated every ``step`` seconds from ``start`` to ``end``."""
        query = urllib.parse.urlencode({"query": expr, "start": f"{start:.3f}",
                                        "end": f"{end:.3f}", "step": f"{step:g}"})
        try:
            with urllib.request.urlopen(f"{self.url}/api/v1/query_range?{query}",
                                        timeout=30) as response:
                status, raw = response.status, response.read()
        except urllib.error.HTTPError as error:  # a bad query: Prometheus says why
            status, raw = error.code, error.read()
        try:
            body = json.loads(raw)
        except ValueError:  # not Prometheus' API answering (a proxy, another server)
            body = None
        if not isinstance(body, dict):
            text = " ".join(raw[:200].decode(errors="replace").split())
            raise PrometheusError(f"{expr}: HTTP {status}, not Prometheus' JSON: {text}")
        if body.get("status") != "success":
            raise PrometheusError(f"{expr}: {body.get('error', body)}")
        return [Series(found["metric"], [float(t) for t, _ in found["values"]],
                       [float(v) for _, v in found["values"]])
                for found in body["data"]["result"]]

    def stop(self) -> None:
        self.daemon.stop()


def start(root: Path, config: dict[str, Any]) -> Prometheus:
    """Prometheus with ``config`` (its data and log under ``root``), on a free loopback
    port; returns once it is ready, else (not ready in time, or interrupted) stops it and
    raises."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    daemon = spawn("prometheus", [
        str(binaries() / "prometheus"), f"--config.file={root / 'prometheus.yml'}",
        f"--storage.tsdb.path={root / 'data'}", f"--web.listen-address=127.0.0.1:{port}",
        "--log.level=warn"], root / "prometheus.log", env={})
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(daemon, f"{url}/-/ready", 60)
    except BaseException:
        # In a session of its own, a Ctrl-C at the terminal never reaches it; the caller
        # has no handle on it yet.
        daemon.stop()
        raise
    return Prometheus(daemon, url)
