"""The whole local stack, for the demo, the end-to-end tests and the benchmarks.

The services, a control plane with the project's CRD and a real node, the project's images,
and the operator installed from its Helm chart; each stopped with nothing left behind. With
a ``release`` (``devenv.releases``), an earlier operator instead: its chart, its CRD (from
the chart, created by ``helm install``) and its image. ``start_operator`` runs the operator
as a local process instead (as users run it outside a cluster), for the operator's own
tests, which need several or a scripted API in front.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devenv import containerd, images, services
from devenv.controlplane import REPO, ControlPlane, free_port, install_crds, tool_dirs
from devenv.errors import DevenvError
from devenv.images import Images
from devenv.node import Node
from devenv.processes import alive, signal_group
from devenv.releases import Release
from devenv.waiting import WaitTimeout, wait_until

BIN = Path(sys.executable).parent


class StackError(DevenvError):
    """A part of the stack did not start; the message says which and where its log is."""


@dataclass
class Daemon:
    """A long-running child process in a session of its own, logging to a file."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    ports: dict[str, int] = field(default_factory=dict)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.output().splitlines()[-lines:])

    def stop(self, grace: float = 30.0) -> None:
        """SIGTERM the process group; SIGKILL what is left once the main process exited or
        ``grace`` passed. (Its zombie, until reaped here, would look like a live member.)"""
        signal_group(self.proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(grace)
        signal_group(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def kill(self) -> None:
        """SIGKILL the whole process group: no clean shutdown, as when a node dies."""
        signal_group(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


def spawn(name: str, argv: list[str], log: Path, env: dict[str, str]) -> Daemon:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, env=env, start_new_session=True)
    return Daemon(name, proc, log)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except OSError:
        return False


def wait_http(daemon: Daemon, url: str, timeout: float) -> None:
    """Until ``url`` answers; raises with the daemon's log if it exits or times out."""
    try:
        wait_until(lambda: _answers(url), timeout, daemon.name,
                   abort=lambda: not daemon.alive())
    except WaitTimeout:
        raise StackError(f"{daemon.name} did not come up; log {daemon.log}:\n{daemon.tail()}"
                         ) from None


def start_operator(kubeconfig: Path, log: Path, *args: str, env: dict[str, str]) -> Daemon:
    """``metamapper-operator`` with free liveness and metrics ports; waits until live."""
    liveness, metrics = free_port(), free_port()
    daemon = spawn("operator", [str(BIN / "metamapper-operator"),
                                "--liveness-port", str(liveness),
                                "--metrics-port", str(metrics), *args],
                   log, {**env, "KUBECONFIG": str(kubeconfig)})
    daemon.ports.update(liveness=liveness, metrics=metrics)
    wait_http(daemon, f"http://127.0.0.1:{liveness}/healthz", 60)
    return daemon


OPERATOR_NAMESPACE = "metamapper-system"
OPERATOR_RELEASE = "metamapper-operator"
OPERATOR_SELECTOR = "app.kubernetes.io/name=metamapper-operator"
CHART = REPO / "charts" / "metamapper-operator"


def image_values(image: str) -> tuple[str, ...]:
    """The chart's values that run the operator image ``image`` (``repository:tag``)."""
    repository, _, tag = image.rpartition(":")
    return ("--set", f"image.repository={repository}", "--set", f"image.tag={tag}")


@dataclass
class Stack:
    """Everything ``make demo`` and the end-to-end tests run, under one folder ``root``:
    the services, a control plane with a real node, the project's images, and the
    operator installed with ``helm install`` from the chart, in a pod (``release``'s, when
    given, instead of this checkout's)."""

    root: Path
    namespace: str
    poll_seconds: float = 1.0
    services: tuple[str, ...] = ("redis",)
    release: Release | None = None
    plane: ControlPlane | None = None
    node: Node | None = None
    images: Images | None = None

    @property
    def chart(self) -> Path:
        """The chart the operator is installed from."""
        return self.release.chart if self.release else CHART

    @property
    def kubeconfig(self) -> Path:
        assert self.plane is not None
        return self.plane.kubeconfig_path

    def kubectl(self, *args: str, input: str | None = None,
                check: bool = True) -> subprocess.CompletedProcess[str]:
        kube, _ = tool_dirs()
        result = subprocess.run([str(kube / "kubectl"), f"--kubeconfig={self.kubeconfig}",
                                 *args], input=input, capture_output=True, text=True,
                                timeout=120)
        if check and result.returncode:
            raise StackError(f"kubectl {' '.join(args)}: {result.stderr.strip()}")
        return result

    def kubectl_popen(self, *args: str) -> subprocess.Popen[str]:
        """A long-running kubectl (``logs -f``, ``get --watch``), its output on a pipe."""
        kube, _ = tool_dirs()
        return subprocess.Popen([str(kube / "kubectl"), f"--kubeconfig={self.kubeconfig}",
                                 *args], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                text=True)

    def start(self, say: Callable[[str], None] = lambda _: None) -> None:
        say(f"  services: {', '.join(self.services)} (Debian's packages)")
        services.ensure(*self.services)
        say("  images: worker, operator, workload (built from the Dockerfile; cached)")
        self.images = images.build_all()
        say("  control plane: etcd, kube-apiserver, kube-controller-manager, kube-scheduler")
        self.plane = ControlPlane(self.root / "cluster")
        self.plane.start()
        say("  node: containerd, runc, CNI bridge, kubelet, kube-proxy")
        self.node = Node(self.plane)
        self.node.start()
        if self.release is None:   # a release's chart brings its own (helm creates it)
            kube, _ = tool_dirs()
            install_crds(self.plane, kube / "kubectl")
        self.kubectl("create", "namespace", self.namespace)
        # Pods there must pass the "restricted" Pod Security Standard, as in production.
        self.kubectl("label", "namespace", self.namespace,
                     "pod-security.kubernetes.io/enforce=restricted")
        chart = self.chart.relative_to(REPO) if self.chart.is_relative_to(REPO) else self.chart
        say(f"  operator: helm install from {chart}, in a pod")
        self.install_operator()

    def install_operator(self) -> None:
        assert self.images is not None
        image = self.release.operator if self.release else self.images.operator
        _, helm = tool_dirs()
        done = subprocess.run(
            [str(helm / "helm"), f"--kubeconfig={self.kubeconfig}", "install",
             OPERATOR_RELEASE, str(self.chart),
             "--namespace", OPERATOR_NAMESPACE, "--create-namespace", *image_values(image),
             "--set", f"pollIntervalSeconds={self.poll_seconds:g}",
             "--wait", "--timeout", "180s"], capture_output=True, text=True, check=False)
        if done.returncode:
            raise StackError(f"helm install failed: {done.stderr.strip()}\n"
                             f"{self.operator_diagnostics()}")

    def operator_pod(self) -> dict[str, Any]:
        """The operator's pod (the Deployment runs one)."""
        out = self.kubectl("get", "pods", "-n", OPERATOR_NAMESPACE, "-l", OPERATOR_SELECTOR,
                           "-o", "json").stdout
        pods = [p for p in json.loads(out)["items"] if not p["metadata"].get(
            "deletionTimestamp")]
        if len(pods) != 1:
            raise StackError(f"expected one operator pod, found {len(pods)}")
        found: dict[str, Any] = pods[0]
        return found

    def pod_ips(self, namespace: str, selector: str) -> dict[str, str]:
        """Running pods matching ``selector``: name -> pod IP (reachable from the host)."""
        out = self.kubectl("get", "pods", "-n", namespace, "-l", selector, "-o", "json").stdout
        return {p["metadata"]["name"]: p["status"]["podIP"] for p in json.loads(out)["items"]
                if p["status"].get("phase") == "Running" and p["status"].get("podIP")}

    def operator_logs(self, previous: bool = False) -> str:
        name = self.operator_pod()["metadata"]["name"]
        done = self.kubectl("logs", "-n", OPERATOR_NAMESPACE, name,
                            *(["--previous"] if previous else []), check=False)
        return done.stdout or done.stderr

    def operator_diagnostics(self) -> str:
        return self.kubectl("describe", "pods", "-n", OPERATOR_NAMESPACE, check=False).stdout

    def kill_operator(self) -> int:
        """SIGKILL the operator's process in its container (a crash: nothing cleaned up);
        the kubelet restarts the container. The restart count before the kill."""
        status = self.operator_pod()["status"]["containerStatuses"][0]
        container = status["containerID"].removeprefix("containerd://")
        containerd.ctr("tasks", "kill", "--signal", "SIGKILL", container)
        return int(status["restartCount"])

    def wait_operator_ready(self, restarts: int, timeout: float = 120) -> None:
        """Until the operator's container has restarted ``restarts`` times and is ready."""
        def ready() -> bool:
            with contextlib.suppress(StackError, KeyError, IndexError):
                status = self.operator_pod()["status"]["containerStatuses"][0]
                return bool(status["restartCount"] >= restarts and status["ready"])
            return False

        try:
            wait_until(ready, timeout, "the operator ready again", interval=0.5)
        except WaitTimeout:
            raise StackError(f"the operator was not ready again in {timeout:.0f} s\n"
                             f"{self.operator_diagnostics()}") from None

    def check(self) -> None:
        """Raise if the node or the control plane died."""
        for daemons in (self.plane.pids if self.plane else {},
                        self.node.pids if self.node else {}):
            for name, pid in daemons.items():
                if not alive(pid):
                    raise StackError(f"{name} exited (see {self.root / 'cluster'})")

    def stop(self) -> None:
        """The node first (it stops the pods), then the control plane."""
        if self.node is not None:
            self.node.stop()
        if self.plane is not None:
            self.plane.stop()
