"""The Dockerfile agrees with the entrypoint it packages (no Docker engine runs here)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from metamapper.cli import cli

DOCKERFILE = Path(__file__).resolve().parents[2] / "Dockerfile"
VIRTUALENV = DOCKERFILE.parent / "docker" / "virtualenv.py"


def _stages() -> dict[str, list[str]]:
    """Instructions of each stage, by stage name (continuation lines joined)."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    stages: dict[str, list[str]] = {}
    current: list[str] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = re.match(r"FROM\s+\S+\s+AS\s+(\S+)", line, re.IGNORECASE)
        if match:
            current = stages.setdefault(match[1], [])
        current.append(line)
    return stages


def _instruction(stage: list[str], name: str) -> str | None:
    found = [line for line in stage if line.upper().startswith(name + " ")]
    return found[-1][len(name) + 1:] if found else None


def _inherited(stages: dict[str, list[str]], name: str, instruction: str) -> str | None:
    stage = stages[name]
    value = _instruction(stage, instruction)
    if value is None:
        parent = stage[0].split()[1]
        return _inherited(stages, parent, instruction) if parent in stages else None
    return value


@pytest.mark.parametrize(("target", "command"), [("worker", "worker"), ("operator", "operator")])
def test_targets_run_the_entrypoint(target: str, command: str) -> None:
    stages = _stages()
    assert _instruction(stages[target], "ENTRYPOINT") == '["metamapper"]'
    cmd = json.loads(_instruction(stages[target], "CMD") or "[]")
    assert cmd == [command] and command in cli.commands


@pytest.mark.parametrize("target", ["worker", "operator"])
def test_targets_are_non_root_without_compilers(target: str) -> None:
    stages = _stages()
    user = _inherited(stages, target, "USER") or ""
    assert re.fullmatch(r"[1-9]\d*:[1-9]\d*", user), user
    chain = [target]
    while (parent := stages[chain[-1]][0].split()[1]) in stages:
        chain.append(parent)
    runtime_text = " ".join(line for name in chain for line in stages[name]).lower()
    for tool in ("gcc", "build-essential", "make ", "g++", "-dev "):
        assert tool not in runtime_text


def test_base_image_and_installs_are_pinned() -> None:
    text = DOCKERFILE.read_text()
    image = re.search(r"ARG PYTHON_IMAGE=(\S+)", text)
    assert image and re.fullmatch(r"python:3\.11\.\d+-slim-\w+", image[1])
    assert ":latest" not in text
    # Every install is the virtualenv script's, from wheels only.
    runs = [line for stage in _stages().values() for line in stage if line.startswith("RUN ")]
    assert not any("pip install" in run or "pip --python" in run for run in runs)
    assert VIRTUALENV.read_text().count('"--only-binary=:all:"') == 1


def test_the_wheel_carries_the_operator_the_worker_and_what_they_share_but_not_devenv(
        tmp_path: Path) -> None:
    import subprocess
    import sys
    import zipfile

    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                    "-q", "-w", str(tmp_path), str(DOCKERFILE.parent)], check=True)
    (wheel,) = tmp_path.glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    packages = {name.split("/")[0] for name in names
                if not name.split("/")[0].endswith(".dist-info")}
    assert packages == {"metamapper_operator", "metamapper", "metamapper_urls",
                        "metamapper_beat"}, packages
    assert "metamapper/metastore/schema.sql" in names  # `metamapper metastore init` reads it


def test_one_definition_makes_both_virtualenvs() -> None:
    """Each role's virtualenv stage runs the same script, for its role: the dependencies,
    then the project; no other step."""
    stages = _stages()
    script = "/usr/local/lib/virtualenv.py"
    assert f"COPY docker/virtualenv.py {script}" in stages["venv"]
    for role in ("worker", "operator"):
        stage = stages[f"venv-{role}"]
        assert stage[0] == f"FROM venv AS venv-{role}"
        assert [line for line in stage if line.startswith("RUN ")] == [
            f"RUN python {script} dependencies {role}", f"RUN python {script} project {role}"]
        assert _instruction(stages[role], "COPY") == (
            f"--from=venv-{role} /opt/metamapper /opt/metamapper")


def test_the_images_carry_no_installer() -> None:
    """The virtualenvs are made without pip (the build base's pip installs into them), and
    the images' own base is one of its own (a Python without pip may be given there)."""
    script = VIRTUALENV.read_text()
    assert '"venv", "--without-pip"' in script and "/bin/pip" not in script
    stages = _stages()
    assert stages["runtime"][0].split()[1] == "${RUNTIME_IMAGE}"
    assert re.search(r"^ARG RUNTIME_IMAGE=\$\{PYTHON_IMAGE\}$", DOCKERFILE.read_text(), re.M)
