"""The documentation site builds with MkDocs in strict mode: no broken link or anchor, no
page missing from the navigation, no navigation entry without its page."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def build(root: Path, site: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir",
                           str(site)], cwd=root, env=env, capture_output=True, text=True,
                          timeout=300)


def test_site_builds_strict_without_warnings(tmp_path: Path) -> None:
    result = build(REPO, tmp_path / "site")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "WARNING" not in output, output
    assert (tmp_path / "site" / "runbooks" / "MetamapperBrokerUnreachable" / "index.html").exists()


def test_strict_build_fails_on_a_broken_link_and_a_page_left_out(tmp_path: Path) -> None:
    """The configuration's strictness itself: a copy of the site with a link to a missing
    page, a missing anchor and a page outside the navigation must not build."""
    root = tmp_path / "copy"
    shutil.copytree(REPO / "docs", root / "docs")
    shutil.copy(REPO / "mkdocs.yml", root / "mkdocs.yml")
    shutil.copy(REPO / "CHANGELOG.md", root / "CHANGELOG.md")
    index = root / "docs" / "index.md"
    broken = "[gone](no-such-page.md), [nowhere](autoscaling.md#no-such-section)"
    index.write_text(f"{index.read_text()}\n{broken}\n")
    (root / "docs" / "orphan.md").write_text("# Not in the navigation\n")
    result = build(root, tmp_path / "site")
    output = result.stdout + result.stderr
    assert result.returncode != 0
    for warning in ("no-such-page.md", "no-such-section", "orphan.md"):
        assert warning in output, output
