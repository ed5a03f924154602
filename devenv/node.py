"""A real node for the local control plane: the kubelet and kube-proxy, on containerd.

The kubelet (built from the pinned Kubernetes module, like the control plane) runs the
pods with Debian's containerd and runc, the CNI bridge network of ``devenv.containerd``
and the images built by ``devenv.images``: images, security contexts, probes, resources,
volumes, logs and the pod network are all the real thing. kube-proxy (iptables mode)
makes Services work, from pods and from the host, and the cluster DNS (``devenv.dns``,
started with the node) gives them their names.

Settings that this machine asks for, each said where it is set: cgroups v1 with the
``cgroupfs`` driver (``failCgroupV1: false``; Kubernetes 1.36 still runs there, in
maintenance mode), no image garbage collection (nothing could be pulled back), and the
kubelet's address on the host address (it refuses loopback for ``kubectl logs``).

Stopping the node deletes its pods and waits until the runtime has stopped them (the
CNI plugins then remove their veths and network namespaces), stops the three daemons,
and sweeps what a crashed run could leave: mounts, iptables rules, the bridge.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from devenv import containerd, dns, images, network, services
from devenv.controlplane import NODE_NAME, ControlPlane, free_port, tool_dirs
from devenv.errors import DevenvError
from devenv.processes import alive, stop_groups
from devenv.waiting import WaitTimeout, wait_until

KUBELET_ROOT = Path("/var/lib/metamapper-kubelet")


class NodeError(DevenvError):
    """The node did not come up or go away cleanly; the message says what and where."""


def kubelet_config(plane: ControlPlane, port: int, healthz_port: int) -> dict[str, object]:
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
        "address": network.HOST_IP, "port": port, "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1", "healthzPort": healthz_port,
        "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": True},
                           "x509": {"clientCAFile": str(plane.pki / "ca.crt")}},
        "authorization": {"mode": "Webhook"},
        "containerRuntimeEndpoint": containerd.ENDPOINT,
        "cgroupDriver": "cgroupfs", "failCgroupV1": False, "failSwapOn": False,
        "resolvConf": "/etc/resolv.conf",
        "clusterDNS": [dns.SERVICE_IP], "clusterDomain": dns.CLUSTER_DOMAIN,
        # Images are built here and can never be pulled again: never collect them.
        "imageGCHighThresholdPercent": 100, "imageGCLowThresholdPercent": 99,
        # A development machine's disk may be fuller than a node's: evict only when the
        # memory really runs out.
        "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%",
                         "imagefs.available": "1%", "nodefs.inodesFree": "1%"},
        "serializeImagePulls": False,
        "nodeStatusReportFrequency": "10s",
        "syncFrequency": "10s",
        "shutdownGracePeriod": "0s",
        "maxPods": 110,
    }


@dataclass
class Node:
    """The kubelet and kube-proxy of ``plane``'s one node, state under ``plane.root``."""

    plane: ControlPlane
    kubelet_port: int = field(default_factory=free_port)
    healthz_port: int = field(default_factory=free_port)
    proxy_healthz_port: int = field(default_factory=free_port)
    proxy_metrics_port: int = field(default_factory=free_port)
    pids: dict[str, int] = field(default_factory=dict)

    @property
    def root(self) -> Path:
        return self.plane.root / "node"

    def _spawn(self, name: str, argv: list[str]) -> None:
        self.pids[name] = services.spawn(argv, self.root / f"{name}.log")
        (self.root / "pids.json").write_text(json.dumps(self.pids))

    def _tail(self, name: str) -> str:
        log = self.root / f"{name}.log"
        return "\n".join(log.read_text(errors="replace").splitlines()[-20:])

    def kubectl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        kube, _ = tool_dirs()
        done = subprocess.run([str(kube / "kubectl"), f"--kubeconfig={self.plane.kubeconfig_path}",
                               *args], capture_output=True, text=True, timeout=120, check=False)
        if check and done.returncode:
            raise NodeError(f"kubectl {' '.join(args)}: {done.stderr.strip()}")
        return done

    def start(self, progress: bool = False) -> None:
        def say(message: str) -> None:
            if progress:
                print(message, flush=True)

        kube, _ = tool_dirs()
        self.root.mkdir(parents=True, exist_ok=True)
        network.ensure_pod_network()
        say("starting containerd (and building the pause and coredns images if needed) ...")
        node_images = images.node_runtime()
        # A cluster started again on its earlier state still has the node as cluster-down
        # left it (cordoned, its last status): the kubelet registers it afresh.
        self.kubectl("delete", "node", NODE_NAME, "--ignore-not-found")
        say("starting the kubelet ...")
        config = self.root / "kubelet.yaml"
        config.write_text(yaml.safe_dump(kubelet_config(self.plane, self.kubelet_port,
                                                        self.healthz_port)))
        KUBELET_ROOT.mkdir(parents=True, exist_ok=True)
        self._spawn("kubelet", [
            str(kube / "kubelet"), f"--config={config}",
            f"--kubeconfig={self.plane.component_kubeconfig('node')}",
            f"--root-dir={KUBELET_ROOT}", f"--hostname-override={NODE_NAME}",
            f"--node-ip={network.HOST_IP}",
        ])
        say("starting kube-proxy ...")
        proxy_kubeconfig = self.plane.component_kubeconfig("kube-proxy")
        self._spawn("kube-proxy", [
            str(kube / "kube-proxy"), f"--kubeconfig={proxy_kubeconfig}",
            f"--hostname-override={NODE_NAME}", "--proxy-mode=iptables",
            f"--cluster-cidr={network.POD_CIDR}", "--conntrack-max-per-core=0",
            f"--healthz-bind-address=127.0.0.1:{self.proxy_healthz_port}",
            f"--metrics-bind-address=127.0.0.1:{self.proxy_metrics_port}",
        ])
        self.wait_ready()
        say(f"node {NODE_NAME} Ready at {network.HOST_IP}")
        say(f"starting the cluster DNS (CoreDNS at {dns.SERVICE_IP}) ...")
        try:
            dns.install(self.plane, kube / "kubectl", node_images.coredns)
        except dns.DnsError as err:
            raise NodeError(str(err)) from None

    def wait_ready(self, timeout: float = 120) -> None:
        template = '{.status.conditions[?(@.type=="Ready")].status}'

        def ready() -> bool:
            for name, pid in self.pids.items():
                if not alive(pid):
                    raise NodeError(f"{name} exited; log tail:\n{self._tail(name)}")
            return self.kubectl("get", "node", NODE_NAME, "-o", f"jsonpath={template}",
                                check=False).stdout == "True"

        try:
            wait_until(ready, timeout, f"node {NODE_NAME} Ready", interval=0.5)
        except WaitTimeout:
            raise NodeError(f"node {NODE_NAME} not Ready in {timeout:.0f} s; kubelet log tail:\n"
                            f"{self._tail('kubelet')}") from None

    def stop(self, timeout: float = 120) -> None:
        """Delete the pods, wait until the runtime stopped them, stop the daemons, sweep."""
        if self.pids.get("kubelet") and alive(self.pids["kubelet"]):
            # Cordoned first, so that controllers' replacements stay pending.
            self.kubectl("cordon", NODE_NAME, check=False)
            self.kubectl("delete", "pods", "--all", "--all-namespaces", "--grace-period=5",
                         "--wait=false", check=False)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and (running_tasks() or volume_mounts()):
                time.sleep(0.5)
        stop_groups(self.pids.values(), grace=15)
        for pid in self.pids.values():   # reap the ones this process started
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
        self.pids.clear()
        (self.root / "pids.json").unlink(missing_ok=True)
        clean_node()

    @classmethod
    def load(cls, plane: ControlPlane) -> Node:
        node = cls(plane)
        pids = node.root / "pids.json"
        if pids.exists():
            node.pids = {k: int(v) for k, v in json.loads(pids.read_text()).items()}
        return node


def running_tasks() -> list[str]:
    """The containers (sandboxes included) the runtime still runs."""
    if not containerd.running():
        return []
    return [line.split()[0] for line in containerd.ctr("tasks", "ls", check=False)
            .stdout.splitlines()[1:] if "RUNNING" in line]


def _mounts_under(*roots: Path) -> list[str]:
    found = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        target = line.split()[1].replace("\\040", " ")
        if any(target == str(r) or target.startswith(f"{r}/") for r in roots):
            found.append(target)
    return found


def pod_mounts() -> list[str]:
    """Every mount of the node: pods' volumes, containers' root filesystems, sandboxes'
    shared memory, and the kubelet's bind mount of its own root."""
    return _mounts_under(KUBELET_ROOT, containerd.STATE, containerd.ROOT)


def volume_mounts() -> list[str]:
    """The pods' volumes the kubelet has still mounted."""
    return _mounts_under(KUBELET_ROOT / "pods")


def clean_node() -> None:
    """What no daemon of a stopped node should leave: containers a crashed kubelet left
    running (and their shims), containerd itself, mounts (deepest first), kube-proxy's
    rules and the pod network."""
    if containerd.running():
        tasks = containerd.ctr("tasks", "ls", "-q", check=False).stdout.split()
        for task in tasks:
            containerd.ctr("tasks", "rm", "-f", task, check=False)
    containerd.stop()
    for target in sorted(pod_mounts(), key=len, reverse=True):
        subprocess.run(["umount", "-l", target], capture_output=True, check=False)
    kube, _ = tool_dirs()
    subprocess.run([str(kube / "kube-proxy"), "--cleanup"], capture_output=True, check=False)
    network.remove_pod_network()


def leftovers() -> list[str]:
    """Processes, mounts and network pieces of a node that should be gone."""
    found = [f"mount {m}" for m in pod_mounts()]
    found += network.leftovers()
    ps = subprocess.run(["ps", "-eo", "pid=,stat=,comm="], capture_output=True, text=True,
                        check=False).stdout
    daemons = ("kubelet", "kube-proxy", "containerd", "containerd-shim")
    found += [f"process {line.strip()}" for line in ps.splitlines()
              if len(fields := line.split()) == 3 and not fields[1].startswith("Z")
              and fields[2].startswith(daemons)]
    return found
