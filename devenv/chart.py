"""The project's Helm chart rendered with ``helm template``: its objects for the tests, and
the scrape configuration of its monitoring objects for a Prometheus of the development
environment's own."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import yaml

from devenv import monitors
from devenv.controlplane import REPO, tool_dirs

CHART = REPO / "charts" / "metamapper-operator"
#: The chart's scrape objects, which are off by default.
MONITORS = {"metrics": {"serviceMonitor": {"enabled": True},
                        "workerPodMonitor": {"enabled": True}}}


def render(values: dict[str, Any], release: str, namespace: str) -> list[dict[str, Any]]:
    """Every object the chart makes with ``values`` for ``release`` in ``namespace``."""
    _, helm = tool_dirs()
    out = subprocess.run([str(helm / "helm"), "template", release, str(CHART), "--namespace",
                          namespace, "--values", "-"], input=json.dumps(values),
                         capture_output=True, text=True, check=True, timeout=120).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def scrape_config(release: str, namespace: str, targets_file: Path, interval: str
                  ) -> dict[str, Any]:
    """A Prometheus configuration that scrapes, every ``interval``, the pods listed in
    ``targets_file`` as the chart's ServiceMonitor and PodMonitor for ``release`` in
    ``namespace`` would (``devenv.monitors``)."""
    objects = render(MONITORS, release, namespace)
    return {"global": {"scrape_interval": interval},
            "scrape_configs": monitors.scrape_jobs(objects, targets_file, interval)}
