"""Small helpers shared by the test modules."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from devenv import services
from devenv.controlplane import free_port
from devenv.waiting import WaitTimeout, wait_until

BENCH = Path(__file__).resolve().parents[1] / "bench"


def bench_importable() -> None:
    """The benchmarks' modules import each other as scripts do (``from _common import
    ...``): their folder goes on the path, as when ``python bench/<name>.py`` runs."""
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))


class OwnRedis:
    """A Redis server of one test's own, which the test may stop and start again.

    ``persistent`` keeps every write in an append-only file in ``home``, synced on each
    write, so a restarted server has exactly the data the stopped one had. It listens
    on the host address too, where pods reach it. ``options`` (redis-server's
    ``--name value`` arguments) come last, so they override those.
    """

    def __init__(self, home: Path, persistent: bool = False,
                 options: Sequence[str] = ()) -> None:
        self.port = free_port()
        self.url = f"redis://{services.HOST}:{self.port}/0"
        durability = ["--appendonly", "yes", "--appendfsync", "always"] if persistent else []
        self.argv = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                     services.HOST, "--protected-mode", "no", "--save", "", "--dir", str(home),
                     *durability, *options]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.DEVNULL)
        wait_until(lambda: services.port_open(self.port), what="redis")

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> None:
        if self.proc is not None:
            self.proc.send_signal(sig)
            self.proc.wait()
            self.proc = None


@contextmanager
def running_redis(home: Path, persistent: bool = False, options: Sequence[str] = ()
                  ) -> Iterator[OwnRedis]:
    """An :class:`OwnRedis` in ``home`` (made if missing), started, and stopped on exit."""
    home.mkdir(parents=True, exist_ok=True)
    server = OwnRedis(home, persistent=persistent, options=options)
    server.start()
    try:
        yield server
    finally:
        server.stop()


# Production's persistence for a broker of a test's own: Redis's default snapshots plus an
# append-only file.
PRODUCTION_REDIS = ["--save", "3600 1 300 100 60 10000", "--appendonly", "yes",
                    "--appendfsync", "everysec"]
# kombu's Redis transport options in seconds, so that a message left in ``unacked`` is back
# within a test.
FAST_SWEEP = {"visibility_timeout": 2, "unacked_restore_interval": 1,
              "unacked_restore_throttle": 1, "unacked_mutex_expire": 2}


def command(*args: str | bytes) -> bytes:
    """One Redis command in the protocol's own encoding."""
    parts = [arg if isinstance(arg, bytes) else arg.encode() for arg in args]
    return b"".join([b"*%d\r\n" % len(parts),
                     *(b"$%d\r\n%s\r\n" % (len(part), part) for part in parts)])


def push_then(server: OwnRedis, queue: str, raw: bytes, *then: bytes) -> None:
    """LPUSH ``raw`` to ``queue`` and run ``then`` in the same write: the server handles
    them in one pass of its event loop, before it sends any reply."""
    with socket.create_connection(("127.0.0.1", server.port)) as conn:
        conn.sendall(command("LPUSH", queue, raw) + b"".join(then))
        conn.recv(1024)


def wait_for_event(events: Callable[[str], list[str]], reason: str, text: str = "",
                   timeout: float = 15.0) -> str:
    """The first message of ``events(reason)`` that contains ``text``, once it is there.

    The operator posts an Event after the change it announces (a scale, a condition), so
    a test that has just seen the change may not see its Event yet.
    """
    try:
        message = wait_until(lambda: next((m for m in events(reason) if text in m), None),
                             timeout, what=f"a {reason} event")
    except WaitTimeout:
        raise AssertionError(f"no {reason} event containing {text!r} within {timeout:g} s; "
                             f"those posted: {events(reason)}") from None
    assert message is not None   # wait_until returns only a truthy value
    return message
