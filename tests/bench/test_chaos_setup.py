"""What the soak sets up and injects that can be checked off the node: the fleets'
objects as the operator reads them, the broker's Service, its own Redis restarted with
its data, the stream of tasks and refused publishes, a partition's rules in a network
namespace, and which processes the sweep takes for orphaned shims."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import kombu
import pytest
import redis

from _chaos_injectors import Injectors, Partition
from _chaos_ledger import Fault, Run, Task
from _chaos_report import rows, verdict
from chaos import (
    GRACE_SECONDS,
    MEMORY_LIMIT_MI,
    Outcome,
    Producer,
    RabbitBroker,
    RedisBroker,
    Sent,
    Soak,
    broker_objects,
    fleet_objects,
    main,
    orphan_shim,
    write_ledger,
)
from devenv import containerd, services
from devenv.releases import Release
from devenv.waiting import wait_until
from metamapper_operator import model


@pytest.mark.parametrize("broker", [RedisBroker(Path("/nonexistent"), "aof"),
                                    RabbitBroker(Path("/nonexistent"))])
def test_each_fleet_is_a_valid_metamapper_with_two_bounded_pools(broker: RedisBroker
                                                                 | RabbitBroker) -> None:
    secret, body = fleet_objects(broker, "workload:1")
    fleet = model.parse(body)
    assert [p.name for p in fleet.pools] == ["fast", "slow"]
    assert all(p.termination_grace_period_seconds == GRACE_SECONDS for p in fleet.pools)
    assert all(p.resources["limits"]["memory"] == f"{MEMORY_LIMIT_MI}Mi" for p in fleet.pools)
    assert body["spec"]["broker"] == {"urlSecretRef": {"name": secret["metadata"]["name"]}}
    # by its Service's name, as users' fleets reach theirs
    url = urlsplit(secret["stringData"]["url"])
    assert (url.hostname, url.port) == (broker.name, broker.service_port)


@pytest.mark.parametrize("broker", [RedisBroker(Path("/nonexistent"), "aof"),
                                    RabbitBroker(Path("/nonexistent"))])
def test_under_an_earlier_operator_a_fleet_names_its_broker_in_full(
        broker: RedisBroker | RabbitBroker) -> None:
    """0.1.0's operator looks a short name up in its own namespace, the fleet's pods in
    theirs: the full name is the same Service for both."""
    secret, _ = fleet_objects(broker, "workload:1", qualified=True)
    url = urlsplit(secret["stringData"]["url"])
    assert (url.hostname, url.port) == (f"{broker.name}.chaos.svc.cluster.local",
                                        broker.service_port)
    assert Soak(Path("/nonexistent"), 1, (), (), "aof", 1.0, operator=Release(
        "f" * 40, Path("/nonexistent"), "operator:old")).qualified
    assert not Soak(Path("/nonexistent"), 1, (), (), "aof", 1.0).qualified


def test_the_broker_service_points_at_the_host_port_by_its_port_name() -> None:
    service, endpoints = broker_objects(RabbitBroker(Path("/nonexistent")), 15673)
    assert "selector" not in service["spec"]
    assert endpoints["metadata"]["labels"] == {"kubernetes.io/service-name": "rabbitmq"}
    assert service["spec"]["ports"][0]["name"] == endpoints["ports"][0]["name"]
    assert (service["spec"]["ports"][0]["port"], endpoints["ports"][0]["port"]) == (5672, 15673)


@pytest.fixture
def own_broker(tmp_path: Path, redis_url: str) -> Iterator[RedisBroker]:
    """The soak's own Redis (``redis_url`` only makes sure the host address is there)."""
    broker = RedisBroker(tmp_path / "broker", "aof")
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


def test_an_append_only_broker_restarted_keeps_what_it_held(own_broker: RedisBroker) -> None:
    client = redis.Redis.from_url(own_broker.host_url)
    client.rpush("fast", "a message")
    before = own_broker.pid
    own_broker.restart()
    assert own_broker.pid != before
    assert client.lrange("fast", 0, -1) == [b"a message"]
    client.close()


def test_its_own_rabbitmq_restarted_keeps_a_durable_queue_and_the_shared_one_runs_on(
        tmp_path: Path, rabbitmq: object) -> None:
    """``rabbitmq`` (the suite's fixture) makes sure the development RabbitMQ runs."""
    shared = services.SERVICES["rabbitmq"]
    shared_pid = shared.pidfile.read_text()
    broker = RabbitBroker(tmp_path / "rabbitmq")
    broker.start()
    try:
        with kombu.Connection(broker.host_url) as connection:
            queue = kombu.Queue("fast", durable=True)
            connection.default_channel.basic_qos(0, 1, False)
            kombu.Producer(connection).publish("a message", routing_key="fast",
                                               declare=[queue], delivery_mode=2)
        broker.restart()
        with kombu.Connection(broker.host_url) as connection:
            message = queue(connection.default_channel).get(no_ack=True)
            assert message is not None and message.payload == "a message"
    finally:
        broker.stop()
    assert shared.running() and shared.pidfile.read_text() == shared_pid


def test_the_stream_records_what_the_broker_took_and_counts_what_it_refused(
        own_broker: RedisBroker, redis_url: str) -> None:
    producer = Producer({"redis": own_broker}, redis_url, rate=1.0, seed=5)
    for _ in range(20):
        producer.one("redis")
    producer.burst("redis")
    ids = [s.task_id for s in producer.sent]
    assert len(set(ids)) == len(ids) == 20 + 24
    client = redis.Redis.from_url(own_broker.host_url)
    assert client.llen("fast") + client.llen("slow") == len(ids)
    client.close()
    own_broker.stop()
    assert not producer.send("redis", "any", [uuid.uuid4().hex], "fast")
    assert (producer.refused, len(producer.sent)) == (1, len(ids))
    producer.stop()


def mounts() -> list[str]:
    """This machine's mount table, as the mount namespace of this process sees it."""
    return Path("/proc/self/mountinfo").read_text().splitlines()


@pytest.fixture
def netns() -> Iterator[str]:
    """A network namespace of the test's own, held by a process in it, and named by that
    process's ``/proc`` entry, as a pod's is by its sandbox process.

    Not ``ip netns add``: the first one on a machine bind-mounts ``/run/netns`` onto itself,
    and every network namespace the node's CNI had mounted there before is then covered
    by that mount; the kubelet can no longer remove them ("failed to remove netns: device
    or resource busy"), the pods that had them never finish terminating, and a node running
    beside the test (the suite's other worker, a soak) is left with them for good. The test
    asserts that the mount table is as it found it."""
    before = mounts()
    holder = subprocess.Popen(["unshare", "--net", "sleep", "infinity"])
    try:
        path = f"/proc/{holder.pid}/ns/net"
        wait_until(lambda: os.readlink(path) != os.readlink("/proc/self/ns/net"), 10,
                   "the namespace's holder in its own network namespace")
        yield path
    finally:
        holder.kill()
        holder.wait()
    assert mounts() == before


def test_a_partition_drops_the_broker_both_ways_in_the_namespace_only(netns: str) -> None:
    cut = Partition(netns, (
        ("OUTPUT", "-p", "tcp", "-d", "10.96.0.20", "--dport", "6379", "-j", "DROP"),
        ("INPUT", "-p", "tcp", "-s", "10.96.0.20", "--sport", "6379", "-j", "DROP")))

    def rules() -> list[str]:
        listed = subprocess.run(["nsenter", f"--net={netns}", "iptables", "-S"],
                                capture_output=True, text=True, check=True).stdout
        return [line for line in listed.splitlines() if "DROP" in line]

    cut.iptables("-I", check=True)
    assert rules() == ["-A INPUT -s 10.96.0.20/32 -p tcp -m tcp --sport 6379 -j DROP",
                       "-A OUTPUT -d 10.96.0.20/32 -p tcp -m tcp --dport 6379 -j DROP"]
    host = subprocess.run(["iptables", "-S"], capture_output=True, text=True).stdout
    assert "10.96.0.20" not in host
    cut.iptables("-D", check=False)
    assert rules() == []


def test_only_shims_of_the_node_containerd_count_as_orphans() -> None:
    socket = str(containerd.SOCKET).encode()
    assert orphan_shim([b"/usr/bin/containerd-shim-runc-v2", b"-namespace", b"k8s.io",
                        b"-id", b"abc", b"-address", socket])
    assert not orphan_shim([b"/usr/bin/containerd-shim-runc-v2", b"-address",
                            b"/run/containerd/containerd.sock"])
    assert not orphan_shim([b"/usr/bin/containerd", b"--address", socket])
    assert not orphan_shim([])


def test_the_ledger_holds_every_fault_and_every_run(tmp_path: Path) -> None:
    fault = Fault(0, "pod-sigkill", "redis", frozenset({"b", "a"}), 1.0, 1.0, 3.0)
    task = Task("t", "redis", 0.5, (Run(0.6, "a", 7, None), Run(4.0, "b", 8, 5.0)))
    outcome = Outcome((fault,), (task,), tuple(rows([fault], [task])),
                      verdict([fault], [task]), (), 0, ())
    write_ledger(outcome, tmp_path / "ledger.json")
    written = json.loads((tmp_path / "ledger.json").read_text())
    assert written["faults"][0]["pods"] == ["a", "b"]
    assert written["tasks"][0]["runs"][0] == {"started": 0.6, "pod": "a", "pid": 7,
                                              "finished": None}
    assert outcome.ok


def test_the_plan_prints_the_seeded_schedule_and_starts_nothing(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--plan", "3", "--seed", "4", "--faults", "pod-sigkill,dns-outage",
                 "--brokers", "rabbitmq"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 + 3
    assert {line.split()[1] for line in lines[2:]} == {"pod-sigkill", "dns-outage"}
    assert all(line.split()[2] == "rabbitmq" for line in lines[2:])


def test_a_recovery_waits_for_the_earlier_tasks_but_those_written_off_before(
        tmp_path: Path) -> None:
    """A task lost at one fault is the ledger's finding, not every later fault's backlog."""
    run = Soak(tmp_path, 1, ("redis",), ("pod-sigkill",), "aof", 1.0)
    run.producer = Producer({}, "redis://unused", 1.0, 1)
    run.producer.sent += [Sent("a", "redis", 1.0), Sent("b", "redis", 2.0),
                          Sent("c", "redis", 5.0)]
    run.written_off = {"a"}
    assert run.earlier(3.0) == ["b"]


class LeaseAfterAnUpgrade:
    """kubectl's answers while the Lease still names a pod of the old ReplicaSet, for
    ``stale`` reads, and then the new leader."""

    def __init__(self, stale: int) -> None:
        self.stale = stale

    def kubectl(self, *args: str) -> subprocess.CompletedProcess[str]:
        if args[1] == "lease":
            holder = "op-old-1_ab" if self.stale > 0 else "op-new-2_cd"
            self.stale -= 1
            return subprocess.CompletedProcess(args, 0, holder, "")
        pods = [{"metadata": {"name": "op-old-1", "deletionTimestamp": "now"}},
                {"metadata": {"name": "op-new-1"}}, {"metadata": {"name": "op-new-2"}}]
        return subprocess.CompletedProcess(args, 0, json.dumps({"items": pods}), "")


def test_the_leader_is_the_live_pod_holding_the_lease_once_an_upgrade_handed_it_over(
) -> None:
    injectors = Injectors(LeaseAfterAnUpgrade(stale=2), "chaos", {},  # type: ignore[arg-type]
                          "redis://unused", 1, lambda *_: None)
    assert injectors.leader()["metadata"]["name"] == "op-new-2"
