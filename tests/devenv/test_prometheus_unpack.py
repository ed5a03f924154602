"""``tools/prometheus.sh`` (Prometheus and promtool unpacked on demand, for tests/monitoring,
the dashboard's tests and the demo's ``--dashboard``) on machines in the states CI and
users start from, APT stood in for by small scripts on PATH (apt-cache, apt-get, dpkg-deb,
sudo): what it asks of APT is the point, not what APT does. Nothing is downloaded."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
VERSION = "2.42.0+ds-5"
#: A binary as the package holds it: long enough that a copy cut short is seen.
BINARY = "#!/bin/sh\necho unpacked\n" + "#" * 4096 + "\n"


@dataclass(frozen=True)
class Machine:
    """The stand-ins' environment, APT's call log and the binaries' cache."""

    env: dict[str, str]
    log: Path
    cache: Path

    def calls(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []


def machine(tmp_path: Path, *, lists: str | None) -> Machine:
    """A machine whose APT package lists name ``lists`` as prometheus' version (None: no
    lists, as when they were cleaned after the packages went in) and whose mirror holds
    VERSION only; ``apt-get update`` brings the lists up to the mirror."""
    bin_dir, state, cache = tmp_path / "bin", tmp_path / "state", tmp_path / "cache"
    bin_dir.mkdir()
    state.mkdir()
    if lists is not None:
        (state / "lists").write_text(lists)
    log = state / "apt-get.log"
    scripts = {
        "apt-cache": f'[ -e {state}/lists ] && printf "prometheus:\\n  Installed: (none)\\n'
                     f'  Candidate: %s\\n" "$(cat {state}/lists)"; exit 0',
        "apt-get": f'echo "$*" >> {log}\ncase "$1" in\n'
                   f'  update) echo {VERSION} > {state}/lists;;\n'
                   f'  download) [ "$3" = "prometheus={VERSION}" ] || exit 100\n'
                   f'    echo deb > prometheus_{VERSION}_amd64.deb;;\n'
                   '  *) exit 100;;\nesac',
        "dpkg-deb": f'mkdir -p "$3/usr/bin"\nfor b in prometheus promtool; do\n'
                    f'  printf %s "{BINARY}" > "$3/usr/bin/$b"; chmod 755 "$3/usr/bin/$b"\n'
                    'done',
        "sudo": 'exec "$@"',
    }
    for name, body in scripts.items():
        (bin_dir / name).write_text(f"#!/bin/bash\n{body}\n")
        (bin_dir / name).chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:/usr/bin:/bin", "METAMAPPER_BIN_CACHE": str(cache)}
    return Machine(env, log, cache)


def unpack(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The script run in a process group of its own (as a shell runs a job), so that a
    stand-in can kill the whole of it as Ctrl-C does."""
    return subprocess.run(["bash", str(REPO / "tools" / "prometheus.sh")], env=env,
                          capture_output=True, text=True, timeout=60, check=False,
                          start_new_session=True)


def unpacked(done: subprocess.CompletedProcess[str]) -> Path:
    """The folder the script printed, holding both binaries whole."""
    assert done.returncode == 0, done.stderr
    folder = Path(done.stdout.split()[-1])
    for binary in ("prometheus", "promtool"):
        assert (folder / binary).read_text() == BINARY, binary
        assert os.access(folder / binary, os.X_OK), binary
    return folder


def test_without_package_lists_they_are_updated_once_and_the_binaries_unpacked(
        tmp_path: Path) -> None:
    host = machine(tmp_path, lists=None)
    unpacked(unpack(host.env))
    assert host.calls() == ["update -qq", f"download -q prometheus={VERSION}"]


def test_lists_older_than_the_mirror_are_updated_once_and_the_download_tried_again(
        tmp_path: Path) -> None:
    host = machine(tmp_path, lists="2.42.0+ds-4")
    unpacked(unpack(host.env))
    assert host.calls() == ["download -q prometheus=2.42.0+ds-4", "update -qq",
                            f"download -q prometheus={VERSION}"]


def test_with_the_binaries_cached_apt_is_asked_for_nothing(tmp_path: Path) -> None:
    host = machine(tmp_path, lists=VERSION)
    first = unpacked(unpack(host.env))
    host.log.unlink()
    assert unpacked(unpack(host.env)) == first
    assert host.calls() == []


def test_a_run_killed_while_copying_leaves_nothing_the_next_run_trusts(
        tmp_path: Path) -> None:
    """A first run killed halfway through its copy (Ctrl-C, a cancelled CI job): the next
    run unpacks again instead of handing out a truncated binary for good."""
    host = machine(tmp_path, lists=VERSION)
    killer = tmp_path / "killer"
    killer.mkdir()
    # cp that copies the first file, half of the second, and is killed with the script.
    (killer / "cp").write_text(
        '#!/bin/bash\ndest="${@: -1}"\n/bin/cp "$1" "$dest/"\n'
        'head -c 100 "$2" > "$dest/$(basename "$2")"\nchmod 755 "$dest/$(basename "$2")"\n'
        'kill -KILL 0\n')
    (killer / "cp").chmod(0o755)
    killed = unpack({**host.env, "PATH": f"{killer}:{host.env['PATH']}"})
    assert killed.returncode == -9, killed.stderr
    unpacked(unpack(host.env))
