"""The local cluster's DNS: CoreDNS with its kubernetes plugin, as real clusters run it.

CoreDNS (built from its published Go module by ``tools/build.sh``; its image by
``devenv.images``) runs in ``kube-system`` as the Deployment ``coredns``, behind the
Service ``kube-dns`` at ``SERVICE_IP``: the address the kubelet's ``clusterDNS`` writes
into every pod's resolv.conf (``devenv.node``). Its kubernetes plugin answers for
``cluster.local`` from the API's Services and EndpointSlices, so a pod reaches
``redis.<namespace>.svc.cluster.local``, or ``redis`` from its own namespace. Other names
go to the resolvers of the host's resolv.conf (which pods cannot reach here: the pod
network ends at this machine, see ``devenv.network``).

The container listens on an unprivileged port (``Ports.dns``) and the Service maps port
53 to it, so CoreDNS runs as a user without any capability; the pod's resolv.conf still
names port 53.

A DNS outage is the Deployment scaled to 0 (``kubectl scale deployment/coredns
-n kube-system --replicas=0``); it is over once scaled back and :func:`wait_ready`
returns.
"""

from __future__ import annotations

import ipaddress
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from devenv import network
from devenv.controlplane import ControlPlane
from devenv.errors import DevenvError

CLUSTER_DOMAIN = "cluster.local"
NAMESPACE = "kube-system"
NAME = "coredns"            # the Deployment, its ServiceAccount, ConfigMap and ClusterRole
SERVICE = "kube-dns"        # the Service's name in every cluster, whatever runs behind it
LABELS = {"k8s-app": "kube-dns"}
# The tenth address of the Service range, as kubeadm picks it: in the low band of the
# range, which the apiserver hands to Services without a fixed address only once the
# rest of the range is taken.
SERVICE_IP = str(ipaddress.ip_network(network.SERVICE_CIDR)[10])
CONFIG_DIR = "/etc/coredns"


class DnsError(DevenvError):
    """The cluster DNS did not become ready; the message has what its pod said."""


@dataclass(frozen=True)
class Ports:
    """Where CoreDNS listens: DNS (UDP and TCP), ``/health``, ``/ready``, ``/metrics``."""

    dns: int = 1053
    health: int = 8080
    ready: int = 8181
    metrics: int = 9153


def corefile(ports: Ports = Ports(), *, kubeconfig: Path | None = None,
             bind: str | None = None) -> str:
    """CoreDNS's configuration: the kubernetes plugin answers for the cluster's zone and
    the reverse zones (pod names by address, ``pods insecure``, as real clusters do),
    everything else is forwarded to the resolvers of ``/etc/resolv.conf``.

    In a pod the plugin uses its ServiceAccount; ``kubeconfig`` names another identity
    (CoreDNS run as a host process). ``bind`` restricts every listener to one address.
    """
    host = bind or ""
    lines = [f".:{ports.dns} {{"]
    if bind:
        lines.append(f"    bind {bind}")
    lines += [
        "    errors",
        f"    health {host}:{ports.health} {{",
        "        lameduck 5s",
        "    }",
        f"    ready {host}:{ports.ready}",
        f"    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{",
        "        pods insecure",
        "        fallthrough in-addr.arpa ip6.arpa",
        "        ttl 30",
    ]
    if kubeconfig is not None:
        lines.append(f"        kubeconfig {kubeconfig}")
    lines += [
        "    }",
        f"    prometheus {host}:{ports.metrics}",
        "    forward . /etc/resolv.conf",
        "    cache 30",
        "    loop",
        "    reload",
        "    loadbalance",
        "}",
    ]
    return "\n".join(lines) + "\n"


def _meta(name: str, namespaced: bool = True) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": dict(LABELS)}
    if namespaced:
        meta["namespace"] = NAMESPACE
    return meta


def rbac_manifests() -> list[dict[str, Any]]:
    """The ServiceAccount CoreDNS runs as and what its kubernetes plugin reads: Services,
    EndpointSlices and Namespaces, listed and watched (Pods only with ``pods verified``)."""
    role = f"system:{NAME}"
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(NAME)},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
         "metadata": _meta(role, namespaced=False),
         "rules": [
             {"apiGroups": [""], "resources": ["services", "namespaces"],
              "verbs": ["list", "watch"]},
             {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"],
              "verbs": ["list", "watch"]},
         ]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": _meta(role, namespaced=False),
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                     "name": role},
         "subjects": [{"kind": "ServiceAccount", "name": NAME, "namespace": NAMESPACE}]},
    ]


def _deployment(image: str, ports: Ports) -> dict[str, Any]:
    container = {
        "name": NAME, "image": image,
        # Built here and loaded into the node; there is nothing to pull from.
        "imagePullPolicy": "Never",
        "args": ["-conf", f"{CONFIG_DIR}/Corefile"],
        "ports": [
            {"name": "dns", "containerPort": ports.dns, "protocol": "UDP"},
            {"name": "dns-tcp", "containerPort": ports.dns, "protocol": "TCP"},
            {"name": "metrics", "containerPort": ports.metrics, "protocol": "TCP"},
        ],
        # A small share of the 2-core node, whose allocatable CPU the benchmarks fill.
        "resources": {"requests": {"cpu": "20m", "memory": "70Mi"},
                      "limits": {"memory": "170Mi"}},
        "volumeMounts": [{"name": "config", "mountPath": CONFIG_DIR, "readOnly": True}],
        "livenessProbe": {"httpGet": {"path": "/health", "port": ports.health},
                          "initialDelaySeconds": 60, "timeoutSeconds": 5,
                          "failureThreshold": 5},
        # Ready once the kubernetes plugin has its first listing of the API.
        "readinessProbe": {"httpGet": {"path": "/ready", "port": ports.ready},
                           "periodSeconds": 2},
        "securityContext": {"allowPrivilegeEscalation": False,
                            "capabilities": {"drop": ["ALL"]},
                            "readOnlyRootFilesystem": True},
    }
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": _meta(NAME),
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": dict(LABELS)},
            "template": {
                "metadata": {"labels": dict(LABELS)},
                "spec": {
                    "serviceAccountName": NAME,
                    "priorityClassName": "system-cluster-critical",
                    # CoreDNS itself resolves with the host's resolv.conf, not with itself.
                    "dnsPolicy": "Default",
                    # The image's user (65532) is no root; nothing needs one.
                    "securityContext": {"runAsNonRoot": True,
                                        "seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [container],
                    "volumes": [{"name": "config", "configMap": {
                        "name": NAME, "items": [{"key": "Corefile", "path": "Corefile"}]}}],
                },
            },
        },
    }


def manifests(image: str, ports: Ports = Ports()) -> list[dict[str, Any]]:
    """Every object of the cluster DNS, CoreDNS running from ``image``."""
    return [
        *rbac_manifests(),
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta(NAME),
         "data": {"Corefile": corefile(ports)}},
        _deployment(image, ports),
        {"apiVersion": "v1", "kind": "Service", "metadata": _meta(SERVICE),
         "spec": {"selector": dict(LABELS), "clusterIP": SERVICE_IP, "ports": [
             {"name": "dns", "port": 53, "targetPort": "dns", "protocol": "UDP"},
             {"name": "dns-tcp", "port": 53, "targetPort": "dns-tcp", "protocol": "TCP"},
             {"name": "metrics", "port": ports.metrics, "targetPort": "metrics",
              "protocol": "TCP"},
         ]}},
    ]


def _kubectl(plane: ControlPlane, kubectl: Path, *args: str, input: str | None = None,
             timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(kubectl), f"--kubeconfig={plane.kubeconfig_path}", *args],
                          input=input, capture_output=True, text=True, timeout=timeout,
                          check=False)


def install(plane: ControlPlane, kubectl: Path, image: str, timeout: float = 120) -> None:
    """Apply the cluster DNS (again: an unchanged one is left as it is) and wait until
    CoreDNS is ready."""
    applied = _kubectl(plane, kubectl, "apply", "--server-side", "-f", "-",
                       input=yaml.safe_dump_all(manifests(image)))
    if applied.returncode:
        raise DnsError(f"applying the cluster DNS failed: {applied.stderr.strip()}")
    wait_ready(plane, kubectl, timeout)


def wait_ready(plane: ControlPlane, kubectl: Path, timeout: float = 120) -> None:
    """Until the Deployment's pods are all updated and ready (``kubectl rollout status``)."""
    done = _kubectl(plane, kubectl, "rollout", "status", f"deployment/{NAME}",
                    "-n", NAMESPACE, f"--timeout={timeout:.0f}s", timeout=timeout + 30)
    if done.returncode:
        pods = _kubectl(plane, kubectl, "describe", "pods", "-n", NAMESPACE,
                        "-l", ",".join(f"{k}={v}" for k, v in LABELS.items())).stdout
        logs = _kubectl(plane, kubectl, "logs", "-n", NAMESPACE, f"deployment/{NAME}",
                        "--tail=20").stdout
        raise DnsError(f"CoreDNS not ready in {timeout:.0f} s: {done.stderr.strip()}\n"
                       f"{pods}\n{logs}")
