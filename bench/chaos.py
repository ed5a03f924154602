"""Faults at random against one invariant: no task lost, whatever fails.

The stack as ``make demo`` runs it (``devenv.stack``: a control plane, a real node with the
cluster DNS, the operator installed from its chart in pods, two of them so that one stands
by) runs two fleets in the namespace ``chaos``: ``fleet-redis`` on a Redis of this run's
own and ``fleet-rabbitmq`` on a RabbitMQ node of this run's own (durable queues, Celery's
default). Each reaches its broker by a Service name
(``redis://redis:6379/0``, ``amqp://...@rabbitmq:5672//``), as users' fleets do: a
Service without a selector whose EndpointSlice points at the broker on this machine. (A
soak that starts under an earlier operator names the Services in full, see
:func:`service_host`.) Each
fleet has two pools: ``fast`` (short tasks, at least one pod) and ``slow`` (tasks from a
few seconds to longer than the grace period, from zero pods).

A thread sends a steady stream of tasks with unique ids (the workload's recording tasks,
``devenv/workload_image``): durations from 0.1 s to 1.5 times the grace period, one in ten
retried once by the task itself, one in ten with a countdown; a burst of short tasks
before some faults makes the pools grow, and they shrink after. One fault at a time,
from the seeded schedule of ``_chaos_faults`` (the catalogue is there), each a random pause
after the fleet recovered from the one before; the injectors are in ``_chaos_injectors``.

Per task id the ledger (``_chaos_ledger``) has its runs: started, finished, on which pod;
per fault, the time until the fleet was whole again (``_chaos_report``: every pool within
its bounds and ready, no pod draining, every task sent before the fault finished but those
an earlier fault's wait gave up on, written off then and not waited for again). When
time is up, sending stops, the backlog drains, and a table per fault kind is printed:
faults, not recovered, tasks lost, ran twice (with how many unexplained: a run again is
explained only by a fault that could cut the run before it off), interrupted, recovery
p50/p95/max. (A publish is retried twice across a broker's outage; one whose first try
reached the broker before the connection dropped is queued twice, and its second run
shows as unexplained: the ledger's JSON tells such a pair by its two runs' start times,
far apart and neither cut off.) The exit status is 0 when nothing was lost, every repeat
was explained, every fault recovered and nothing was left behind.

Everything it started is stopped on the way out, also when it fails or is interrupted
(Ctrl-C, SIGTERM): partitions lifted, paused processes continued, the DNS scaled back, the
node and control plane stopped, the brokers of its own stopped, and containerd shims left
without a container swept; what is still there then is printed and fails the run.

Usage::

    python bench/chaos.py [--minutes 30] [--seed 1] [--brokers redis,rabbitmq]
                          [--faults pod-sigkill,broker-restart,...] [--redis aof|default]
                          [--rate 1.0] [--root DIR]

``--redis aof`` runs Redis as production does (append-only file, fsync every second);
``--redis default`` with Redis's own defaults (RDB snapshots only): each broker restart
then restarts it with those settings. Both brokers are the run's own, so their restarts
never touch the development services other runs on the machine use.

:func:`soak` is the same run for a test: a fixed seed, a number of faults (one round of
the schedule, ``_chaos_faults.round_length``, holds every kind once and restarts every
broker), its outcome returned instead of printed; ``tests/node/test_soak.py`` runs
one round on a stack it first upgrades from the previous release (``_chaos_upgrade``).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from celery import Celery

from _chaos_faults import CATALOGUE, PlannedFault, Timing, schedule
from _chaos_injectors import Injectors, fleet_name, helm, stop_child
from _chaos_ledger import Fault, Task, pair_runs
from _chaos_report import (
    HEADERS,
    PoolState,
    Row,
    Snapshot,
    Verdict,
    recovered_at,
    rows,
    shortfalls,
    verdict,
)
from _common import print_table, say
from devenv import containerd, dns, redis_claims, services
from devenv.controlplane import REPO, free_port
from devenv.errors import DevenvError
from devenv.node import leftovers as node_leftovers
from devenv.releases import Release
from devenv.stack import Stack
from devenv.waiting import WaitTimeout, wait_until
from devenv.workload import HOG, MODULE, RETRIED, TASK, records, tally
from metamapper_operator import crd

NAMESPACE = "chaos"
LEDGER = REPO / "build" / "chaos-ledger.json"
ALL_KINDS = tuple(kind.name for kind in CATALOGUE)
GRACE_SECONDS = 15          # the pools' terminationGracePeriodSeconds
VISIBILITY_SECONDS = 40     # Redis's visibility timeout (Metamapper's is an hour)
LEASE_SECONDS = 15.0        # the chart's leaderElection.leaseDurationSeconds
MEMORY_LIMIT_MI = 256       # each worker pod's memory limit; the OOM task holds more
HOG_MEGABYTES = 400
RECORD_DBS = range(200, 256)  # where the tasks' records go: a database of the development
                              # Redis claimed as the suite's fixture claims them
CLAIM_SECONDS = 12 * 3600
RECOVERY_LIMIT = 300.0      # seconds after a fault's end before it counts as not recovered
POOLS_LIMIT = 300.0         # seconds for every pool at its minimum once the fleets are in
DRAIN_LIMIT = 600.0         # seconds for the last backlog once sending stops
BURST = 24                  # short tasks sent before a fault marked for a burst
SHORT_SECONDS = 3.0         # tasks up to this long go to the fast pool
# Short windows so that pools shrink between faults (the defaults are 60 s and 300 s).
AUTOSCALING = {"scaleDownStabilizationSeconds": 15, "scaleToZeroCooldownSeconds": 10}
POOLS = (
    {"name": "fast", "queues": ["fast"], "concurrency": 2, "minReplicas": 1, "maxReplicas": 4},
    {"name": "slow", "queues": ["slow"], "concurrency": 2, "minReplicas": 0, "maxReplicas": 3},
)


# --- the brokers -------------------------------------------------------------------


@dataclass
class RedisBroker:
    """A ``redis-server`` of this run's own, restarted with the same settings."""

    home: Path
    persistence: str                         # "aof" (as production) or "default"
    name: str = "redis"
    service_port: int = 6379
    port: int = field(default_factory=free_port)
    pid: int = 0

    @property
    def host_url(self) -> str:
        return f"redis://{services.HOST}:{self.port}/0"

    def pod_url(self, host: str) -> str:
        return f"redis://{host}:{self.service_port}/0"

    def argv(self) -> list[str]:
        binary = services.require("redis-server", "redis-server")
        durability = (["--appendonly", "yes", "--appendfsync", "everysec"]
                      if self.persistence == "aof" else [])
        return [binary, "--port", str(self.port), "--bind", "127.0.0.1", services.HOST,
                "--protected-mode", "no", "--dir", str(self.home), *durability]

    def start(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        self.pid = services.spawn(self.argv(), self.home / "log")
        services.wait_for(lambda: services.port_open(self.port), "redis-server", 30,
                          self.home / "log", self.pid)

    def stop(self) -> None:
        if self.pid:
            stop_child(self.pid, grace=30)
            self.pid = 0

    def restart(self) -> None:
        self.stop()
        self.start()


@dataclass
class RabbitBroker:
    """A RabbitMQ node of this run's own (its default virtual host, durable queues as
    Celery declares them), restarted with its data: the development RabbitMQ other runs
    on the machine use is never restarted."""

    home: Path
    name: str = "rabbitmq"
    service_port: int = 5672
    port: int = field(default_factory=free_port)
    management_port: int = field(default_factory=free_port)
    dist_port: int = field(default_factory=free_port)
    pid: int = 0

    def _url(self, host: str, port: int) -> str:
        return (f"amqp://{services.RABBITMQ_USER}:{services.RABBITMQ_PASSWORD}@"
                f"{host}:{port}//")

    @property
    def host_url(self) -> str:
        return self._url(services.HOST, self.port)

    def pod_url(self, host: str) -> str:
        return self._url(host, self.service_port)

    def start(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        self.pid = services.start_rabbitmq(self.home, self.port, self.management_port,
                                           self.dist_port, node=f"chaos-{self.port}")
        services.wait_for(lambda: services.port_open(self.port), "rabbitmq-server", 120,
                          self.home / "log", self.pid)

    def stop(self) -> None:
        if self.pid:
            stop_child(self.pid, grace=60)
            self.pid = 0

    def restart(self) -> None:
        self.stop()
        self.start()


Broker = RedisBroker | RabbitBroker


def service_host(broker: Broker, qualified: bool) -> str:
    """The broker's Service as its fleet's URL names it: its short name, as users write it,
    or (``qualified``) its full name, which resolves the same from every namespace. The
    operator of 0.1.0 looks a short name up in its own namespace, not in the fleet's:
    under it, fleets named by short names are BrokerUnreachable and neither scale nor
    drain."""
    if not qualified:
        return broker.name
    return f"{broker.name}.{NAMESPACE}.svc.{dns.CLUSTER_DOMAIN}"


def broker_objects(broker: Broker, host_port: int) -> list[dict[str, Any]]:
    """The broker's Service in the cluster: no selector, one EndpointSlice pointing at the
    broker on this machine."""
    port = {"name": "broker", "port": broker.service_port, "protocol": "TCP"}
    return [
        {"apiVersion": "v1", "kind": "Service",
         "metadata": {"name": broker.name, "namespace": NAMESPACE},
         "spec": {"ports": [{**port, "targetPort": host_port}]}},
        {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
         "metadata": {"name": f"{broker.name}-host", "namespace": NAMESPACE,
                      "labels": {"kubernetes.io/service-name": broker.name}},
         "addressType": "IPv4", "ports": [{**port, "port": host_port}],
         "endpoints": [{"addresses": [services.HOST], "conditions": {"ready": True}}]},
    ]


def fleet_objects(broker: Broker, image: str, qualified: bool = False
                  ) -> list[dict[str, Any]]:
    """The broker URL's Secret (by the Service's name, see :func:`service_host`) and the
    fleet's Metamapper."""
    name = fleet_name(broker.name)
    pools = [{**pool, "terminationGracePeriodSeconds": GRACE_SECONDS,
              "autoscaling": {**AUTOSCALING, "targetBacklogPerReplica": pool["concurrency"]},
              "resources": {"requests": {"cpu": "50m", "memory": "128Mi"},
                            "limits": {"memory": f"{MEMORY_LIMIT_MI}Mi"}}}
             for pool in POOLS]
    settings: dict[str, Any] = {"imports": [MODULE]}
    if isinstance(broker, RedisBroker):
        settings["broker_transport_options"] = {"visibility_timeout": VISIBILITY_SECONDS}
    return [
        {"apiVersion": "v1", "kind": "Secret",
         "metadata": {"name": f"{name}-broker", "namespace": NAMESPACE},
         "stringData": {"url": broker.pod_url(service_host(broker, qualified))}},
        {"apiVersion": crd.API_VERSION, "kind": crd.KIND,
         "metadata": {"name": name, "namespace": NAMESPACE},
         "spec": {"image": image, "broker": {"urlSecretRef": {"name": f"{name}-broker"}},
                  "scheduler": {"enabled": False}, "celery": {"settings": settings},
                  "pools": pools}},
    ]


# --- the stream of tasks -----------------------------------------------------------


@dataclass(frozen=True)
class Sent:
    task_id: str
    broker: str
    at: float


class Producer:
    """Sends the steady stream (``rate`` tasks a second, spread over the brokers) from a
    thread, and bursts on demand; a publish the broker refused is counted apart."""

    def __init__(self, brokers: dict[str, Broker], record_url: str, rate: float,
                 seed: int) -> None:
        self.apps = {name: Celery(f"chaos-{name}", broker=b.host_url, set_as_current=False)
                     for name, b in brokers.items()}
        self.record_url, self.rate = record_url, rate
        self.rng = random.Random(seed)
        self.sent: list[Sent] = []
        self.refused = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        """Start the stream; it goes on if it is running already (a soak after an upgrade
        keeps the stream the upgrade went through)."""
        if self._thread.ident is None:
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        for app in self.apps.values():
            app.close()

    def send(self, broker: str, name: str, args: list[Any], queue: str,
             countdown: float | None = None) -> bool:
        """Publish one task; False when the broker refused it (then it is not waited for)."""
        with self._lock:
            try:
                self.apps[broker].send_task(name, args=args, queue=queue, countdown=countdown,
                                            retry=True, retry_policy={"max_retries": 2,
                                                                      "interval_start": 0.5})
            except Exception:   # any transport's connection error: refused, counted
                self.refused += 1
                return False
            if name != HOG:
                self.sent.append(Sent(args[0], broker, time.time()))
            return True

    def one(self, broker: str, seconds: float | None = None) -> None:
        """A task of the stream (or of ``seconds``): its kind drawn from the seed."""
        rng = self.rng
        if seconds is None:
            draw = rng.random()
            seconds = round(rng.uniform(0.1, SHORT_SECONDS) if draw < 0.7 else
                            rng.uniform(SHORT_SECONDS, GRACE_SECONDS) if draw < 0.9 else
                            rng.uniform(GRACE_SECONDS, 1.5 * GRACE_SECONDS), 1)
        variant = rng.random()
        name = RETRIED if variant < 0.1 else TASK
        countdown = round(rng.uniform(1, 10), 1) if 0.1 <= variant < 0.2 else None
        queue = "fast" if seconds <= SHORT_SECONDS else "slow"
        self.send(broker, name, [uuid.uuid4().hex, seconds, self.record_url], queue, countdown)

    def burst(self, broker: str) -> None:
        for _ in range(BURST):
            self.one(broker, seconds=round(self.rng.uniform(1.0, SHORT_SECONDS), 1))

    def _run(self) -> None:
        brokers = sorted(self.apps)
        turn = 0
        while not self._stop.wait(1 / self.rate):
            self.one(brokers[turn % len(brokers)])
            turn += 1


# --- the soak ----------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    faults: tuple[Fault, ...]
    tasks: tuple[Task, ...]
    rows: tuple[Row, ...]
    verdict: Verdict
    failed_injections: tuple[str, ...]
    refused: int
    left_behind: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return self.verdict.ok and not self.failed_injections and not self.left_behind


class Soak:
    """One soak's stack, brokers, stream and faults. ``operator``: an earlier release to
    start under instead of this checkout's (the fleets then name their brokers' Services
    in full, see :func:`service_host`)."""

    def __init__(self, root: Path, seed: int, brokers: Sequence[str], kinds: Sequence[str],
                 redis_persistence: str, rate: float,
                 pauses: tuple[float, float] = (5.0, 20.0),
                 operator: Release | None = None) -> None:
        self.root, self.seed, self.kinds, self.rate = root, seed, list(kinds), rate
        self.pauses, self.qualified = pauses, operator is not None
        self.stack = Stack(root, NAMESPACE, services=("redis",), release=operator)
        self.record_url = ""
        self.record_claim: redis_claims.Claim | None = None
        known: dict[str, Broker] = {"redis": RedisBroker(root / "redis", redis_persistence),
                                    "rabbitmq": RabbitBroker(root / "rabbitmq")}
        self.brokers = {name: known[name] for name in brokers}
        self.started: list[Broker] = []
        self.producer: Producer | None = None
        self.injectors: Injectors | None = None
        self.faults: list[Fault] = []
        self.failed: list[str] = []
        self.written_off: set[str] = set()
        self.left_behind: tuple[str, ...] | None = None   # once stopped

    # set-up

    def start(self) -> None:
        say(f"starting the stack (state in {self.root}) ...")
        self.stack.start(say)
        self.record_claim = claim_record_db()
        self.record_url = self.record_claim.url
        # a standby operator, so that a paused or killed leader is replaced
        helm(self.stack, "upgrade", "--reuse-values", "--set", "replicas=2",
             chart=self.stack.chart)
        for broker in self.brokers.values():
            broker.start()
            self.started.append(broker)
        assert self.stack.images is not None
        objects = []
        for broker in self.brokers.values():
            objects += broker_objects(broker, broker.port)
            objects += fleet_objects(broker, self.stack.images.workload, self.qualified)
        self.stack.kubectl("apply", "--server-side", "-f", "-", input=json.dumps(
            {"apiVersion": "v1", "kind": "List", "items": objects}))
        say("waiting for every pool at its minimum ...")
        wait_until(lambda: not shortfalls(self.snapshot(time.time())), POOLS_LIMIT,
                   "every pool at its minimum", interval=2)
        self.producer = Producer(self.brokers, self.record_url, self.rate, self.seed)
        self.injectors = Injectors(
            self.stack, NAMESPACE, dict(self.brokers), self.record_url, HOG_MEGABYTES,
            lambda broker, task_id, mb: self._send_hog(broker, task_id, mb))

    def _send_hog(self, broker: str, task_id: str, megabytes: int) -> None:
        assert self.producer is not None
        self.producer.send(broker, HOG, [task_id, megabytes, self.record_url], "fast")

    # measuring

    def snapshot(self, since: float) -> Snapshot:
        """The pools now, and how many tasks sent before ``since`` are unfinished."""
        pools = []
        for name in self.brokers:
            body = json.loads(self.stack.kubectl(
                "get", crd.PLURAL, "-n", NAMESPACE, fleet_name(name), "-o", "json").stdout)
            status = {p["name"]: p for p in (body.get("status") or {}).get("pools") or []}
            for pool in body["spec"]["pools"]:
                seen = status.get(pool["name"], {})
                pools.append(PoolState(name, pool["name"], pool["minReplicas"],
                                       pool["maxReplicas"], int(seen.get("replicas", -1)),
                                       int(seen.get("readyReplicas", 0)),
                                       tuple(seen.get("draining") or ())))
        earlier = self.earlier(since)
        return Snapshot(time.time(), tuple(pools),
                        tally(self.record_url, earlier).lost if earlier else 0)

    def earlier(self, since: float) -> list[str]:
        """The tasks sent before ``since`` that a recovery waits for: all but those
        written off when an earlier fault's wait gave up (lost or not, the ledger tells
        at the end; they are not this fault's backlog)."""
        return [s.task_id for s in (self.producer.sent if self.producer else [])
                if s.at < since and s.task_id not in self.written_off]

    def wait_whole(self, began: float, ended: float) -> float | None:
        snapshots: list[Snapshot] = []
        deadline = time.monotonic() + RECOVERY_LIMIT
        while time.monotonic() < deadline:
            self.stack.check()
            with contextlib.suppress(DevenvError):   # the apiserver not answering yet
                snapshots.append(self.snapshot(began))
            if (at := recovered_at(ended, snapshots)) is not None:
                return at
            time.sleep(1)
        if snapshots:
            say("    not whole: " + "; ".join(shortfalls(snapshots[-1])))
        unfinished = {task_id for task_id in self.earlier(began)
                      if not records(self.record_url, "done", task_id)}
        if unfinished:
            say(f"    written off (not waited for again): {', '.join(sorted(unfinished))}")
        self.written_off |= unfinished
        return None

    # the run

    def run(self, minutes: float | None, count: int | None) -> Outcome:
        """Faults until ``minutes`` are up or ``count`` faults were injected."""
        assert self.producer is not None and self.injectors is not None
        timing = Timing(VISIBILITY_SECONDS, LEASE_SECONDS, self.pauses)
        planned = schedule(self.seed, 10_000 if count is None else count, self.kinds,
                           list(self.brokers), timing)
        self.producer.start()
        end = None if minutes is None else time.monotonic() + minutes * 60
        for fault in planned:
            if end is not None and time.monotonic() + fault.pause > end:
                break
            time.sleep(fault.pause)
            self.stack.check()
            if fault.burst:
                self.producer.burst(fault.broker)
            began = time.time()
            try:
                pods = self.injectors.inject(fault)
            except Exception as err:   # any injector's failure: recorded, fails the run,
                # and the soak goes on with the next fault rather than ending early
                self.failed.append(f"#{fault.index} {fault.kind}: {err}")
                say(f"  #{fault.index} {fault.kind} on {fault.broker}: not injected: {err}")
                continue
            ended = time.time()
            recovered = self.wait_whole(began, ended)
            self.faults.append(Fault(fault.index, fault.kind, fault.broker, pods, began, ended,
                                     recovered))
            say(f"  #{fault.index} {fault.kind} on {fault.broker}"
                f"{' (' + ', '.join(sorted(pods)) + ')' if pods else ''}: "
                + (f"whole after {recovered - began:.1f} s" if recovered is not None
                   else f"not whole within {RECOVERY_LIMIT:g} s"))
        return self.finish()

    def finish(self) -> Outcome:
        """Stop sending, wait for the backlog, and read the ledger."""
        assert self.producer is not None
        self.producer.stop()
        ids = [s.task_id for s in self.producer.sent]
        say(f"sending stopped ({len(ids)} tasks sent, {self.producer.refused} refused); "
            "waiting for the backlog ...")
        self.wait_done(ids)
        tasks = tuple(self.ledger())
        return Outcome(tuple(self.faults), tasks, tuple(rows(self.faults, tasks)),
                       verdict(self.faults, tasks), tuple(self.failed),
                       self.producer.refused, ())

    def wait_done(self, ids: list[str]) -> None:
        """Until every task of ``ids`` has finished, at most ``DRAIN_LIMIT`` seconds (the
        ledger tells what did not)."""
        with contextlib.suppress(WaitTimeout):
            wait_until(lambda: tally(self.record_url, ids).lost == 0, DRAIN_LIMIT,
                       "the backlog drained", interval=5)

    def ledger(self, sent_before: float | None = None) -> Iterator[Task]:
        """Every task sent (before ``sent_before``) with its runs."""
        assert self.producer is not None
        for sent in self.producer.sent:
            if sent_before is not None and sent.at >= sent_before:
                continue
            yield Task(sent.task_id, sent.broker, sent.at, pair_runs(
                records(self.record_url, "started", sent.task_id),
                records(self.record_url, "done", sent.task_id)))

    def stop(self) -> tuple[str, ...]:
        """Stop everything this run started; what is still there afterwards. Once: a
        second call answers what the first found."""
        if self.left_behind is not None:
            return self.left_behind
        if self.producer is not None:
            self.producer.stop()
        if self.injectors is not None:
            self.injectors.undo()
        self.stack.stop()
        for broker in self.started:
            broker.stop()
        sweep_shims()
        if self.record_claim:
            redis_claims.release(self.record_claim)
        self.left_behind = tuple(node_leftovers())
        return self.left_behind


def claim_record_db() -> redis_claims.Claim:
    """A database of the development Redis of this run's own (claimed as the suite's
    ``redis_url`` fixture claims its: ``devenv.redis_claims``), emptied."""
    held = redis_claims.claim(RECORD_DBS, seconds=CLAIM_SECONDS)
    if held is None:
        raise DevenvError("every Redis database for the records is claimed")
    return held


def orphan_shim(argv: Sequence[bytes]) -> bool:
    """Whether a process's command line is a shim of the node's containerd."""
    return bool(argv) and argv[0].decode(errors="replace").rpartition("/")[2].startswith(
        "containerd-shim") and str(containerd.SOCKET).encode() in argv


def sweep_shims() -> None:
    """SIGKILL the shims of the node's containerd still running once it is stopped: a shim
    whose container is gone (a set-up that failed half-way once left one); containerd and
    the node's daemons are gone by then, so nothing else can own them."""
    if containerd.running():
        return
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError):
                if orphan_shim((proc / "cmdline").read_bytes().split(b"\0")):
                    os.kill(int(proc.name), signal.SIGKILL)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def soak(seed: int, minutes: float | None = None, faults: int | None = None,
         brokers: Sequence[str] = ("redis", "rabbitmq"),
         kinds: Sequence[str] = ALL_KINDS,
         redis_persistence: str = "aof", rate: float = 1.0,
         pauses: tuple[float, float] = (5.0, 20.0), root: Path | None = None) -> Outcome:
    """One soak, for a test: ``faults`` faults (``round_length``: every kind once) or
    ``minutes`` of them, from ``seed``, each ``pauses`` (a range, seconds) after the fleet
    recovered from the one before; everything stopped before it returns, what was left
    behind in the outcome."""
    home = root or Path(tempfile.mkdtemp(prefix="bench-chaos-"))
    run = Soak(home, seed, brokers, kinds, redis_persistence, rate, pauses)
    try:
        run.start()
        outcome = run.run(minutes, faults)
    finally:
        with signals_held():
            left = run.stop()
        if root is None:
            shutil.rmtree(home, ignore_errors=True)
    return dataclasses.replace(outcome, left_behind=left)


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """Ctrl-C and SIGTERM ignored meanwhile: the clean-up is not cut short."""
    before = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT,
                                                                 signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


def report(outcome: Outcome) -> None:
    print(f"\n{len(outcome.tasks)} tasks, {outcome.refused} publishes refused by a broker "
          f"that was down, {len(outcome.faults)} faults")
    print_table(HEADERS, [row.cells() for row in outcome.rows])
    found = outcome.verdict
    for label, ids in (("lost", found.lost), ("ran again, unexplained", found.unexplained)):
        for task_id in ids[:20]:
            task = next(t for t in outcome.tasks if t.task_id == task_id)
            print(f"{label}: {task_id} on {task.broker}, sent {task.sent:.1f}, runs "
                  + (", ".join(f"{r.pod} {r.started:.1f}-"
                               f"{'' if r.finished is None else f'{r.finished:.1f}'}"
                               for r in task.runs) or "none"))
    for failure in outcome.failed_injections:
        print(f"not injected: {failure}")
    for item in outcome.left_behind:
        print(f"left behind: {item}")
    print("OK: nothing lost, every repeat explained, every fault recovered" if outcome.ok
          else "NOT OK")


def print_plan(planned: Sequence[PlannedFault]) -> None:
    print_table(["#", "fault", "fleet", "hold s", "after s", "burst", "pod pick"],
                [[f.index, f.kind, f.broker, f"{f.hold:g}", f"{f.pause:g}",
                  "yes" if f.burst else "", f"{f.pick:.2f}"] for f in planned])


def write_ledger(outcome: Outcome, path: Path) -> None:
    """Every fault and every task's runs, as JSON: the evidence behind the table."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({
        "faults": [{**dataclasses.asdict(f), "pods": sorted(f.pods)} for f in outcome.faults],
        "tasks": [dataclasses.asdict(t) for t in outcome.tasks],
        "failed_injections": list(outcome.failed_injections),
    }, indent=1))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0, help="minutes of faults")
    parser.add_argument("--seed", type=int, default=1, help="the schedule's and stream's seed")
    parser.add_argument("--brokers", default="redis,rabbitmq",
                        help="the fleets, by broker (comma-separated)")
    parser.add_argument("--faults", default=",".join(ALL_KINDS),
                        help="the fault kinds (comma-separated; default: all)")
    parser.add_argument("--redis", choices=["aof", "default"], default="aof",
                        help="the Redis broker's persistence (default: aof, as production)")
    parser.add_argument("--rate", type=float, default=1.0, help="tasks sent per second")
    parser.add_argument("--plan", type=int, metavar="N", default=0,
                        help="print the first N faults of the schedule and start nothing")
    parser.add_argument("--ledger", type=Path, default=LEDGER,
                        help=f"where every fault and task's runs go as JSON (default {LEDGER})")
    parser.add_argument("--root", type=Path, default=None,
                        help="keep the run's state (every daemon's log) in this folder "
                             "instead of a temporary one removed on the way out")
    args = parser.parse_args(argv)
    if args.plan:
        print_plan(schedule(args.seed, args.plan, args.faults.split(","),
                            args.brokers.split(","),
                            Timing(VISIBILITY_SECONDS, LEASE_SECONDS)))
        return 0
    signal.signal(signal.SIGTERM, _interrupt)   # a TERM from outside stops it like Ctrl-C
    try:
        outcome = soak(args.seed, minutes=args.minutes, brokers=args.brokers.split(","),
                       kinds=args.faults.split(","), redis_persistence=args.redis,
                       rate=args.rate, root=args.root)
    except KeyboardInterrupt:
        say("interrupted: everything it started is stopped")
        return 130
    report(outcome)
    write_ledger(outcome, args.ledger)
    print(f"the ledger: {args.ledger}")
    return 0 if outcome.ok else 1


if __name__ == "__main__":
    sys.exit(main())
