"""The project's Helm chart rendered with ``helm template`` (the chart's monitoring objects,
read by the tests and by the demo's Prometheus)."""

from __future__ import annotations

import json
import subprocess
from typing import Any

import yaml

from devenv.controlplane import REPO, tool_dirs

CHART = REPO / "charts" / "metamapper-operator"


def render(values: dict[str, Any], release: str, namespace: str) -> list[dict[str, Any]]:
    """Every object the chart makes with ``values`` for ``release`` in ``namespace``."""
    _, helm = tool_dirs()
    out = subprocess.run([str(helm / "helm"), "template", release, str(CHART), "--namespace",
                          namespace, "--values", "-"], input=json.dumps(values),
                         capture_output=True, text=True, check=True, timeout=120).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]
