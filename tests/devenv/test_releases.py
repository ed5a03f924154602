"""An earlier release, off the node: its files from the repository by commit, its image
named by what it is made of wherever its files lie, and the stack installing its chart
and image instead of this checkout's."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from devenv import images, releases
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
