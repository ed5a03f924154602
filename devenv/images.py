"""The project's images, built here from its ``Dockerfile`` and loaded into the node.

No registry can be reached, so nothing is pulled:

- the **bases** (standing in for ``python:3.11-slim-bookworm`` through the Dockerfile's
  ``PYTHON_IMAGE`` and ``RUNTIME_IMAGE`` arguments) are Debian bookworm root filesystems with
  Debian's Python 3.11, made by ``mmdebstrap`` from Debian's packages and slimmed the way
  Debian's own ``-slim`` images are (no manuals, documentation or translations): the build
  stages' with pip and venv, the runtime's with Python and the CA certificates only;
- the **pause** image (each pod's sandbox) holds Debian's static ``catatonit``, whose
  ``-P`` mode is a pause process;
- the **coredns** image (the cluster DNS, ``devenv.dns``) holds the static CoreDNS that
  ``tools/build.sh`` builds from its Go module;
- **worker** and **operator** are the Dockerfile's targets, built by ``buildah`` as a
  user would build them with docker;
- **workload** (tests and demo only, never shipped) is the worker image plus one module of
  tasks that record what they did (``devenv/workload_image/``).

Every image is tagged with a hash of what it is made of, so an unchanged tree costs
seconds, and the Dockerfile installs the dependencies in a layer of their own, so a
code-only change does not reinstall them. Package downloads inside a build trust the
host's CA bundle, mounted into the build (never copied into an image): the same path a
build behind a TLS-inspecting proxy takes.

``python -m devenv.images [build|list]``
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from devenv import containerd
from devenv.controlplane import coredns_binary
from devenv.errors import DevenvError

REPO = Path(__file__).resolve().parents[1]
STORAGE = Path("/var/lib/metamapper-buildah")
RUNROOT = Path("/run/metamapper-buildah")
HOST_CA_BUNDLE = Path(os.environ.get("SSL_CERT_FILE", "/etc/ssl/certs/ca-certificates.crt"))
SUITE = "bookworm"
# The build stages' base: what creates the virtualenv, installs into it and strips its
# extension modules.
BUILD_PACKAGES = ("python3", "python3-venv", "python3-pip", "python-is-python3",
                  "ca-certificates", "binutils")
# The runtime's base: Debian's essential packages (no apt: nothing is installed into a
# running image) with the interpreter the virtualenv links to, the CA certificates that TLS
# to brokers, datastores and AWS verifies against, the time zones, and groupadd/useradd
# for the Dockerfile's user; no pip, no venv.
RUNTIME_PACKAGES = ("python3", "python-is-python3", "ca-certificates", "tzdata", "passwd")
# dpkg leaves these out of every package it unpacks (as in Debian's -slim images); the
# copyright files stay.
SLIM_DPKG_OPTIONS = ("path-exclude=/usr/share/man/*", "path-exclude=/usr/share/info/*",
                     "path-exclude=/usr/share/doc/*",
                     "path-include=/usr/share/doc/*/copyright",
                     "path-exclude=/usr/share/locale/*", "path-exclude=/usr/share/lintian/*",
                     # glibc's iconv modules for legacy character sets: Python has its own
                     # codecs, and UTF-8 is built into glibc.
                     "path-exclude=/usr/lib/x86_64-linux-gnu/gconv/*")
# /bin, /lib and /sbin as links into /usr, made directly rather than by Debian's `usrmerge`
# package (which would bring Perl into the image).
MERGED_USR_HOOKS = Path("/usr/share/mmdebstrap/hooks/merged-usr")
PAUSE_BINARY = Path("/usr/bin/catatonit")
WORKLOAD_DIR = REPO / "devenv" / "workload_image"
# What the Dockerfile's build reads from the context (everything else is left out).
CONTEXT = ("Dockerfile", "pyproject.toml", "README.md", "operator", "tasks", "common",
           "docker")


class ImageError(DevenvError):
    """An image could not be built or loaded; the message says which step and why."""


@dataclass(frozen=True)
class Image:
    """A built image: its name in the node's store and what it took."""

    name: str
    seconds: float
    cached: bool


def say(message: str) -> None:
    print(message, flush=True)


def _buildah(*args: str, capture: bool = False) -> str:
    binary = shutil.which("buildah")
    if binary is None:
        raise ImageError("buildah not found: `make deps` installs Debian's buildah")
    argv = [binary, "--root", str(STORAGE), "--runroot", str(RUNROOT),
            "--storage-driver", "overlay", *args]
    done = subprocess.run(argv, stdout=subprocess.PIPE if capture else None, text=True,
                          check=False)
    if done.returncode:
        raise ImageError(f"`buildah {' '.join(args[:2])} ...` failed (exit {done.returncode})")
    return done.stdout or ""


def _exists(name: str) -> bool:
    argv = ["buildah", "--root", str(STORAGE), "--runroot", str(RUNROOT),
            "--storage-driver", "overlay", "inspect", "--type", "image", name]
    return subprocess.run(argv, capture_output=True, check=False).returncode == 0


def _files(paths: Iterable[Path]) -> list[Path]:
    """The files under ``paths`` that a build reads: not caches, not ``pip install -e``'s
    metadata (the same files are hashed and copied into a build's context)."""
    found: list[Path] = []
    for path in paths:
        candidates = path.rglob("*") if path.is_dir() else [path]
        found += [p for p in candidates if p.is_file() and not any(
            part == "__pycache__" or part.endswith(".egg-info") for part in p.parts)
            and p.suffix != ".pyc"]
    return sorted(found)


def content_hash(*parts: str, files: Iterable[Path] = (), root: Path = REPO) -> str:
    """A short hash of some strings and of the files' paths (relative to ``root`` when
    under it: the same tree hashes the same wherever it is) and contents."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode() + b"\0")
    for path in _files(files):
        digest.update(str(path.relative_to(root) if path.is_relative_to(root) else path)
                      .encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


def _timed(name: str, build: Callable[[], None]) -> Image:
    """Build ``name`` with ``build()`` unless it is in buildah's store already."""
    if _exists(name):
        return Image(name, 0.0, cached=True)
    say(f"building {name} ...")
    start = time.monotonic()
    build()
    seconds = time.monotonic() - start
    say(f"  {name} built in {seconds:.0f} s")
    return Image(name, seconds, cached=False)


def base_image(role: str, variant: str, packages: Sequence[str]) -> Image:
    """A Debian root filesystem of mmdebstrap's ``variant`` with ``packages``, tagged
    ``<role>``; slimmed as above."""
    recipe = (SUITE, variant, *packages, *SLIM_DPKG_OPTIONS, "merged-usr")
    name = f"localhost/metamapper-python:{SUITE}-{role}-{content_hash(*recipe)}"

    def build() -> None:
        if shutil.which("mmdebstrap") is None:
            raise ImageError("mmdebstrap not found: `make deps` installs Debian's mmdebstrap")
        with tempfile.TemporaryDirectory(prefix="metamapper-base-") as tmp:
            rootfs = Path(tmp) / "rootfs.tar"
            say(f"  mmdebstrap {SUITE} with {', '.join(packages)} (Debian's packages)")
            done = subprocess.run(
                ["mmdebstrap", "--quiet", f"--variant={variant}",
                 f"--include={','.join(packages)}",
                 f"--hook-dir={MERGED_USR_HOOKS}",
                 *(f"--dpkgopt={option}" for option in SLIM_DPKG_OPTIONS),
                 "--aptopt=Acquire::Check-Valid-Until \"false\"",
                 "--customize-hook=rm -rf \"$1\"/var/cache/apt/* \"$1\"/var/lib/apt/lists/*",
                 SUITE, str(rootfs)], check=False)
            if done.returncode:
                raise ImageError(f"mmdebstrap failed (exit {done.returncode})")
            container = _buildah("from", "scratch", capture=True).strip()
            try:
                _buildah("add", container, str(rootfs), "/")
                # python:*-slim's PATH, which the Dockerfile's steps rely on (groupadd is
                # in /usr/sbin).
                _buildah("config", "--env", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:"
                         "/usr/bin:/sbin:/bin", "--env", "LANG=C.UTF-8", "--cmd", "python3",
                         container)
                _buildah("commit", "--quiet", container, name)
            finally:
                _buildah("rm", container)

    return _timed(name, build)


@dataclass(frozen=True)
class Bases:
    """The Dockerfile's two bases: the build stages' and the runtime's."""

    build: Image
    runtime: Image


def bases() -> Bases:
    return Bases(base_image("build", "minbase", BUILD_PACKAGES),
                 base_image("runtime", "essential", RUNTIME_PACKAGES))


def _static_binary_image(repository: str, binary: Path, *, path: str, user: str,
                         args: Sequence[str] = ()) -> Image:
    """An image holding one static ``binary`` at ``path``, its entrypoint (with ``args``)
    run as ``user``; tagged with the binary's hash."""
    name = f"localhost/metamapper-{repository}:{content_hash(files=[binary])}"

    def build() -> None:
        container = _buildah("from", "scratch", capture=True).strip()
        try:
            _buildah("copy", "--chmod", "0755", container, str(binary), path)
            _buildah("config", "--entrypoint", json.dumps([path, *args]), "--user", user,
                     container)
            _buildah("commit", "--quiet", container, name)
        finally:
            _buildah("rm", container)

    return _timed(name, build)


def pause_image() -> Image:
    if not PAUSE_BINARY.exists():
        raise ImageError(f"{PAUSE_BINARY} not found: `make deps` installs Debian's catatonit")
    return _static_binary_image("pause", PAUSE_BINARY, path="/pause", args=["-P"],
                                user="65535:65535")


def coredns_image() -> Image:
    return _static_binary_image("coredns", coredns_binary(), path="/coredns",
                                user="65532:65532")


def _bud(name: str, target: str, context: Path, containerfile: Path,
         build_args: Mapping[str, str]) -> None:
    if not HOST_CA_BUNDLE.exists():
        raise ImageError(f"the host's CA bundle {HOST_CA_BUNDLE} is missing (SSL_CERT_FILE)")
    args = ["bud", "--layers", "--isolation", "chroot", "--network", "host",
            "--volume", f"{HOST_CA_BUNDLE}:/etc/ssl/certs/ca-certificates.crt:ro",
            "-f", str(containerfile), "-t", name]
    if target:
        args += ["--target", target]
    for key, value in build_args.items():
        args += ["--build-arg", f"{key}={value}"]
    _buildah(*args, str(context))


def project_image(target: str, base: Bases, tree: Path = REPO) -> Image:
    """The Dockerfile's ``target`` (``worker`` or ``operator``) on ``base``, from the
    checkout or from ``tree`` (another revision's files, ``devenv.releases``: what of
    ``CONTEXT`` it has, built by its own Dockerfile; a build argument that Dockerfile does
    not declare, as 0.1.0's has no ``RUNTIME_IMAGE``, is a warning of buildah's)."""
    tag = content_hash(target, base.build.name, base.runtime.name,
                       files=[tree / p for p in CONTEXT], root=tree)
    name = f"localhost/metamapper-{target}:{tag}"

    def build() -> None:
        with tempfile.TemporaryDirectory(prefix="metamapper-context-") as tmp:
            context = Path(tmp)
            for source in _files(tree / part for part in CONTEXT):
                copy = context / source.relative_to(tree)
                copy.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, copy)
            _bud(name, target, context, context / "Dockerfile",
                 {"PYTHON_IMAGE": base.build.name, "RUNTIME_IMAGE": base.runtime.name})

    return _timed(name, build)


def workload_image(worker: Image) -> Image:
    """The worker image plus the tasks that the demo and the end-to-end tests send."""
    tag = content_hash(worker.name, files=[WORKLOAD_DIR])
    name = f"localhost/metamapper-workload:{tag}"

    def build() -> None:
        _bud(name, "", WORKLOAD_DIR, WORKLOAD_DIR / "Containerfile",
             {"WORKER_IMAGE": worker.name})

    return _timed(name, build)


def stored_size(name: str) -> int:
    """The bytes containerd stores for the image ``name`` once loaded as ``load_into_node``
    loads it (a ``docker-archive``): its layers, uncompressed, and its config."""
    with tempfile.TemporaryDirectory(prefix="metamapper-image-") as tmp:
        archive = Path(tmp) / "image.tar"
        _buildah("push", "--quiet", name, f"docker-archive:{archive}:{name}")
        with tarfile.open(archive) as tar:
            sizes = {member.name: member.size for member in tar.getmembers()}
            manifest_file = tar.extractfile("manifest.json")
            if manifest_file is None:
                raise ImageError(f"the archive of {name} has no manifest.json")
            (manifest,) = json.load(manifest_file)
    return sum(sizes[layer] for layer in manifest["Layers"]) + sizes[manifest["Config"]]


@dataclass(frozen=True)
class Images:
    """Every image a cluster of the development environment runs, by role."""

    pause: str
    worker: str
    operator: str
    workload: str


def build_all(load: bool = True) -> Images:
    """Build (or find) every image and, with ``load``, put them into the node's store."""
    if os.geteuid() != 0:
        raise ImageError("building images needs root (buildah's storage, chroot isolation)")
    base = bases()
    built = [pause_image(), base.build, base.runtime]
    worker = project_image("worker", base)
    operator = project_image("operator", base)
    workload = workload_image(worker)
    built += [worker, operator, workload]
    images = Images(built[0].name, worker.name, operator.name, workload.name)
    if load:
        load_into_node(images.pause, list(vars(images).values()))
    return images


@dataclass(frozen=True)
class NodeImages:
    """The images every node runs, whatever the workload: each pod's sandbox and the
    cluster DNS."""

    pause: str
    coredns: str


def node_runtime() -> NodeImages:
    """containerd running with the node's own images loaded."""
    found = NodeImages(pause_image().name, coredns_image().name)
    load_into_node(found.pause, list(vars(found).values()))
    return found


def load_into_node(pause: str, names: Sequence[str]) -> None:
    """Import the images the node's containerd lacks (a ``docker-archive`` each)."""
    containerd.ensure(pause)
    missing = [n for n in names if not containerd.has_image(n)]
    for name in missing:
        start = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="metamapper-image-") as tmp:
            archive = Path(tmp) / "image.tar"
            _buildah("push", "--quiet", name, f"docker-archive:{archive}:{name}")
            containerd.import_image(archive)
        say(f"  {name} loaded into the node in {time.monotonic() - start:.0f} s")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["build", "list"], nargs="?", default="build")
    parser.add_argument("--no-load", action="store_true",
                        help="build only; do not load the images into the node")
    args = parser.parse_args(argv)
    try:
        start = time.monotonic()
        images = build_all(load=not args.no_load and args.action == "build")
    except (ImageError, containerd.ContainerdError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    say(f"images ready in {time.monotonic() - start:.0f} s:")
    for role, name in vars(images).items():
        size = (containerd.image_size(name) if not args.no_load
                else f"{stored_size(name) / 2**20:.1f} MiB")
        say(f"  {role:9} {name}  {size}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
