"""The generated reference pages match what they are generated from.

docs/reference/metamapper.md comes from the CRD and docs/reference/helm-values.md from the
chart's values.yaml and values.schema.json; a change to either source without regenerating
the page fails here, naming the command that brings the page up to date.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("script", "page"), [
    ("hack/crd_reference.py", "docs/reference/metamapper.md"),
    ("hack/values_reference.py", "docs/reference/helm-values.md"),
])
def test_generated_page_is_current(script: str, page: str, tmp_path: Path) -> None:
    fresh = tmp_path / Path(page).name
    subprocess.run([sys.executable, str(REPO / script), "--output", str(fresh)],
                   check=True, cwd=REPO)
    committed = (REPO / page).read_text()
    assert committed == fresh.read_text(), (
        f"{page} is stale: run `.venv/bin/python {script}` and commit the page")


def test_reference_names_every_crd_field() -> None:
    """Spot check of the generator's walk: nested, per-item and status fields all appear."""
    page = (REPO / "docs/reference/metamapper.md").read_text()
    for field in ("**`targetWaitSeconds`**", "**`scaleDownStabilizationSeconds`**",
                  "**`throughputPerPod`**", "### `spec.pools[].autoscaling.schedules[]`",
                  "rule `self.minReplicas <= self.maxReplicas`"):
        assert field in page
