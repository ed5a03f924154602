"""Redis broker restarts under a steady stream of tasks: which restart loses a task, and how.

For each restart kind (a Redis configuration and the signal that stops it), this starts
its own ``redis-server`` as the broker (``tests.helpers.OwnRedis``, on a free port),
real ``celery --app metamapper worker`` processes with Metamapper's defaults (late acks,
prefetch 1) and the workload's recording task (``devenv/workload_image``), and a Redis of
its own where each task records that it started and finished (never restarted). A
thread sends tasks with unique ids at a steady rate; the broker is restarted at random
moments drawn from a seeded generator (1 to 5 s apart), down for a random while each
time (0 to 1.5 s). Then sending
stops and the backlog drains (the cut-off tasks come back through kombu's visibility
sweep, whose timeout is seconds here, not Metamapper's hour).

The configurations:

- ``aof``: Redis's defaults plus ``appendonly yes`` and ``appendfsync everysec``, as
  production runs it;
- ``default``: Redis's own defaults (RDB snapshots by its ``save`` points, no
  append-only file).

A task counts as sent once the broker answered its publish (a publish refused during
the outage is counted apart and not waited for). Per kind it prints restarts, tasks sent,
lost (sent, never finished), ran twice (finished more than once) and interrupted
(started more often than finished: cut off and delivered again), and "dropped at
record": after how many connection losses a worker's log shows the failure of its
record of a popped message in ``unacked`` (a lower bound: the traceback is logged only
when a later error chains it), and worker exits: a worker process that
exits is started again at once, as its pod's container would be. For each lost task it
prints where it was last seen: the queue list or kombu's ``unacked`` hash (a watcher
polls both every 50 ms), when the broker stopped next, and which workers logged it as
received (into their reserved set).

The workers use the worker package's Redis transport (``metamapper.redis_transport``,
whose take of a message and its record in ``unacked`` are one step), or with
``--transport kombu`` kombu's own (``broker_transport = "redis"``), whose figures
docs/broker-restarts.md has.

Usage::

    python bench/broker_restart.py [--restarts 100] [--seed 1] [--workers 2]
                                   [--concurrency 2] [--rate 8] [--durations 0.05,0.5]
                                   [--kinds aof-term,...] [--transport worker|kombu]
                                   [--keep FOLDER]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import redis
from celery import Celery

from _common import print_table, redis_server, say
from devenv import workload
from devenv.processes import stop_groups
from devenv.services import spawn
from devenv.waiting import WaitTimeout, wait_until
from metamapper.celery import MetamapperCelery
from tests.helpers import OwnRedis

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
QUEUE = "default"
REDIS_DEFAULT_SAVE = ["--save", "3600 1 300 100 60 10000"]   # redis.conf's own
CONFIGS: dict[str, list[str]] = {
    "aof": [*REDIS_DEFAULT_SAVE, "--appendonly", "yes", "--appendfsync", "everysec"],
    "default": REDIS_DEFAULT_SAVE,
}
SIGNALS = {"term": signal.SIGTERM, "kill": signal.SIGKILL}
# The line of kombu's code in the traceback a worker logs when the broker went away
# between its BRPOP's reply and its record of the message in ``unacked``.
RECORD_FAILED = "self.qos.append(message, message.delivery_tag)"
CONNECTION_LOST = "consumer: Connection to broker lost."
# --transport: the broker_transport setting of the workers (None: the package's default).
TRANSPORTS: dict[str, str | None] = {"worker": None, "kombu": "redis"}
VISIBILITY_SECONDS = 10
# The sweep runs every second, and its lock (which a restart may leave held, AOF
# keeping it) expires with the visibility timeout instead of after 300 s.
TRANSPORT_OPTIONS = {"visibility_timeout": VISIBILITY_SECONDS, "unacked_restore_interval": 1,
                     "unacked_restore_throttle": 1, "unacked_mutex_expire": VISIBILITY_SECONDS}


@dataclass(frozen=True)
class Kind:
    config: str
    signal: str

    @property
    def name(self) -> str:
        return f"{self.config}-{self.signal}"

    @classmethod
    def parse(cls, name: str) -> Kind:
        config, _, sig = name.partition("-")
        if config not in CONFIGS or sig not in SIGNALS:
            raise argparse.ArgumentTypeError(f"unknown restart kind {name!r}")
        return cls(config, sig)


@dataclass(frozen=True)
class Sighting:
    """Where the broker watcher last saw a task's message, and when."""

    place: str
    at: float


@dataclass(frozen=True)
class Outcome:
    kind: Kind
    restarts: int
    refused: int
    tally: workload.Tally
    dropped: int      # messages a worker popped and could not record in unacked
    exits: int        # worker processes that exited (and were started again)
    lost: list[str]
    traces: list[str]


class Sender(threading.Thread):
    """Sends ``workload.TASK`` messages with unique ids at a steady rate until stopped."""

    def __init__(self, app: Celery, record_url: str, rate: float, durations: tuple[float, float],
                 rng: random.Random) -> None:
        super().__init__(daemon=True)
        self.app, self.record_url, self.rate, self.rng = app, record_url, rate, rng
        self.durations = durations
        self.sent: list[str] = []
        self.refused: list[str] = []
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.wait(1 / self.rate):
            task_id = str(uuid.uuid4())
            seconds = round(self.rng.uniform(*self.durations), 3)
            try:
                self.app.send_task(workload.TASK, args=(task_id, seconds, self.record_url),
                                   task_id=task_id, retry=False)
            except Exception:   # the broker is down: not sent
                self.refused.append(task_id)
            else:
                self.sent.append(task_id)


class Watcher(threading.Thread):
    """Polls the broker's queue list and ``unacked`` hash: where each message was last."""

    def __init__(self, broker_url: str) -> None:
        super().__init__(daemon=True)
        self.client = redis.Redis.from_url(broker_url, socket_timeout=1,
                                           socket_connect_timeout=1)
        self.seen: dict[str, Sighting] = {}
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.wait(0.05):
            try:
                pipe = self.client.pipeline(transaction=False)
                pipe.lrange(QUEUE, 0, -1)
                pipe.hvals("unacked")
                queued, unacked = pipe.execute()
            except redis.RedisError:
                continue
            now = time.time()
            for place, raws in (("queue list", queued),
                                ("unacked hash", [json.loads(v)[0] for v in unacked])):
                for raw in raws:
                    message = json.loads(raw) if isinstance(raw, bytes | str) else raw
                    self.seen[message["headers"]["id"]] = Sighting(place, now)
        self.client.close()


def worker_env(broker_url: str, transport: str | None) -> dict[str, str]:
    settings: dict[str, object] = {"imports": [workload.MODULE],
                                   "broker_transport_options": TRANSPORT_OPTIONS}
    if transport:
        settings["broker_transport"] = transport
    env = {k: v for k, v in os.environ.items() if not k.startswith("METAMAPPER_")}
    env.update(PATH=os.pathsep.join([str(BIN), env.get("PATH", "")]),
               PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "devenv/workload_image")]),
               PYTHONUNBUFFERED="1", METAMAPPER_BROKER_URL=broker_url,
               METAMAPPER_CELERY_SETTINGS=json.dumps(settings))
    return env


def exited(pid: int) -> bool:
    """Whether our child ``pid`` has exited (reaping it)."""
    try:
        return os.waitpid(pid, os.WNOHANG)[0] != 0
    except ChildProcessError:   # already reaped
        return True


class Fleet:
    """``count`` Celery workers of the real app on the broker, each started again when it
    exits, as its pod's container would be; ``exits`` counts those."""

    def __init__(self, broker_url: str, home: Path, count: int, concurrency: int,
                 transport: str | None) -> None:
        self.env, self.concurrency = worker_env(broker_url, transport), concurrency
        self.logs = [home / f"worker{n}.log" for n in range(count)]
        self.pids = [self._spawn(n) for n in range(count)]
        self.exits = 0

    def _spawn(self, n: int) -> int:
        return spawn([str(BIN / "celery"), "--app", "metamapper", "worker", "-Q", QUEUE,
                      "-c", str(self.concurrency), "--hostname", f"worker{n}@soak",
                      "-l", "info"], self.logs[n], self.env)

    def revive(self) -> None:
        for n, pid in enumerate(self.pids):
            if exited(pid):
                self.exits += 1
                self.pids[n] = self._spawn(n)

    def texts(self) -> dict[str, str]:
        return {log.name: log.read_text(errors="replace") for log in self.logs}


@contextmanager
def workers(broker_url: str, home: Path, count: int, concurrency: int,
            transport: str | None) -> Iterator[Fleet]:
    fleet = Fleet(broker_url, home, count, concurrency, transport)
    try:
        wait_until(lambda: all(f"worker{n}@soak ready." in text for n, text in enumerate(
            fleet.texts().values())), 120, what="the workers ready")
        yield fleet
    finally:
        stop_groups(fleet.pids, grace=30)


def drain(record_url: str, ids: list[str], fleet: Fleet, patience: float) -> workload.Tally:
    """The tally once every task finished, or once nothing finished for ``patience`` s."""
    last, since = -1, time.monotonic()
    while True:
        fleet.revive()
        tally = workload.tally(record_url, ids)
        if tally.lost == 0:
            return tally
        if tally.done != last:
            last, since = tally.done, time.monotonic()
        elif time.monotonic() - since > patience:
            return tally
        time.sleep(1)


def records_failed(log: str) -> int:
    """The connection losses after which the worker logged the failure of its record of a
    popped message (the same traceback may be logged more than once per loss)."""
    return sum(RECORD_FAILED in part for part in log.split(CONNECTION_LOST)[1:])


def trace(task_id: str, seen: dict[str, Sighting], logs: dict[str, str],
          stops: list[float]) -> str:
    """Where a lost task was last seen, and when the broker stopped next after that."""
    received = [name for name, text in logs.items() if f"[{task_id}] received" in text]
    worker = f"received by {', '.join(received)}" if received else "received by no worker"
    sighting = seen.get(task_id)
    if sighting is None:
        return f"{task_id}: never seen by the watcher; {worker}"
    at = datetime.fromtimestamp(sighting.at, UTC).strftime("%H:%M:%S.%f")[:-3]
    # Redis acts on SIGTERM at its next timer tick (up to 100 ms at its default hz) and
    # takes a while to stop: the watcher may still see the queue after the signal.
    stop = next((t for t in stops if t >= sighting.at - 0.5), None)
    after = f"; the broker was signalled at {stop - sighting.at:+.2f} s" if stop else ""
    return f"{task_id}: last seen in the {sighting.place} at {at} UTC{after}; {worker}"


@dataclass(frozen=True)
class Load:
    workers: int
    concurrency: int
    rate: float                       # tasks sent per second
    durations: tuple[float, float]    # a task's seconds: uniform between these
    transport: str | None             # the workers' broker_transport setting


def soak(kind: Kind, restarts: int, rng: random.Random, home: Path, record_url: str,
         load: Load) -> Outcome:
    home.mkdir()
    broker = OwnRedis(home, options=CONFIGS[kind.config])
    broker.start()
    publisher = MetamapperCelery("soak-publisher", set_as_current=False)
    publisher.config_from_object({"broker_url": broker.url,
                                  "broker_transport_options": TRANSPORT_OPTIONS})
    sender = Sender(publisher, record_url, load.rate, load.durations, rng)
    watcher = Watcher(broker.url)
    stops: list[float] = []
    try:
        with workers(broker.url, home, load.workers, load.concurrency,
                     load.transport) as fleet:
            sender.start()
            watcher.start()
            for n in range(restarts):
                time.sleep(rng.uniform(1.0, 5.0))
                stops.append(time.time())
                broker.stop(SIGNALS[kind.signal])
                time.sleep(rng.uniform(0.0, 1.5))
                broker.start()
                fleet.revive()
                if (n + 1) % 10 == 0:
                    say(f"{kind.name}: {n + 1} restarts, {len(sender.sent)} sent")
            sender.halt.set()
            sender.join()
            tally = drain(record_url, sender.sent, fleet, patience=3 * VISIBILITY_SECONDS + 30)
            watcher.halt.set()
            watcher.join()
            lost = [task_id for task_id in sender.sent
                    if not workload.records(record_url, "done", task_id)]
            texts = fleet.texts()
            traces = [trace(t, watcher.seen, texts, stops) for t in lost]
            dropped = sum(records_failed(text) for text in texts.values())
    finally:
        sender.halt.set()
        watcher.halt.set()
        publisher.close()
        broker.stop()
    return Outcome(kind, restarts, len(sender.refused), tally, dropped, fleet.exits, lost,
                   traces)


@contextmanager
def folder(keep: Path | None) -> Iterator[Path]:
    if keep is not None:
        keep.mkdir(parents=True)
        yield keep
        return
    with tempfile.TemporaryDirectory(prefix="broker-restart-") as tmp:
        yield Path(tmp)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--restarts", type=int, default=100, help="per restart kind")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--rate", type=float, default=8.0, help="tasks sent per second")
    parser.add_argument("--durations", default="0.05,0.5",
                        help="a task's shortest and longest seconds")
    parser.add_argument("--kinds", default="aof-term,aof-kill,default-term,default-kill",
                        type=lambda s: [Kind.parse(k) for k in s.split(",")])
    parser.add_argument("--transport", choices=sorted(TRANSPORTS), default="worker",
                        help="the workers' Redis transport: the worker package's (atomic "
                        "take) or kombu's own")
    parser.add_argument("--keep", type=Path, help="work in this new folder and keep it "
                        "(the workers' logs, the brokers' files)")
    args = parser.parse_args()
    shortest, longest = (float(s) for s in args.durations.split(","))
    load = Load(args.workers, args.concurrency, args.rate, (shortest, longest),
                TRANSPORTS[args.transport])
    rng = random.Random(args.seed)
    outcomes = []
    with (folder(args.keep) as tmp, redis_server(Path(tmp) / "records") as record_url):
        for kind in args.kinds:
            say(f"{kind.name}: {args.restarts} restarts ...")
            outcomes.append(soak(kind, args.restarts, rng, Path(tmp) / kind.name,
                                 record_url, load))
    print(f"broker restarts: {args.transport} transport, seed {args.seed}, "
          f"{args.workers} workers x {args.concurrency} "
          f"processes, {args.rate:g} tasks/s of {shortest:g}-{longest:g} s, visibility timeout "
          f"{VISIBILITY_SECONDS} s")
    print_table(["kind", "restarts", "sent", "refused", "lost", "dropped at record",
                 "ran twice", "interrupted", "worker exits"],
                [[o.kind.name, o.restarts, o.tally.sent, o.refused, o.tally.lost, o.dropped,
                  o.tally.duplicated, o.tally.interrupted, o.exits] for o in outcomes])
    for outcome in outcomes:
        for line in outcome.traces:
            print(f"lost ({outcome.kind.name}) {line}")


if __name__ == "__main__":
    try:
        main()
    except WaitTimeout as err:
        say(f"failed: {err}")
        sys.exit(1)
