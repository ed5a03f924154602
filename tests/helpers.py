"""Small helpers shared by the test modules."""

from __future__ import annotations

import subprocess
from pathlib import Path

from devenv import services
from devenv.controlplane import free_port
from devenv.waiting import wait_until


class OwnRedis:
    """A Redis server of one test's own, which the test may stop and start again.

    ``persistent`` keeps every write in an append-only file in ``home``, synced on each
    write, so a restarted server has exactly the data the stopped one had. It listens
    on the host address too, where pods reach it.
    """

    def __init__(self, home: Path, persistent: bool = False) -> None:
        self.port = free_port()
        self.url = f"redis://{services.HOST}:{self.port}/0"
        durability = ["--appendonly", "yes", "--appendfsync", "always"] if persistent else []
        self.argv = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                     services.HOST, "--protected-mode", "no", "--save", "", "--dir", str(home),
                     *durability]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.DEVNULL)
        wait_until(lambda: services.port_open(self.port), what="redis")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait()
            self.proc = None
