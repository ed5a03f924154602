"""``make deps`` on machines in the states CI and users start from, its system tools stood
in for by small scripts on PATH (dpkg, apt-cache, apt-get, sudo, go): what it asks of APT
is the point, not what APT does. Prometheus' binaries are in the cache already, so
nothing is downloaded."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
VERSION = "2.42.0+ds-5"


def stubs(tmp_path: Path, *, lists: bool) -> tuple[dict[str, str], Path]:
    """PATH and environment for ``make deps`` where every APT package is installed and
    APT's package lists are there (``lists``) or not, as on a machine whose lists were
    cleaned after the packages went in; the log of the apt-get calls."""
    bin_dir, state = tmp_path / "bin", tmp_path / "state"
    bin_dir.mkdir()
    state.mkdir()
    if lists:
        (state / "lists").touch()
    log = state / "apt-get.log"
    scripts = {
        "dpkg": "exit 0",
        "apt-cache": f'[ -e {state}/lists ] && printf "prometheus:\\n  Installed: (none)\\n'
                     f'  Candidate: {VERSION}\\n"; exit 0',
        "apt-get": f'echo "$*" >> {log}; case "$1" in update) touch {state}/lists;; '
                   '*) exit 100;; esac',
        "sudo": 'exec "$@"',
        "go": "exit 0",
    }
    for name, body in scripts.items():
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    cache = tmp_path / "cache"
    cached = cache / f"prometheus-{VERSION.replace('+', '_')}"
    cached.mkdir(parents=True)
    for binary in ("prometheus", "promtool"):
        (cached / binary).write_text("#!/bin/sh\n")
        (cached / binary).chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:/usr/bin:/bin",
           "METAMAPPER_BIN_CACHE": str(cache)}
    return env, log


def make_deps(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["make", "--no-print-directory", "-C", str(REPO), "deps"], env=env,
                          capture_output=True, text=True, timeout=60, check=False)


def test_deps_updates_the_package_lists_when_apt_does_not_know_prometheus(
        tmp_path: Path) -> None:
    env, log = stubs(tmp_path, lists=False)
    done = make_deps(env)
    assert done.returncode == 0, done.stderr
    assert log.read_text().split("\n")[0].startswith("update")


def test_deps_with_everything_there_asks_apt_for_nothing(tmp_path: Path) -> None:
    env, log = stubs(tmp_path, lists=True)
    done = make_deps(env)
    assert done.returncode == 0, done.stderr
    assert not log.exists()
