"""The cluster DNS's objects fit together: the Service at the address the kubelet gives
pods, its ports on the container's, the probes on the Corefile's listeners, the Corefile
where CoreDNS is told to read it. (That CoreDNS answers with this Corefile and this
ClusterRole: ``test_dns_resolves.py``.)"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

from devenv import dns, network
from devenv.controlplane import ControlPlane
from devenv.node import kubelet_config

IMAGE = "localhost/metamapper-coredns:test"
DEFAULT_PORTS = dns.Ports()


def by_kind(ports: dns.Ports = DEFAULT_PORTS) -> dict[str, dict[str, Any]]:
    objects = dns.manifests(IMAGE, ports)
    found = {doc["kind"]: doc for doc in objects}
    assert len(found) == len(objects)
    return found


def test_the_service_sits_at_a_fixed_address_of_the_service_range_and_the_kubelet_names_it(
        tmp_path: Path) -> None:
    service = by_kind()["Service"]
    address = ipaddress.ip_address(service["spec"]["clusterIP"])
    assert address in ipaddress.ip_network(network.SERVICE_CIDR)
    assert str(address) != network.KUBERNETES_SERVICE_IP
    assert service["metadata"] == {"name": "kube-dns", "namespace": "kube-system",
                                   "labels": dns.LABELS}
    plane = ControlPlane(tmp_path, 1, 2, 3, 4, 5)
    config = kubelet_config(plane, port=6, healthz_port=7)
    assert config["clusterDNS"] == [str(address)]
    assert config["clusterDomain"] == "cluster.local"


def test_the_service_answers_on_port_53_from_the_containers_ports() -> None:
    ports = dns.Ports(dns=1153, metrics=9253)
    objects = by_kind(ports)
    pod = objects["Deployment"]["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    named = {p["name"]: (p["containerPort"], p["protocol"]) for p in container["ports"]}
    served = {(p["port"], p["protocol"]): named[p["targetPort"]]
              for p in objects["Service"]["spec"]["ports"]}
    assert served == {(53, "UDP"): (1153, "UDP"), (53, "TCP"): (1153, "TCP"),
                      (9253, "TCP"): (9253, "TCP")}
    assert objects["Service"]["spec"]["selector"] == pod["metadata"]["labels"]
    assert objects["Deployment"]["spec"]["selector"]["matchLabels"] == pod["metadata"]["labels"]
    assert ".:1153 {" in objects["ConfigMap"]["data"]["Corefile"]


def test_the_probes_ask_the_corefiles_health_and_ready_listeners() -> None:
    ports = dns.Ports(health=8090, ready=8191)
    objects = by_kind(ports)
    (container,) = objects["Deployment"]["spec"]["template"]["spec"]["containers"]
    assert container["readinessProbe"]["httpGet"] == {"path": "/ready", "port": 8191}
    assert container["livenessProbe"]["httpGet"] == {"path": "/health", "port": 8090}
    corefile = objects["ConfigMap"]["data"]["Corefile"]
    assert corefile == dns.corefile(ports)
    assert "    health :8090 {" in corefile.splitlines()
    assert "    ready :8191" in corefile.splitlines()


def test_coredns_reads_the_configmaps_corefile_and_runs_as_the_bound_service_account() -> None:
    objects = by_kind()
    spec = objects["Deployment"]["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    (mount,) = container["volumeMounts"]
    (volume,) = spec["volumes"]
    assert volume["name"] == mount["name"]
    assert volume["configMap"]["name"] == objects["ConfigMap"]["metadata"]["name"]
    (item,) = volume["configMap"]["items"]
    assert item["key"] in objects["ConfigMap"]["data"]
    assert container["args"] == ["-conf", f"{mount['mountPath']}/{item['path']}"]
    account = objects["ServiceAccount"]["metadata"]
    assert spec["serviceAccountName"] == account["name"]
    binding = objects["ClusterRoleBinding"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account["name"],
                                    "namespace": account["namespace"]}]
    assert binding["roleRef"]["name"] == objects["ClusterRole"]["metadata"]["name"]
    # CoreDNS resolves with the host's resolvers, never through itself.
    assert spec["dnsPolicy"] == "Default"


def test_the_corefile_of_a_host_process_names_its_kubeconfig_and_address() -> None:
    lines = dns.corefile(dns.Ports(dns=20053, health=20080, ready=20181, metrics=20153),
                         kubeconfig=Path("/tmp/k"), bind="127.0.0.1").splitlines()
    assert lines[:2] == [".:20053 {", "    bind 127.0.0.1"]
    assert "        kubeconfig /tmp/k" in lines
    assert "    ready 127.0.0.1:20181" in lines
    assert "    prometheus 127.0.0.1:20153" in lines
    assert not any("kubeconfig" in line for line in dns.corefile().splitlines())
