"""An earlier release of the operator, to install instead of this checkout's: the upgrade
test starts its stack under one and upgrades to this checkout as docs/upgrading.md says.

A release is named by its commit (tags may not reach every clone). Its files come from
``git archive`` of that commit (a worktree would leave an entry in the repository to prune
if the run is killed); its chart is used from there, and carries its CRD in ``crds/``, which
``helm install`` creates as on a user's first install. Its operator image is built from
those files by this checkout's ``devenv.images``, on the same bases, with the commit's own
Dockerfile, and loaded into the node: the image is named by a hash of what it is made of,
so a commit builds once, and both versions' images live side by side in the node's store.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from devenv import images
from devenv.controlplane import REPO
from devenv.errors import DevenvError

CHART = Path("charts") / "metamapper-operator"
#: 0.1.0 (CHANGELOG.md): the commit before the one that began the changelog's Unreleased
#: section (6457115), whose chart and images say 0.1.0.
PREVIOUS = "fa9ec10759186a05468b1271b416622bc1a0c842"


class ReleaseError(DevenvError):
    """The release's files could not be had from the repository; the message says why."""


@dataclass(frozen=True)
class Release:
    """An operator release: its commit, its chart, and its operator image in the node."""

    commit: str
    chart: Path
    operator: str


def export(commit: str, into: Path, repo: Path = REPO) -> Path:
    """The files of ``commit`` (of ``repo``) written into the folder ``into``."""
    archive = subprocess.run(["git", "-C", str(repo), "archive", "--format=tar", commit],
                             capture_output=True, check=False)
    if archive.returncode:
        raise ReleaseError(
            f"git archive {commit} failed: {archive.stderr.decode(errors='replace').strip()}"
            " (a shallow clone lacks the commit: git fetch --unshallow)")
    into.mkdir(parents=True, exist_ok=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into


def prepare(commit: str, home: Path) -> Release:
    """The release of ``commit``: its files under ``home``, its operator image built (or
    found) and loaded into the node."""
    tree = export(commit, home / commit)
    operator = images.project_image("operator", images.bases(), tree=tree)
    images.load_into_node(images.pause_image().name, [operator.name])
    return Release(commit, tree / CHART, operator.name)
