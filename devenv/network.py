"""The host network of the development environment: one address of its own, a pod bridge.

Pods cannot reach the host's 127.0.0.1, so everything they talk to (the services, the
apiserver, the kubelet) listens on ``HOST_IP``, a second address of the loopback interface
(a /32 of the project's own; the kernel here has no dummy interfaces): local to this
machine, yet reachable from the pods' bridge like any other address of the host. Pods live
on the bridge ``BRIDGE`` (``POD_CIDR``, made by the CNI bridge plugin when the first pod
starts); Services get ClusterIPs in ``SERVICE_CIDR``, which kube-proxy turns into the pods'
or the host's addresses.

Nothing of it reaches beyond this machine: pods are not masqueraded, and a FORWARD rule
of our own drops anything from the pod range that is not for the pod range itself.
Everything here is idempotent and needs root (``ip``, ``iptables``, ``sysctl``).
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from pathlib import Path

from devenv.errors import DevenvError

HOST_INTERFACE = "lo"
HOST_IP = "10.213.255.1"
BRIDGE = "mmbr0"
POD_CIDR = "10.213.0.0/24"
SERVICE_CIDR = "10.213.128.0/24"
KUBERNETES_SERVICE_IP = "10.213.128.1"
FORWARD_CHAIN = "METAMAPPER-DEV"
DEV_CIDR = "10.213.0.0/16"  # all of the above: what the development environment's servers trust


class NetworkError(DevenvError):
    """A host network step failed; the message has the command and its error."""


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(list(argv), capture_output=True, text=True, check=False)
    if check and done.returncode:
        raise _failed(done)
    return done


def _failed(done: subprocess.CompletedProcess[str]) -> NetworkError:
    return NetworkError(f"`{' '.join(done.args)}` failed: {done.stderr.strip()} "
                        "(the development environment needs root and iproute2/iptables)")


def _link_exists(name: str) -> bool:
    return Path("/sys/class/net", name).exists()


def _has_host_address() -> bool:
    return f" {HOST_IP}/32 " in _run("ip", "-o", "addr", "show", "dev", HOST_INTERFACE).stdout


def ensure_host_address() -> None:
    """``HOST_IP`` on the loopback interface. Another process may add it between the look
    and the add (two test workers on a fresh machine): an add that failed is an error only
    if the address is still missing."""
    if _has_host_address():
        return
    added = _run("ip", "addr", "add", f"{HOST_IP}/32", "dev", HOST_INTERFACE, check=False)
    if added.returncode and not _has_host_address():
        raise _failed(added)


def remove_host_address() -> None:
    if _has_host_address():
        _run("ip", "addr", "del", f"{HOST_IP}/32", "dev", HOST_INTERFACE)


def _sysctl(key: str, value: str) -> None:
    path = Path("/proc/sys", *key.split("."))
    if not path.exists() and key.startswith("net.bridge.") and shutil.which("modprobe"):
        _run("modprobe", "br_netfilter", check=False)
    if not path.exists():
        raise NetworkError(f"{path} is missing: the kernel needs bridge netfilter "
                           "(br_netfilter) for kube-proxy's rules to see pod traffic")
    if path.read_text().strip() != value:
        path.write_text(value)


def ensure_pod_network() -> None:
    """What a node's pod network needs from the host: forwarding (Service traffic between
    pods is routed through the host), bridged traffic seen by iptables (kube-proxy's
    rules), and the rule that keeps pod traffic on this machine."""
    ensure_host_address()
    _sysctl("net.ipv4.ip_forward", "1")
    _sysctl("net.bridge.bridge-nf-call-iptables", "1")
    if _run("iptables", "-w", "-nL", FORWARD_CHAIN, check=False).returncode:
        _run("iptables", "-w", "-N", FORWARD_CHAIN)
        _run("iptables", "-w", "-A", FORWARD_CHAIN, "-s", POD_CIDR, "-d", POD_CIDR,
             "-j", "RETURN")
        _run("iptables", "-w", "-A", FORWARD_CHAIN, "-s", POD_CIDR, "-j", "DROP")
    if _run("iptables", "-w", "-C", "FORWARD", "-j", FORWARD_CHAIN, check=False).returncode:
        _run("iptables", "-w", "-I", "FORWARD", "1", "-j", FORWARD_CHAIN)


def remove_pod_network() -> None:
    """Undo ``ensure_pod_network`` but the host address (the services may still use it),
    and sweep what a crashed node can leave: the bridge, its veths, CNI's netns."""
    with contextlib.suppress(NetworkError):
        while _run("iptables", "-w", "-D", "FORWARD", "-j", FORWARD_CHAIN,
                   check=False).returncode == 0:
            pass
        _run("iptables", "-w", "-F", FORWARD_CHAIN, check=False)
        _run("iptables", "-w", "-X", FORWARD_CHAIN, check=False)
    for veth in _bridge_ports():
        _run("ip", "link", "delete", veth, check=False)
    if _link_exists(BRIDGE):
        _run("ip", "link", "delete", BRIDGE)
    netns = Path("/run/netns")
    for entry in netns.glob("cni-*") if netns.exists() else []:
        _run("ip", "netns", "delete", entry.name, check=False)


def _bridge_ports() -> list[str]:
    ports = Path("/sys/class/net", BRIDGE, "brif")
    return [p.name for p in ports.iterdir()] if ports.exists() else []


def leftovers() -> list[str]:
    """What of the pod network is still there (for ``cluster-down``'s check and tests)."""
    found = [f"bridge {BRIDGE}"] if _link_exists(BRIDGE) else []
    found += [f"veth {name}" for name in _bridge_ports()]
    netns = Path("/run/netns")
    found += [f"netns {p.name}" for p in netns.glob("cni-*")] if netns.exists() else []
    if _run("iptables", "-w", "-nL", FORWARD_CHAIN, check=False).returncode == 0:
        found.append(f"iptables chain {FORWARD_CHAIN}")
    return found
