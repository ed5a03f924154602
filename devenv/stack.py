"""The whole local stack, for the demo and the end-to-end tests.

Redis, a local control plane with the project's CRD, the operator (``metamapper-operator``,
as users run it) and the local node runtime that runs the Pods as processes: each started
as its own process, each stopped with nothing left behind.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from devenv import services
from devenv.controlplane import REPO, ControlPlane, free_port, tool_dirs
from devenv.processes import signal_group

BIN = Path(sys.executable).parent


class StackError(RuntimeError):
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


def _wait_http(daemon: Daemon, url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and daemon.alive():
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.2)
    raise StackError(f"{daemon.name} did not come up; log {daemon.log}:\n{daemon.tail()}")


def start_operator(kubeconfig: Path, log: Path, *args: str, env: dict[str, str]) -> Daemon:
    """``metamapper-operator`` with free liveness and metrics ports; waits until live."""
    liveness, metrics = free_port(), free_port()
    daemon = spawn("operator", [str(BIN / "metamapper-operator"),
                                "--liveness-port", str(liveness),
                                "--metrics-port", str(metrics), *args],
                   log, {**env, "KUBECONFIG": str(kubeconfig)})
    daemon.ports.update(liveness=liveness, metrics=metrics)
    _wait_http(daemon, f"http://127.0.0.1:{liveness}/healthz", 60)
    return daemon


def start_localnode(kubeconfig: Path, state_dir: Path, log: Path, namespaces: list[str],
                    env: dict[str, str]) -> Daemon:
    argv = [sys.executable, "-m", "devenv.localnode",
            "--kubeconfig", str(kubeconfig), "--state-dir", str(state_dir)]
    for namespace in namespaces:
        argv += ["--namespace", namespace]
    return spawn("local node", argv, log, env)


@dataclass
class Stack:
    """Everything ``make demo`` runs, under one folder ``root``."""

    root: Path
    namespace: str
    poll_seconds: float = 1.0
    daemons: list[Daemon] = field(default_factory=list)
    plane: ControlPlane | None = None
    env: dict[str, str] = field(default_factory=dict)

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

    def start(self, env: dict[str, str]) -> None:
        self.env = env
        services.ensure("redis")
        self.plane = ControlPlane(self.root / "cluster")
        self.plane.start()
        self.kubectl("apply", "--server-side", "-f", str(REPO / "crds"))
        established = 'jsonpath={.status.conditions[?(@.type=="Established")].status}'
        deadline = time.monotonic() + 60
        while self.kubectl("get", "crd/metamappers.metamapper.io", "-o", established,
                           check=False).stdout != "True":
            if time.monotonic() > deadline:
                raise StackError("the Metamapper CRD did not become Established")
            time.sleep(0.2)
        self.kubectl("create", "namespace", self.namespace)
        self.daemons.append(self._start_operator())
        self.daemons.append(start_localnode(
            self.kubeconfig, self.root / "pods", self.root / "localnode.log",
            [self.namespace], env))

    def _start_operator(self) -> Daemon:
        return start_operator(self.kubeconfig, self.root / "operator.log",
                              "--poll-interval", str(self.poll_seconds), env=self.env)

    @property
    def operator(self) -> Daemon:
        return next(d for d in self.daemons if d.name == "operator")

    def restart_operator(self) -> Daemon:
        """SIGKILL the operator, if it still runs (a crash: nothing cleaned up), and start
        a new one, logging to the same file; it is live when this returns."""
        old = self.operator
        old.kill()
        new = self._start_operator()
        self.daemons[self.daemons.index(old)] = new
        return new

    def check(self) -> None:
        """Raise if a daemon died."""
        for daemon in self.daemons:
            if not daemon.alive():
                raise StackError(f"{daemon.name} exited; log {daemon.log}:\n{daemon.tail()}")

    def stop(self) -> None:
        """The node runtime first (it stops the pods' processes), then the rest."""
        for daemon in reversed(self.daemons):
            daemon.stop()
        self.daemons.clear()
        if self.plane is not None:
            self.plane.stop()
