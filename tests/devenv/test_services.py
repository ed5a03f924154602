"""``devenv.services``' ``ensure`` starts a service once, however many processes ask for it
at the same moment (the suite's workers under ``TEST_WORKERS`` each ensure the services
their first test needs). Shown with a service of the test's own: a listener that binds its
port a second after it starts, as a daemon takes a moment to come up."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from devenv import services
from devenv.controlplane import free_port
from tests.conftest import REPO

# A listener on the host address (where ``Service.running`` looks) that comes up a second
# after it starts and goes by itself after a minute.
LISTENER = """
import socket, sys, time
time.sleep(1)
server = socket.create_server((sys.argv[1], int(sys.argv[2])))
time.sleep(60)
"""
# One process's ``ensure`` of that service; each start is counted in a file.
ENSURE = """
import sys
from pathlib import Path
from devenv import services
listener, port, starts = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])

def start(home: Path) -> int:
    with starts.open("a") as out:
        out.write("started\\n")
    return services.spawn([sys.executable, "-c", listener, services.HOST, str(port)],
                          home / "log")

services.Service("listener", (port,), start).ensure()
"""


def test_processes_that_ensure_a_service_at_once_start_it_once(tmp_path: Path) -> None:
    port, starts = free_port(), tmp_path / "starts"
    env = {**os.environ, "PYTHONPATH": str(REPO), "METAMAPPER_SERVICES_DIR": str(tmp_path)}
    ensuring = [subprocess.Popen([sys.executable, "-c", ENSURE, LISTENER, str(port),
                                  str(starts)], env=env, cwd=REPO) for _ in range(2)]
    try:
        codes = [process.wait(timeout=60) for process in ensuring]
        assert codes == [0, 0]
        assert starts.read_text().splitlines() == ["started"]
        assert services.port_open(port, services.HOST)
    finally:
        pidfile = tmp_path / "listener" / "pid"
        if pidfile.exists():
            services.stop_groups([int(pidfile.read_text())], grace=5)
