"""The worker and operator images as ``make images`` builds them from the Dockerfile (built
here without loading them into a node): they fit the size a fresh node pulls quickly, carry
no installer, documentation or Perl, run as their non-root user, every module of what they
run imports in them, with what the worker's transports and datastores load, and their
processes start from bytecode, compiling nothing."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
from celery import Celery

from devenv import images
from devenv.waiting import wait_until

# Building the images from nothing (both bases, both virtualenvs) takes minutes.
pytestmark = pytest.mark.timeout(1800)

# Each image at most this, as containerd stores it.
BUDGET = 200 * 2**20

# Imports every module of the packages named in argv (not __main__, which runs a command)
# and prints the ones that failed, as JSON.
IMPORT_ALL = """
import importlib, json, pkgutil, sys
failed = {}
for package in sys.argv[1:]:
    for info in pkgutil.walk_packages(importlib.import_module(package).__path__,
                                      package + "."):
        if not info.name.endswith(".__main__"):
            try:
                importlib.import_module(info.name)
            except Exception as err:
                failed[info.name] = repr(err)
print(json.dumps(failed))
"""

# What the SQS transport, S3, Glue datastores, TLS and time zones load in a worker.
WORKER_EXTRAS = """
import ssl, zoneinfo
import boto3, kombu.asynchronous.http.curl, kombu.transport.SQS, pycurl
session = boto3.session.Session(region_name="eu-west-1")
for service in ("sqs", "s3", "glue", "sts"):
    session.client(service)
zoneinfo.ZoneInfo("Europe/Paris")
print(ssl.create_default_context().cert_store_stats()["x509_ca"])
"""

# What the operator's queue-depth probes and its questions to workers load.
OPERATOR_EXTRAS = """
import boto3, kombu.transport.pyamqp, kombu.transport.redis
boto3.session.Session(region_name="eu-west-1").client("sqs")
print("loaded")
"""

# What the images carry none of: installers, compilers, Perl (beyond Debian's essential
# perl-base), manuals, translations, documentation beyond the copyright files.
ABSENT = """
import glob, importlib.util, json, os, re, shutil
status = open("/var/lib/dpkg/status").read()
installed = set(re.findall(r"^Package: (\\S+)\\nStatus: install ok installed", status, re.M))
found = sorted(installed & {"apt", "perl", "usrmerge", "python3-pip", "python3-venv"})
found += [tool for tool in ("pip", "pip3", "apt-get", "gcc", "cc") if shutil.which(tool)]
found += [m for m in ("pip", "setuptools", "wheel") if importlib.util.find_spec(m)]
found += [d for d in ("/usr/share/man", "/usr/share/locale") if os.listdir(d)]
found += [f for f in glob.glob("/usr/share/doc/**", recursive=True)
          if os.path.isfile(f) and not os.path.islink(f) and not f.endswith("/copyright")]
print(json.dumps(found))
"""


# The flags word of every pyc in the virtualenv, counted (1: unchecked-hash).
PYC_FLAGS = """
import collections, glob, json
flags = collections.Counter()
for pyc in glob.glob("/opt/metamapper/**/*.pyc", recursive=True):
    with open(pyc, "rb") as file:
        flags[int.from_bytes(file.read(8)[4:], "little")] += 1
print(json.dumps(flags))
"""

# What `python -v` (PYTHONVERBOSE) says of a module it compiles from its source; of one
# loaded from its bytecode it says "code object from '.../__pycache__/....pyc'".
SOURCE_COMPILED = re.compile(r"^# code object from (?P<path>/\S+\.py)$")

# A cluster that cannot be reached: the operator logs in with it, then its requests fail.
UNREACHABLE_KUBECONFIG = """
apiVersion: v1
kind: Config
clusters: [{name: none, cluster: {server: "https://127.0.0.1:9"}}]
users: [{name: none, user: {token: none}}]
contexts: [{name: none, context: {cluster: none, user: none}}]
current-context: none
"""


@pytest.fixture(scope="module")
def built() -> images.Images:
    return images.build_all(load=False)


BUILDAH = ["buildah", "--root", str(images.STORAGE), "--runroot", str(images.RUNROOT),
           "--storage-driver", "overlay"]


def _container(image: str) -> str:
    return subprocess.run([*BUILDAH, "from", "--quiet", image], capture_output=True,
                          text=True, check=True).stdout.strip()


def _run(image: str, *argv: str) -> str:
    """``argv`` run in a container of ``image`` (as its user); its output."""
    container = _container(image)
    try:
        done = subprocess.run([*BUILDAH, "run", "--isolation", "chroot", container, "--",
                               *argv], capture_output=True, text=True, timeout=300,
                              check=False)
    finally:
        subprocess.run([*BUILDAH, "rm", container], capture_output=True, check=True)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.fixture(scope="module", params=["worker", "operator"])
def image(request: pytest.FixtureRequest, built: images.Images) -> str:
    name: str = getattr(built, request.param)
    return name


def test_each_image_fits_the_budget(image: str) -> None:
    size = images.stored_size(image)
    assert size <= BUDGET, f"{image}: {size / 2**20:.1f} MiB"


def test_the_images_carry_no_installer_documentation_or_perl(image: str) -> None:
    assert json.loads(_run(image, "python", "-c", ABSENT)) == []


def test_the_images_run_as_their_non_root_user(image: str) -> None:
    assert _run(image, "id", "-u").strip() == "10001"


def test_every_module_of_the_worker_imports_in_its_image(built: images.Images) -> None:
    failed = _run(built.worker, "python", "-c", IMPORT_ALL,
                  "metamapper", "metamapper_urls", "metamapper_beat")
    assert json.loads(failed) == {}


def test_every_module_of_the_operator_imports_in_its_image(built: images.Images) -> None:
    assert json.loads(_run(built.operator, "python", "-c", IMPORT_ALL,
                           "metamapper_operator")) == {}


def test_the_worker_image_loads_its_transports_and_datastores(built: images.Images) -> None:
    assert int(_run(built.worker, "python", "-c", WORKER_EXTRAS)) > 100  # CA certificates


def test_the_operator_image_loads_its_brokers_clients(built: images.Images) -> None:
    assert _run(built.operator, "python", "-c", OPERATOR_EXTRAS).strip() == "loaded"


@pytest.mark.parametrize(("role", "command"), [("worker", "worker"),
                                               ("operator", "operator")])
def test_the_entrypoint_runs_in_each_image(built: images.Images, role: str,
                                           command: str) -> None:
    assert "usage" in _run(getattr(built, role), "metamapper", command, "--help").lower()


@contextlib.contextmanager
def _process(image: str, env: Mapping[str, str], *argv: str,
             files: Mapping[str, Path] | None = None) -> Iterator[subprocess.Popen[str]]:
    """``argv`` running in a container of ``image`` (on the host's network, with ``files``
    copied in, readable by all), its output and errors on one pipe; stopped and removed
    afterwards."""
    container = _container(image)
    for destination, source in (files or {}).items():
        subprocess.run([*BUILDAH, "copy", "--chmod", "0644", container, str(source),
                        destination], capture_output=True, check=True)
    process = subprocess.Popen(
        [*BUILDAH, "run", "--isolation", "chroot",
         *(f"--env={key}={value}" for key, value in env.items()), container, "--", *argv],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        yield process
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
        subprocess.run([*BUILDAH, "rm", container], capture_output=True, check=True)


def _compiled_until(process: subprocess.Popen[str], marker: str) -> list[str]:
    """The sources that ``process`` (run with PYTHONVERBOSE) compiled before it printed a
    line with ``marker``."""
    assert process.stdout is not None
    compiled: list[str] = []
    for line in process.stdout:
        if marker in line:
            return compiled
        if found := SOURCE_COMPILED.search(line.rstrip()):
            compiled.append(found["path"])
    raise AssertionError(f"the process ended (exit {process.wait()}) before {marker!r}")


def test_a_worker_of_the_image_serves_its_broker(built: images.Images, redis_url: str) -> None:
    """``metamapper worker`` in the image (the host's network) answers a ping on Redis."""
    app = Celery(broker=redis_url)
    with _process(built.worker, {"METAMAPPER_CELERY_BROKER_URL": redis_url}, "metamapper",
                  "worker", "--concurrency", "1", "--hostname", "image@test") as worker:
        try:
            replies = wait_until(lambda: app.control.ping(timeout=1.0), timeout=120,
                                 what="a ping answered", abort=lambda: worker.poll() is not None)
            assert replies == [{"image@test": {"ok": "pong"}}]
        finally:
            app.close()


def test_the_bytecode_is_unchecked_hash(image: str) -> None:
    """Bytecode that the start never validates against its source (nor a timestamp in it)."""
    flags = json.loads(_run(image, "python", "-c", PYC_FLAGS))
    assert set(flags) == {"1"} and flags["1"] > 100, flags


def test_a_worker_starts_from_bytecode(built: images.Images, redis_url: str) -> None:
    """``metamapper worker`` on Redis compiles no module until it is ready: the image has
    the bytecode of all it imports, and the start finds it."""
    with _process(built.worker, {"METAMAPPER_CELERY_BROKER_URL": redis_url,
                                 "PYTHONVERBOSE": "1"},
                  "metamapper", "worker", "--concurrency", "1",
                  "--hostname", "bytecode@test") as worker:
        assert _compiled_until(worker, "bytecode@test ready.") == []


def test_the_operator_starts_from_bytecode(built: images.Images, tmp_path: Path) -> None:
    """``metamapper operator`` compiles no module until it has logged in and made its first
    requests (to a cluster that cannot be reached)."""
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(UNREACHABLE_KUBECONFIG)
    with _process(built.operator, {"KUBECONFIG": "/tmp/kubeconfig", "PYTHONVERBOSE": "1"},
                  "metamapper", "operator", "--liveness-port", "0", "--metrics-port", "0",
                  files={"/tmp/kubeconfig": kubeconfig}) as operator:
        assert _compiled_until(operator, "127.0.0.1:9") == []
