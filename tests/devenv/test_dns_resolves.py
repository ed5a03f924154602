"""The cluster DNS answers for the control plane's Services: the CoreDNS that
``tools/build.sh`` builds, with the Corefile of ``devenv.dns`` and only the rights its
ClusterRole grants, run as a host process against the suite's control plane (no node:
the same binary and configuration the node's pod runs, reached on loopback)."""

from __future__ import annotations

import base64
import contextlib
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from dns.rdatatype import RdataType
from dns.resolver import NXDOMAIN, Resolver

from devenv import dns
from devenv.controlplane import coredns_binary, free_port
from devenv.waiting import WaitTimeout, wait_until
from tests.conftest import Cluster

LOOPBACK = "127.0.0.1"


@pytest.fixture
def coredns_account(cluster: Cluster) -> Iterator[str]:
    """The ServiceAccount and RBAC of the cluster DNS applied; yields a token of that
    account (removed afterwards: the suite's control plane has no cluster DNS)."""
    manifest = yaml.safe_dump_all(dns.rbac_manifests())
    cluster.kubectl("apply", "--server-side", "-f", "-", input=manifest)
    try:
        yield cluster.kubectl("create", "token", dns.NAME, "-n", dns.NAMESPACE,
                              "--duration=10m").stdout.strip()
    finally:
        cluster.kubectl("delete", "-f", "-", "--wait=false", input=manifest)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@pytest.fixture
def resolver(cluster: Cluster, coredns_account: str, tmp_path: Path) -> Iterator[Resolver]:
    """CoreDNS running on loopback as the cluster DNS's ServiceAccount, ready (its
    kubernetes plugin has listed the API); yields a resolver that asks it alone."""
    ca = base64.b64encode((cluster.plane.pki / "ca.crt").read_bytes()).decode()
    kubeconfig = tmp_path / "coredns.kubeconfig"
    kubeconfig.touch(mode=0o600)
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "dns",
        "clusters": [{"name": "local", "cluster": {
            "server": cluster.plane.server, "certificate-authority-data": ca}}],
        "users": [{"name": "coredns", "user": {"token": coredns_account}}],
        "contexts": [{"name": "dns", "context": {"cluster": "local", "user": "coredns"}}],
    }))
    ports = dns.Ports(dns=free_port(), health=free_port(), ready=free_port(),
                      metrics=free_port())
    corefile = tmp_path / "Corefile"
    corefile.write_text(dns.corefile(ports, kubeconfig=kubeconfig, bind=LOOPBACK))
    log = tmp_path / "coredns.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([str(coredns_binary()), "-conf", str(corefile)], cwd=tmp_path,
                                stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        try:
            wait_until(lambda: _answers(f"http://{LOOPBACK}:{ports.ready}/ready"), 30,
                       "CoreDNS ready", abort=lambda: proc.poll() is not None)
        except WaitTimeout:
            pytest.fail(f"CoreDNS not ready; its log:\n{log.read_text(errors='replace')}")
        found = Resolver(configure=False)
        found.nameservers = [LOOPBACK]
        found.port = ports.dns
        found.lifetime = 5
        yield found
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _addresses(resolver: Resolver, name: str) -> set[str]:
    with contextlib.suppress(NXDOMAIN):
        return {record.to_text() for record in resolver.resolve(name, RdataType.A)}
    return set()


def test_a_service_made_after_coredns_started_resolves_by_its_name(
        cluster: Cluster, namespace: str, resolver: Resolver) -> None:
    cluster.kubectl("create", "service", "clusterip", "redis", "--tcp=6379:6379",
                    "-n", namespace)
    address = cluster.kubectl("get", "service", "redis", "-n", namespace, "-o",
                              "jsonpath={.spec.clusterIP}").stdout
    name = f"redis.{namespace}.svc.{dns.CLUSTER_DOMAIN}"
    wait_until(lambda: _addresses(resolver, name) == {address}, 30, f"{name} -> {address}")
    # The cluster's zone is CoreDNS's own: a name not there is denied, not forwarded.
    with pytest.raises(NXDOMAIN):
        resolver.resolve(f"rabbitmq.{namespace}.svc.{dns.CLUSTER_DOMAIN}", RdataType.A)


def test_a_headless_service_resolves_to_its_endpoint_slices_addresses(
        cluster: Cluster, namespace: str, resolver: Resolver) -> None:
    pod_ip = "10.213.0.77"
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all([
        {"apiVersion": "v1", "kind": "Service",
         "metadata": {"name": "brokers", "namespace": namespace},
         "spec": {"clusterIP": "None", "ports": [{"name": "amqp", "port": 5672}]}},
        {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
         "metadata": {"name": "brokers-1", "namespace": namespace,
                      "labels": {"kubernetes.io/service-name": "brokers"}},
         "addressType": "IPv4", "ports": [{"name": "amqp", "port": 5672}],
         "endpoints": [{"addresses": [pod_ip], "conditions": {"ready": True}}]},
    ]))
    name = f"brokers.{namespace}.svc.{dns.CLUSTER_DOMAIN}"
    wait_until(lambda: _addresses(resolver, name) == {pod_ip}, 30, f"{name} -> {pod_ip}")
