"""An earlier release, off the node: its files from the repository by commit, its image
named by what it is made of wherever its files lie, and the stack installing its chart
and image instead of this checkout's."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from devenv import images, releases
from devenv.controlplane import tool_dirs
from devenv.releases import Release, ReleaseError
from devenv.stack import CHART, Stack, image_values

REPO = Path(__file__).resolve().parents[2]


def test_a_commits_files_come_from_the_repository_as_committed(tmp_path: Path) -> None:
    tree = releases.export("HEAD", tmp_path / "head")
    committed = subprocess.run(["git", "-C", str(REPO), "show",
                                f"HEAD:{releases.CHART}/Chart.yaml"],
                               capture_output=True, text=True, check=True).stdout
    assert (tree / releases.CHART / "Chart.yaml").read_text() == committed
    assert (tree / releases.CHART / "crds" / "metamapper.io_metamappers.yaml").is_file()
    assert not (tree / ".git").exists()


def test_a_commit_the_repository_lacks_is_an_error_that_says_so(tmp_path: Path) -> None:
    with pytest.raises(ReleaseError, match=r"git archive 0{40} failed.*shallow clone"):
        releases.export("0" * 40, tmp_path / "none")


def test_the_same_files_elsewhere_hash_the_same_and_a_change_does_not(tmp_path: Path) -> None:
    """An earlier release's image is named by its files' paths within its tree: built once,
    whichever folder its files were exported to."""
    first, second = tmp_path / "a", tmp_path / "b"
    for tree in (first, second):
        (tree / "operator").mkdir(parents=True)
        (tree / "operator" / "x.py").write_text("print(1)\n")
        shutil.copy(REPO / "Dockerfile", tree / "Dockerfile")

    def tag(tree: Path) -> str:
        return images.content_hash("operator", files=[tree / p for p in images.CONTEXT],
                                   root=tree)

    assert tag(first) == tag(second)
    (second / "operator" / "x.py").write_text("print(2)\n")
    assert tag(first) != tag(second)


def test_the_stack_installs_a_releases_chart_and_image_else_this_checkouts(
        tmp_path: Path) -> None:
    assert image_values("localhost/metamapper-operator:0a1b2c") == (
        "--set", "image.repository=localhost/metamapper-operator",
        "--set", "image.tag=0a1b2c")
    previous = Release("f" * 40, tmp_path / "chart", "localhost/metamapper-operator:old")
    assert Stack(tmp_path, "ns", release=previous).chart == tmp_path / "chart"
    assert Stack(tmp_path, "ns").chart == CHART


def test_this_charts_templates_render_over_the_previous_releases_values(
        tmp_path: Path) -> None:
    """``helm upgrade --reuse-values`` (docs/upgrading.md) renders this checkout's templates
    over the previous release's values: its chart's defaults, not this chart's
    (helm's ``chart.Values = oldVals``), so a value added since is absent, not defaulted.
    Every optional object of the chart must still render."""
    chart = tmp_path / "metamapper-operator"
    shutil.copytree(CHART, chart)
    (chart / "values.yaml").write_text(subprocess.run(
        ["git", "-C", str(REPO), "show", f"{releases.PREVIOUS}:{releases.CHART}/values.yaml"],
        capture_output=True, text=True, check=True).stdout)
    _, helm = tool_dirs()
    every_object = [f"{value}=true" for value in (
        "metrics.serviceMonitor.enabled", "metrics.workerPodMonitor.enabled",
        "metrics.prometheusRule.enabled", "metrics.grafanaDashboard.enabled",
        "networkPolicy.enabled")]
    done = subprocess.run([str(helm / "helm"), "template", "mmo", str(chart), "--namespace",
                           "metamapper-system", *(f"--set={v}" for v in every_object)],
                          capture_output=True, text=True, check=False, timeout=120)
    assert done.returncode == 0, done.stderr
    assert {doc["kind"] for doc in yaml.safe_load_all(done.stdout) if doc} >= {
        "PrometheusRule", "ServiceMonitor", "PodMonitor", "NetworkPolicy"}
