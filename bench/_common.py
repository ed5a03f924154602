"""What the autoscaler benchmarks share: a local control plane, a Redis server, the operator.

Everything is started here, in a temporary folder, and stopped again by the context
managers, so a benchmark leaves no process behind. The Redis server is one of the
benchmark's own (not the shared one of ``devenv.services``): its ``INFO commandstats``
must count the measured operator's commands only.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import urllib.request
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import redis
import yaml
from prometheus_client.parser import text_string_to_metric_families

from devenv import images, services
from devenv.controlplane import ControlPlane, free_port, install_crds, tool_dirs
from devenv.images import Images
from devenv.node import Node
from devenv.processes import stop_groups
from devenv.stack import Daemon, start_operator
from metamapper_operator import crd

OPERATOR_AGENTS = ("metamapper-operator", "kopf")
WRITE_VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection"})
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- the control plane -------------------------------------------------------------


@dataclass
class Cluster:
    plane: ControlPlane
    kubectl_path: Path
    images: Images | None = None   # with a node: the images it runs

    def kubectl(self, *args: str, input: str | None = None) -> str:
        result = subprocess.run(
            [str(self.kubectl_path), f"--kubeconfig={self.plane.kubeconfig_path}", *args],
            input=input, capture_output=True, text=True, timeout=600, check=False)
        if result.returncode:
            raise RuntimeError(f"kubectl {' '.join(args)}: {result.stderr.strip()}")
        return result.stdout

    def popen_kubectl(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [str(self.kubectl_path), f"--kubeconfig={self.plane.kubeconfig_path}", *args],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1)

    def apply(self, objects: Sequence[dict[str, Any]]) -> None:
        """Server-side apply ``objects`` (namespaced in their metadata) in one kubectl call."""
        self.kubectl("apply", "--server-side", "-f", "-", input=yaml.safe_dump_all(list(objects)))


@contextmanager
def cluster(root: Path, node: bool = False) -> Iterator[Cluster]:
    """A control plane with the project's CRDs; with ``node``, also a real node (kubelet,
    kube-proxy, containerd) and the project's images loaded into it."""
    kube, _ = tool_dirs()
    built = None
    if node:
        say("building (or finding) the images ...")
        built = images.build_all()
    plane = ControlPlane(root)
    say("starting the control plane" + (" and a node ..." if node else " ..."))
    plane.start()
    kubelet = Node(plane) if node else None
    try:
        if kubelet is not None:
            kubelet.start()
        found = Cluster(plane, kube / "kubectl", built)
        # Not `kubectl wait --for=condition=Established`: it fails at once on a CRD whose
        # conditions are not written yet.
        install_crds(plane, kube / "kubectl")
        yield found
    finally:
        if kubelet is not None:
            kubelet.stop()
        plane.stop()


def namespace_manifest(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


def metamapper(namespace: str, name: str, broker_url: str, pools: Sequence[dict[str, Any]]
               ) -> dict[str, Any]:
    """A Metamapper with ``pools`` on ``broker_url`` and no scheduler."""
    return {
        "apiVersion": crd.API_VERSION, "kind": crd.KIND,
        "metadata": {"namespace": namespace, "name": name},
        "spec": {"image": "metamapper-worker:0.1.0", "broker": {"url": broker_url},
                 "scheduler": {"enabled": False}, "pools": list(pools)},
    }


# --- Redis -------------------------------------------------------------------------


@contextmanager
def redis_server(root: Path) -> Iterator[str]:
    """A Redis server of this benchmark's own on a free port; yields its URL (db 0)."""
    binary = services.require("redis-server", "redis-server")
    port = free_port()
    root.mkdir(parents=True, exist_ok=True)
    pid = services.spawn([binary, "--port", str(port), "--bind", "127.0.0.1", services.HOST,
                          "--protected-mode", "no", "--dir", str(root), "--save", "",
                          "--appendonly", "no"], root / "log")
    try:
        services.wait_for(lambda: services.port_open(port), "redis-server", 30,
                          root / "log", pid)
        yield f"redis://{services.HOST}:{port}/0"   # where pods reach it too
    finally:
        stop_groups([pid], grace=10)


def command_calls(url: str) -> Counter[str]:
    """Calls per command since the server started (``INFO commandstats``)."""
    client = redis.Redis.from_url(url)
    try:
        stats = client.info("commandstats")
    finally:
        client.close()
    return Counter({name.removeprefix("cmdstat_"): int(s["calls"]) for name, s in stats.items()})


# --- the operator ------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """A process's user + system CPU time so far (``/proc/<pid>/stat`` utime + stime)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat.rpartition(")")[2].split()  # after the command name
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


@dataclass
class Operator:
    """A running ``metamapper-operator`` and what the benchmarks read of it."""

    daemon: Daemon

    @property
    def pid(self) -> int:
        return self.daemon.proc.pid

    def metric(self, name: str) -> float:
        """The sum of every sample of metric ``name`` (all label sets)."""
        text = self._scrape()
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.partition("{")[0].partition(" ")[0] == name)

    def labelled(self, name: str, labels: Sequence[str]) -> set[tuple[str, ...]]:
        """The values of ``labels`` in every sample of metric ``name``."""
        found = set()
        for family in text_string_to_metric_families(self._scrape()):
            for sample in family.samples:
                if sample.name == name:
                    found.add(tuple(sample.labels.get(label, "") for label in labels))
        return found

    def _scrape(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.daemon.ports['metrics']}/metrics",
                                    timeout=10) as response:
            return str(response.read().decode())

    def cpu_seconds(self) -> float:
        """User + system CPU time so far (``/proc/<pid>/stat`` utime + stime)."""
        return cpu_seconds(self.pid)

    def memory_kib(self, field: str) -> int:
        """A ``/proc/<pid>/status`` figure such as VmHWM (peak RSS) or VmRSS, in KiB."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
        raise KeyError(field)


@contextmanager
def operator(kube: Cluster, log: Path, *args: str) -> Iterator[Operator]:
    """The ``metamapper-operator`` console script as a process, live, stopped on exit;
    the tracebacks it logged are printed then."""
    daemon = start_operator(kube.plane.kubeconfig_path, log, *args, env=dict(os.environ))
    try:
        yield Operator(daemon)
    finally:
        daemon.stop()
        output = daemon.output()
        if tracebacks := output.count("Traceback"):
            say(f"the operator logged {tracebacks} traceback(s); log tail:\n{output[-3000:]}")


# --- the apiserver's audit log -----------------------------------------------------


@dataclass(frozen=True)
class Request:
    verb: str
    resource: str  # resource[/subresource]

    @property
    def write(self) -> bool:
        return self.verb in WRITE_VERBS


def operator_requests(audit_log: Path, offset: int, start: datetime, end: datetime
                      ) -> list[Request]:
    """The operator's requests received in [start, end), from byte ``offset`` on."""
    if audit_log.stat().st_size < offset:
        raise RuntimeError(f"{audit_log} was rotated during the measurement")
    seen: set[str] = set()
    found = []
    with audit_log.open("rb") as lines:
        lines.seek(offset)
        for line in lines:
            event = json.loads(line)
            if event["auditID"] in seen or not event.get("userAgent", "").startswith(
                    OPERATOR_AGENTS):
                continue
            seen.add(event["auditID"])  # a watch is logged when it starts and when it ends
            received = datetime.fromisoformat(event["requestReceivedTimestamp"])
            if start <= received < end:
                ref = event.get("objectRef") or {}
                resource = ref.get("resource", event.get("requestURI", ""))
                if ref.get("subresource"):
                    resource += "/" + ref["subresource"]
                found.append(Request(event["verb"], resource))
    return found


# --- figures -----------------------------------------------------------------------


def print_requests(title: str, requests: Sequence[Request]) -> None:
    """``title``, then each (verb, resource) of ``requests`` with its count, most first."""
    print(title)
    for (verb, resource), count in Counter((r.verb, r.resource) for r in requests
                                           ).most_common():
        print(f"  {count:7d}  {verb} {resource}")


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank ``q`` percentile (0 < q <= 100)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def print_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    cells = [list(map(str, headers)), *([str(c) for c in row] for row in rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for n, row in enumerate(cells):
        print("  ".join(c.rjust(w) if n and i else c.ljust(w)
                        for i, (c, w) in enumerate(zip(row, widths, strict=True))).rstrip())
        if n == 0:
            print("  ".join("-" * w for w in widths))
