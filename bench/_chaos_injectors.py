"""The faults of ``bench/chaos.py``, each injected on the stack of ``devenv.stack``.

Each injector does its fault and undoes what needs undoing (a partition's rule, a paused
process, CoreDNS scaled down) before it returns; what it left in place if interrupted is
undone by :meth:`Injectors.undo`, which the soak calls on its way out whatever happened.
Each returns the pods it hit (none: the fault hit no pod in particular).

How each is done, and why that way:

- a container is killed through containerd (``ctr tasks kill``), as the kernel's or the
  runtime's kill would: no kubelet involved;
- OOM: a task of the workload (``hog``) allocating more than the pod's memory limit; the
  kernel kills the process that ran it, on whichever pod took it (every pod of the fleet
  counts as hit);
- eviction: a ``policy/v1`` Eviction posted to the pod's ``eviction`` subresource (what
  ``kubectl drain`` does), which the pool's PodDisruptionBudget may refuse for a while;
- a partition: iptables rules that drop the traffic to and from the broker's Service, in
  the pod's network namespace (the sandbox's, found from the container's runtime spec,
  entered with ``nsenter --net``); the pod still reaches the record store;
- the node's and the control plane's daemons are restarted with the command lines they run
  with (read from ``/proc``), SIGTERM first, as a service manager restarts them;
- containerd is restarted alone: its shims run in process groups of their own and keep the
  containers running, as on a real node.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from _chaos_faults import PlannedFault
from devenv import containerd, dns, images
from devenv.controlplane import tool_dirs
from devenv.processes import alive, signal_group
from devenv.stack import CHART, OPERATOR_NAMESPACE, OPERATOR_RELEASE, OPERATOR_SELECTOR, Stack
from devenv.waiting import WaitTimeout, wait_until
from devenv.workload import records

LEADER_WAIT = 90.0   # seconds for a live operator pod to hold the Lease (after an upgrade)
TARGET_WAIT = 120.0  # seconds for a running worker pod of the fleet to hit
HOG_WAIT = 180.0     # seconds for the OOM fault's task to be redelivered and done
EVICTION_WAIT = 60.0  # seconds of refused evictions (the PodDisruptionBudget) retried
HELM_SECONDS = 180   # helm's --wait for the operator's rollout
#: The longest one injection waits, its hold aside: a pod to hit, then its eviction; the
#: hog's redelivery; helm's rollout. (devenv's waits an injector goes through are shorter:
#: the kubelet's stop and the node Ready, 15 + 120 s; the apiserver's, 15 + 90 s; the
#: cluster DNS ready, 120 s; RabbitMQ stopped and started, 60 + 120 s.)
INJECT_LIMIT = max(TARGET_WAIT + EVICTION_WAIT, HOG_WAIT, HELM_SECONDS, LEADER_WAIT)


class Broker(Protocol):
    """A fleet's broker as the injectors see it."""

    name: str
    service_port: int    # the port of its Service in the cluster

    def restart(self) -> None: ...


def fleet_name(broker: str) -> str:
    """The Metamapper of the fleet on ``broker`` (its pods' ``app.kubernetes.io/instance``)."""
    return f"fleet-{broker}"


def cmdline(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().rstrip("\0").split("\0")


def container_id(pod: dict[str, Any]) -> str:
    return str(pod["status"]["containerStatuses"][0]["containerID"]).removeprefix(
        "containerd://")


def netns_of(container: str) -> str:
    """The network namespace of the container's pod (its sandbox's)."""
    info = json.loads(containerd.ctr("containers", "info", container).stdout)
    for namespace in info["Spec"]["linux"]["namespaces"]:
        if namespace["type"] == "network" and namespace.get("path"):
            return str(namespace["path"])
    raise RuntimeError(f"container {container} has no network namespace path")


def task_pid(container: str) -> int:
    """The host pid of the container's first process."""
    for line in containerd.ctr("tasks", "ls").stdout.splitlines()[1:]:
        fields = line.split()
        if fields and fields[0] == container:
            return int(fields[1])
    raise RuntimeError(f"container {container} has no running task")


@dataclass(frozen=True)
class Partition:
    netns: str
    rules: tuple[tuple[str, ...], ...]

    def iptables(self, action: str, check: bool) -> None:
        for rule in self.rules:
            subprocess.run(["nsenter", f"--net={self.netns}", "iptables", action, *rule],
                           capture_output=True, check=check)


@dataclass
class Injectors:
    """The injectors, on ``stack``, its worker pods in ``namespace``; ``hog_megabytes``
    more than the pods' memory limit; ``send_hog(broker, task id, megabytes)`` sends the
    workload's ``hog`` task to that fleet."""

    stack: Stack
    namespace: str
    brokers: dict[str, Broker]
    record_url: str
    hog_megabytes: int
    send_hog: Callable[[str, str, int], None]
    upgrades: int = 0
    _partitions: list[Partition] = field(default_factory=list)
    _paused: list[int] = field(default_factory=list)
    _dns_down: bool = False

    # --- pods -------------------------------------------------------------------------

    def worker_pods(self, broker: str) -> list[dict[str, Any]]:
        """The fleet's running worker pods, not being deleted."""
        out = self.stack.kubectl("get", "pods", "-n", self.namespace, "-l",
                                 f"app.kubernetes.io/component=worker,"
                                 f"app.kubernetes.io/instance={fleet_name(broker)}",
                                 "-o", "json").stdout
        return [p for p in json.loads(out)["items"]
                if p["status"].get("phase") == "Running"
                and not p["metadata"].get("deletionTimestamp")
                and all(c.get("containerID") for c in p["status"].get("containerStatuses", [{}]))]

    def target(self, fault: PlannedFault) -> dict[str, Any]:
        pods = {p["metadata"]["name"]: p for p in wait_until(
            lambda: self.worker_pods(fault.broker), TARGET_WAIT,
            f"a running {fault.broker} worker")}
        return pods[fault.target(list(pods))]

    def inject(self, fault: PlannedFault) -> frozenset[str]:
        """Do ``fault``; the pods it hit."""
        method: Callable[[PlannedFault], frozenset[str]] = getattr(
            self, fault.kind.replace("-", "_"))
        return method(fault)

    def pod_sigkill(self, fault: PlannedFault) -> frozenset[str]:
        pod = self.target(fault)
        containerd.ctr("tasks", "kill", "--signal", "SIGKILL", container_id(pod))
        return frozenset({pod["metadata"]["name"]})

    def pod_oom(self, fault: PlannedFault) -> frozenset[str]:
        pods = frozenset(p["metadata"]["name"] for p in self.worker_pods(fault.broker))
        task_id = f"hog-{fault.index}-{time.time():.0f}"
        self.send_hog(fault.broker, task_id, self.hog_megabytes)
        with contextlib.suppress(WaitTimeout):   # the recovery wait tells the rest
            wait_until(lambda: records(self.record_url, "done", task_id), HOG_WAIT,
                       "the hog task redelivered and done", interval=1)
        return pods

    def pod_delete(self, fault: PlannedFault) -> frozenset[str]:
        pod = self.target(fault)
        name = pod["metadata"]["name"]
        self.stack.kubectl("delete", "pod", "-n", self.namespace, name, "--wait=false")
        return frozenset({name})

    def pod_evict(self, fault: PlannedFault) -> frozenset[str]:
        """Post an Eviction; a refusal (429: the PodDisruptionBudget) is retried for a
        minute, as ``kubectl drain`` does."""
        pod = self.target(fault)
        name = pod["metadata"]["name"]
        body = json.dumps({"apiVersion": "policy/v1", "kind": "Eviction",
                           "metadata": {"name": name, "namespace": self.namespace}})
        path = f"/api/v1/namespaces/{self.namespace}/pods/{name}/eviction"
        wait_until(lambda: self.stack.kubectl("create", "--raw", path, "-f", "-", input=body,
                                              check=False).returncode == 0,
                   EVICTION_WAIT, f"the eviction of {name} accepted", interval=2)
        return frozenset({name})

    def _partition(self, fault: PlannedFault) -> frozenset[str]:
        pod = self.target(fault)
        broker = self.brokers[fault.broker]
        service_ip = self.stack.kubectl("get", "service", "-n", self.namespace, broker.name,
                                        "-o", "jsonpath={.spec.clusterIP}").stdout.strip()
        port = str(broker.service_port)
        cut = Partition(netns_of(container_id(pod)), (
            ("OUTPUT", "-p", "tcp", "-d", service_ip, "--dport", port, "-j", "DROP"),
            ("INPUT", "-p", "tcp", "-s", service_ip, "--sport", port, "-j", "DROP")))
        self._partitions.append(cut)
        cut.iptables("-I", check=True)
        time.sleep(fault.hold)
        cut.iptables("-D", check=False)   # gone with the pod if it was replaced meanwhile
        self._partitions.remove(cut)
        return frozenset({pod["metadata"]["name"]})

    partition_short = _partition
    partition_long = _partition

    # --- brokers ----------------------------------------------------------------------

    def broker_restart(self, fault: PlannedFault) -> frozenset[str]:
        self.brokers[fault.broker].restart()
        return frozenset()

    # --- the node and the control plane -----------------------------------------------

    def kubelet_restart(self, fault: PlannedFault) -> frozenset[str]:
        node = self.stack.node
        assert node is not None
        argv = cmdline(node.pids["kubelet"])
        stop_child(node.pids["kubelet"])
        node._spawn("kubelet", argv)
        node.wait_ready()
        return frozenset()

    def containerd_restart(self, fault: PlannedFault) -> frozenset[str]:
        containerd.stop()
        images.node_runtime()   # starts it again with the node's configuration
        return frozenset()

    def apiserver_restart(self, fault: PlannedFault) -> frozenset[str]:
        plane = self.stack.plane
        assert plane is not None
        pid = plane.pids["kube-apiserver"]
        argv = cmdline(pid)
        stop_child(pid)
        plane._spawn("kube-apiserver", argv)
        plane._wait("kube-apiserver", f"{plane.server}/readyz", 90)
        return frozenset()

    # --- the operator -----------------------------------------------------------------

    def leader(self) -> dict[str, Any]:
        """The operator pod holding the Lease (the chart runs two here: one stands by).
        After an upgrade the Lease names a pod of the old ReplicaSet, on its way out,
        until a new pod takes it over: that is waited for."""
        try:
            found = wait_until(self._leader, LEADER_WAIT, "an operator pod holding the Lease",
                               interval=1)
        except WaitTimeout as err:
            raise RuntimeError(str(err)) from None
        assert found is not None   # wait_until returns a truthy value
        return found

    def _leader(self) -> dict[str, Any] | None:
        holder = self.stack.kubectl(
            "get", "lease", "-n", OPERATOR_NAMESPACE, "-o",
            "jsonpath={.items[0].spec.holderIdentity}").stdout.strip()
        out = self.stack.kubectl("get", "pods", "-n", OPERATOR_NAMESPACE, "-l",
                                 OPERATOR_SELECTOR, "-o", "json").stdout
        pods = [p for p in json.loads(out)["items"] if not p["metadata"].get(
            "deletionTimestamp")]
        return next((p for p in pods if holder and p["metadata"]["name"] in holder), None)

    def operator_kill(self, fault: PlannedFault) -> frozenset[str]:
        """SIGKILL the leader's process (a crash); the kubelet restarts its container."""
        containerd.ctr("tasks", "kill", "--signal", "SIGKILL", container_id(self.leader()))
        return frozenset()

    def operator_pause(self, fault: PlannedFault) -> frozenset[str]:
        """SIGSTOP the leader's process for ``hold`` seconds (past its lease), then
        SIGCONT: a standby takes over meanwhile; the paused one must find it lost."""
        pid = task_pid(container_id(self.leader()))
        self._paused.append(pid)
        os.kill(pid, signal.SIGSTOP)
        time.sleep(fault.hold)
        with contextlib.suppress(ProcessLookupError):   # the kubelet may have restarted it
            os.kill(pid, signal.SIGCONT)
        self._paused.remove(pid)
        return frozenset()

    def helm_upgrade(self, fault: PlannedFault) -> frozenset[str]:
        """``helm upgrade`` of the operator to the same image under a new tag (the
        soak's burst is on its way), waiting for the rollout."""
        assert self.stack.images is not None
        repository, _, tag = self.stack.images.operator.rpartition(":")
        self.upgrades += 1
        new_tag = f"{tag}-chaos{self.upgrades}"
        containerd.ctr("images", "tag", "--force", self.stack.images.operator,
                       f"{repository}:{new_tag}")
        helm(self.stack, "upgrade", "--reuse-values", "--set", f"image.tag={new_tag}")
        return frozenset()

    # --- the cluster DNS --------------------------------------------------------------

    def dns_outage(self, fault: PlannedFault) -> frozenset[str]:
        self._dns_down = True
        self._scale_dns(0)
        time.sleep(fault.hold)
        self._restore_dns()
        return frozenset()

    def _scale_dns(self, replicas: int) -> None:
        self.stack.kubectl("scale", f"deployment/{dns.NAME}", "-n", dns.NAMESPACE,
                           f"--replicas={replicas}")

    def _restore_dns(self) -> None:
        """Scaled back, as ``devenv.dns`` says an outage ends, and ready again."""
        self._scale_dns(1)
        assert self.stack.plane is not None
        kube, _ = tool_dirs()
        dns.wait_ready(self.stack.plane, kube / "kubectl")
        self._dns_down = False

    # --- on the way out ---------------------------------------------------------------

    def undo(self) -> None:
        """Undo what an interrupted injector left: partitions, paused processes, the DNS."""
        for cut in self._partitions:
            cut.iptables("-D", check=False)
        self._partitions.clear()
        for pid in self._paused:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        self._paused.clear()
        if self._dns_down:
            with contextlib.suppress(Exception):
                self._restore_dns()


def helm(stack: Stack, command: str, *args: str, chart: Path = CHART) -> None:
    """``helm <command>`` of the operator's release from ``chart``, waiting for it."""
    _, tools = tool_dirs()
    done = subprocess.run(
        [str(tools / "helm"), f"--kubeconfig={stack.kubeconfig}", command, OPERATOR_RELEASE,
         str(chart), "--namespace", OPERATOR_NAMESPACE, *args, "--wait", "--timeout",
         f"{HELM_SECONDS}s"],
        capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"helm {command} failed: {done.stderr.strip()}")


def stop_child(pid: int, grace: float = 15.0) -> None:
    """SIGTERM a daemon's process group and wait for the daemon (a child of this process,
    collected here, or another's), SIGKILL the group after ``grace`` seconds."""
    signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        try:
            if os.waitpid(pid, os.WNOHANG)[0]:
                break
        except ChildProcessError:
            if not alive(pid):
                break
        time.sleep(0.1)
    signal_group(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)
