"""The images' virtualenv, ``/opt/metamapper``, for one role (``worker`` or ``operator``):
the one definition that both of the Dockerfile's virtualenv stages run.

``python virtualenv.py dependencies ROLE``
    the virtualenv, without pip (the build base's pip installs into it, so the image carries
    no installer), with the role's pinned requirements (``/tmp/requirements-ROLE.txt``) from
    wheels only (a dependency without one fails the build instead of compiling), without
    their bytecode or test suites, and their shared objects (extension modules and the
    libraries vendored beside them) stripped of the debugging information and symbol
    tables that wheels often ship (``strip --strip-unneeded``, as Debian strips its
    packages).
``python virtualenv.py project ROLE``
    the project's wheel (``/wheels``), then bytecode for exactly the modules the role's
    process imports until it is ready, and for no other: all of it would be 30 to 40 MB,
    while compiling what it imports would cost each process 1.2 to 1.4 s of CPU when it
    starts. The role's start runs here with bytecode writing on, and every module it
    compiled is compiled again as an unchecked-hash pyc: no timestamp in it (the same
    build gives the same bytes) and its source never read again to validate it (an image
    does not change).

The dependencies and the project are two steps, so that a change to the code alone does
not reinstall the dependencies.
"""

from __future__ import annotations

import compileall
import importlib.util
import os
import py_compile
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

VENV = Path("/opt/metamapper")
WHEELS = Path("/wheels")
ROLES = ("worker", "operator")
# Seconds the role's start may take in the build (it takes a few).
START_TIMEOUT = 300
# libfoo.so, libfoo.so.3, _ext.cpython-311-x86_64-linux-gnu.so
SHARED_OBJECT = re.compile(r"\.so(\.\d+)*$")
# The brokers a worker serves: the start below runs on Celery's in-memory broker, so the
# transports of the real ones are imported too.
BROKER_TRANSPORTS = ("kombu.transport.redis", "kombu.transport.pyamqp", "kombu.transport.SQS")


def _pip(*args: str) -> None:
    """The build base's pip, installing into the virtualenv."""
    subprocess.run([sys.executable, "-m", "pip", "--python", str(VENV / "bin" / "python"),
                    "install", "--no-compile", *args], check=True)


def _site_packages() -> Path:
    (found,) = VENV.glob("lib/python3.*/site-packages")
    return found


def dependencies(role: str) -> None:
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(VENV)], check=True)
    _pip("--only-binary=:all:", "-r", f"/tmp/requirements-{role}.txt")
    # Deepest first, so that a suite inside another is removed before the outer one.
    for found in sorted(_site_packages().rglob("test*"), reverse=True):
        if found.name in ("test", "tests") and found.is_dir():
            shutil.rmtree(found)
    shared = [str(path) for path in sorted(_site_packages().rglob("*.so*"))
              if SHARED_OBJECT.search(path.name) and path.is_file() and not path.is_symlink()]
    subprocess.run(["strip", "--strip-unneeded", *shared], check=True)


def project(role: str) -> None:
    _pip("--no-deps", *map(str, sorted(WHEELS.glob("*.whl"))))
    env = {key: value for key, value in os.environ.items()
           if key != "PYTHONDONTWRITEBYTECODE"}
    # A start that never gets ready fails the build rather than hanging it.
    subprocess.run([str(VENV / "bin" / "python"), __file__, "start", role], env=env,
                   check=True, timeout=START_TIMEOUT)
    for pyc in sorted(VENV.rglob("__pycache__/*.pyc")):
        source = importlib.util.source_from_cache(str(pyc))
        pyc.unlink()
        if not compileall.compile_file(
                source, quiet=1,
                invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH):
            raise SystemExit(f"{source} does not compile")


def start(role: str) -> None:
    """What ``metamapper ROLE`` imports until it is ready (run by the virtualenv's Python)."""
    import metamapper.cli  # noqa: F401  (the entrypoint, which then replaces itself)

    if role == "operator":
        # `metamapper-operator`: its command, its handlers and kopf's login with
        # kubernetes_asyncio are all it imports until its first requests to the cluster
        # (which a build cannot reach).
        import kubernetes_asyncio.config  # noqa: F401

        import metamapper_operator.__main__
        import metamapper_operator.handlers  # noqa: F401
        return
    # `celery --app metamapper worker`, with its pool's process, until it is ready; then its
    # warm shutdown.
    from celery import signals
    from celery.__main__ import main

    from metamapper import entrypoint

    @signals.worker_ready.connect
    def ready(**_: object) -> None:
        for transport in BROKER_TRANSPORTS:
            importlib.import_module(transport)
        os.kill(os.getpid(), signal.SIGTERM)

    os.environ["METAMAPPER_CELERY_BROKER_URL"] = "memory://"
    sys.argv = entrypoint.worker_argv(["--concurrency", "1", "--hostname", "build@image"])
    main()


def run(argv: list[str]) -> None:
    steps = {"dependencies": dependencies, "project": project, "start": start}
    if len(argv) != 2 or argv[0] not in steps or argv[1] not in ROLES:
        raise SystemExit(f"usage: virtualenv.py {{{','.join(steps)}}} {{{','.join(ROLES)}}}")
    steps[argv[0]](argv[1])


if __name__ == "__main__":
    run(sys.argv[1:])
