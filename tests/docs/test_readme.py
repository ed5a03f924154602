"""README.md stays a short front door whose commands work as written: the Metamapper it
applies is the example the demo and the end-to-end tests apply, every make target it names
exists, every benchmark it quotes exists with the options it passes, and every link lands."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text()


def test_readme_is_short() -> None:
    assert len(README.splitlines()) <= 250


def test_the_minimal_metamapper_is_the_example() -> None:
    heredoc = re.search(r"<<'EOF'\n(.*?)\nEOF\n", README, re.S)
    assert heredoc, "README.md applies no Metamapper"
    example = yaml.safe_load((REPO / "examples" / "metamapper.yaml").read_text())
    assert yaml.safe_load(heredoc.group(1)) == example


def test_make_targets_exist() -> None:
    makefile = (REPO / "Makefile").read_text()
    targets = set(re.findall(r"^([a-z-]+):", makefile, re.M))
    named = set(re.findall(r"`make ([a-z-]+)", README)) | set(
        re.findall(r"^make ([a-z-]+)", README, re.M))
    assert named and named <= targets, named - targets


def test_benchmark_commands_exist_with_their_options() -> None:
    commands = re.findall(r"`python (bench/\w+\.py)((?: --[\w-]+(?: [\w.]+)*)*)`", README)
    assert commands
    for script, options in commands:
        source = (REPO / script).read_text()
        for option in re.findall(r"--[\w-]+", options):
            assert f'"{option}"' in source, f"{script} has no option {option}"


def test_relative_links_land() -> None:
    links = re.findall(r"\]\(((?!https?://)[^)#]+)(?:#[^)]*)?\)", README)
    assert links
    missing = [link for link in links if not (REPO / link).exists()]
    assert not missing, missing
