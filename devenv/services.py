"""Real backing services for tests and the demo, from Debian's packages.

Each service listens on a fixed, unusual port so that a second test run (or the demo)
reuses the one already running instead of starting another: ``ensure`` is idempotent, and
processes that ensure a service at the same moment start it once (a file lock). It
listens on loopback and on ``HOST`` (the development environment's host address,
``devenv.network``), where pods reach it; nothing listens beyond this machine. The
RabbitMQ management API, which takes one address, is on ``HOST`` only.
State lives under ``/var/tmp/metamapper-operator-<uid>/<name>`` (not under a
home directory, which the ``postgres`` user may not be able to enter when we run as root).

``python -m devenv.services up|down|status [NAME ...]``
"""

from __future__ import annotations

import argparse
import base64
import fcntl
import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from devenv import network
from devenv.errors import DevenvError
from devenv.processes import alive, stop_groups
from devenv.waiting import WaitTimeout, wait_until

STATE = Path(os.environ.get("METAMAPPER_SERVICES_DIR",
                            f"/var/tmp/metamapper-operator-{os.getuid()}"))

REDIS_PORT = 16379
RABBITMQ_PORT = 15673
RABBITMQ_MANAGEMENT_PORT = 15674
RABBITMQ_EPMD_PORT = 14369
POSTGRES_PORT = 15432
MARIADB_PORT = 13306
PG_BIN = Path("/usr/lib/postgresql/15/bin")
HOST = network.HOST_IP  # where pods (and the host) reach every service

INSTALL_HINT = ("run `make deps` "
                "(apt-get install redis-server rabbitmq-server postgresql mariadb-server)")


class ServiceError(DevenvError):
    """A service could not be started; the message says what to install or look at."""


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def wait_for(check: Callable[[], bool], what: str, timeout: float, log: Path,
             pid: int | None = None) -> None:
    """Poll ``check`` until it holds; fail early if the daemon ``pid`` has exited."""
    try:
        wait_until(check, timeout, what,
                   abort=None if pid is None else lambda: not alive(pid))
    except WaitTimeout:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:]) if log.exists() else ""
        raise ServiceError(f"{what} did not come up (see {log}). Log tail:\n{tail}") from None


def require(path: str | Path, package: str) -> str:
    found = shutil.which(str(path)) or (str(path) if Path(path).exists() else None)
    if not found:
        raise ServiceError(f"{path} not found: install Debian's {package} ({INSTALL_HINT})")
    return found


def _as_user(user: str) -> dict[str, object]:
    """Popen arguments that drop root to ``user`` (PostgreSQL refuses to run as root)."""
    if os.geteuid() != 0:
        return {}
    entry = pwd.getpwnam(user)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


def spawn(argv: Sequence[str], log: Path, env: dict[str, str] | None = None,
          user: str | None = None) -> int:
    """Start a daemon in its own session, detached from the caller, and return its pid."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        proc = subprocess.Popen(  # type: ignore[call-overload]
            list(argv), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})}, start_new_session=True, cwd=log.parent,
            **(_as_user(user) if user else {}),
        )
    return int(proc.pid)


@dataclass
class Service:
    """One local daemon: how to tell it is up, how to start it, where its state is."""

    name: str
    ports: tuple[int, ...]
    start_fn: Callable[[Path], int]
    ready_fn: Callable[[], bool] = field(default=lambda: True)
    start_timeout: float = 60.0

    @property
    def home(self) -> Path:
        return STATE / self.name

    @property
    def pidfile(self) -> Path:
        return self.home / "pid"

    def running(self) -> bool:
        return all(port_open(p, HOST) for p in self.ports) and self.ready_fn()

    def ensure(self) -> None:
        """Start the service unless it runs. One process at a time: another that asks
        meanwhile (a second test worker) waits, then finds it running."""
        network.ensure_host_address()
        with self._exclusive():
            if self.running():
                return
            self.home.mkdir(parents=True, exist_ok=True)
            pid = self.start_fn(self.home)
            self.pidfile.write_text(str(pid))
            wait_for(self.running, self.name, self.start_timeout, self.home / "log", pid)

    @contextmanager
    def _exclusive(self) -> Iterator[None]:
        """A lock on a file beside the service's folder (not in it: PostgreSQL's is
        handed to its user), held until the block ends or the process dies."""
        STATE.mkdir(parents=True, exist_ok=True)
        with (STATE / f"{self.name}.lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def stop(self) -> None:
        if self.pidfile.exists():
            stop_groups([int(self.pidfile.read_text())], grace=30)
            self.pidfile.unlink()


# --- Redis -------------------------------------------------------------------------


def _start_redis(home: Path) -> int:
    binary = require("redis-server", "redis-server")
    return spawn([binary, "--port", str(REDIS_PORT), "--bind", "127.0.0.1", HOST,
                  "--protected-mode", "no", "--dir", str(home),
                  "--save", "", "--appendonly", "no", "--databases", "256"], home / "log")


# --- RabbitMQ ----------------------------------------------------------------------

RABBITMQ_USER = "metamapper"
RABBITMQ_PASSWORD = "metamapper-test"


def rabbitmq_api(method: str, path: str, body: object | None = None) -> object:
    """Call the RabbitMQ management API as the test administrator."""
    token = base64.b64encode(f"{RABBITMQ_USER}:{RABBITMQ_PASSWORD}".encode()).decode()
    request = urllib.request.Request(
        f"http://{HOST}:{RABBITMQ_MANAGEMENT_PORT}/api/{path}", method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Basic {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        payload = response.read()
    return json.loads(payload) if payload else None


def _rabbitmq_ready() -> bool:
    try:
        rabbitmq_api("GET", "overview")
    except OSError:
        return False
    return True


def start_rabbitmq(home: Path, port: int = RABBITMQ_PORT,
                   management_port: int = RABBITMQ_MANAGEMENT_PORT,
                   dist_port: int = RABBITMQ_PORT + 20000,
                   node: str = "metamapper-dev") -> int:
    """A RabbitMQ node with its state in ``home``: the development one by default; a
    benchmark that restarts its broker runs one of its own (other ports, another node
    name, the same epmd)."""
    server = require("/usr/lib/rabbitmq/bin/rabbitmq-server", "rabbitmq-server")
    (home / "enabled_plugins").write_text("[rabbitmq_management].\n")
    # A loopback-only node with a known administrator; guest stays the broker default.
    (home / "rabbitmq.conf").write_text(
        f"listeners.tcp.1 = 127.0.0.1:{port}\n"
        f"listeners.tcp.2 = {HOST}:{port}\n"
        f"management.tcp.port = {management_port}\n"
        f"management.tcp.ip = {HOST}\n"
        f"default_user = {RABBITMQ_USER}\n"
        f"default_pass = {RABBITMQ_PASSWORD}\n"
        "default_user_tags.administrator = true\n"
        "default_permissions.configure = .*\n"
        "default_permissions.read = .*\n"
        "default_permissions.write = .*\n"
    )
    env = {
        "HOME": str(home),
        "RABBITMQ_NODENAME": f"{node}@localhost",
        "RABBITMQ_DIST_PORT": str(dist_port),
        "ERL_EPMD_PORT": str(RABBITMQ_EPMD_PORT),
        "ERL_EPMD_ADDRESS": "127.0.0.1",
        "RABBITMQ_CONFIG_FILE": str(home / "rabbitmq"),
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(home / "enabled_plugins"),
        "RABBITMQ_MNESIA_BASE": str(home / "mnesia"),
        "RABBITMQ_LOG_BASE": str(home / "logs"),
        "RABBITMQ_CONF_ENV_FILE": str(home / "rabbitmq-env.conf"),
        "RABBITMQ_ADVANCED_CONFIG_FILE": str(home / "advanced.config"),
        "RABBITMQ_PID_FILE": str(home / "rabbitmq.pid"),
    }
    return spawn([server], home / "log", env=env)


# --- PostgreSQL --------------------------------------------------------------------


def _run_as(user: str | None, argv: Sequence[str], log: Path) -> None:
    """Run a set-up command to completion, its output appended to ``log``."""
    with log.open("ab") as out:
        done = subprocess.run(list(argv), stdout=out, stderr=subprocess.STDOUT,
                              **(_as_user(user) if user else {}))  # type: ignore[call-overload]
    if done.returncode:
        raise ServiceError(f"{argv[0]} failed with exit code {done.returncode}; see {log}")


def _chown(path: Path, user: str) -> None:
    if os.geteuid() == 0:
        entry = pwd.getpwnam(user)
        for p in [path, *path.rglob("*")]:
            os.chown(p, entry.pw_uid, entry.pw_gid)


def _start_postgres(home: Path) -> int:
    require(PG_BIN / "postgres", "postgresql")
    user = "postgres" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
    data = home / "data"
    _chown(home, user)
    if not (data / "PG_VERSION").exists():
        _run_as(user, [str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres",
                       "--auth=trust", "--no-sync", "-E", "UTF8"], home / "log")
    # Clients on the host address and in pods (trust, as for loopback: a development
    # server that listens on this machine's own addresses only).
    hba = data / "pg_hba.conf"
    entry = f"host all all {network.DEV_CIDR} trust\n"
    if entry not in hba.read_text():
        with hba.open("a") as out:
            out.write(entry)
    return spawn([str(PG_BIN / "postgres"), "-D", str(data), "-p", str(POSTGRES_PORT),
                  "-k", str(home), "-c", f"listen_addresses=127.0.0.1,{HOST}", "-c", "fsync=off",
                  "-c", "max_connections=300",
                  # Query statistics, which the worker's usage collection reads.
                  "-c", "shared_preload_libraries=pg_stat_statements"],
                 home / "log", user=user)


# --- MariaDB -----------------------------------------------------------------------


def _start_mariadb(home: Path) -> int:
    server = require("/usr/sbin/mariadbd", "mariadb-server")
    install = require("mariadb-install-db", "mariadb-server")
    user = pwd.getpwuid(os.geteuid()).pw_name
    data = home / "data"
    if not (data / "mysql").exists():
        _run_as(None, [install, f"--datadir={data}", f"--user={user}",
                       "--auth-root-authentication-method=normal", "--skip-test-db"],
                home / "log")
    return spawn([server, "--no-defaults", f"--datadir={data}", f"--port={MARIADB_PORT}",
                  f"--bind-address=127.0.0.1,{HOST}", f"--socket={home / 'mysqld.sock'}",
                  f"--pid-file={home / 'mysqld.pid'}", f"--user={user}",
                  "--innodb-flush-log-at-trx-commit=0", "--skip-name-resolve"],
                 home / "log")


SERVICES: dict[str, Service] = {
    "redis": Service("redis", (REDIS_PORT,), _start_redis),
    "rabbitmq": Service("rabbitmq", (RABBITMQ_PORT, RABBITMQ_MANAGEMENT_PORT), start_rabbitmq,
                        _rabbitmq_ready, start_timeout=120),
    "postgres": Service("postgres", (POSTGRES_PORT,), _start_postgres),
    "mariadb": Service("mariadb", (MARIADB_PORT,), _start_mariadb),
}


def ensure(*names: str) -> None:
    """Start the named services (all when none are named) unless already running."""
    for name in names or tuple(SERVICES):
        SERVICES[name].ensure()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["up", "down", "status"])
    parser.add_argument("names", nargs="*", choices=[[], *SERVICES], metavar="NAME")
    args = parser.parse_args(argv)
    names = args.names or list(SERVICES)
    for name in names:
        service = SERVICES[name]
        if args.action == "up":
            print(f"starting {name} ...", flush=True)
            try:
                service.ensure()
            except ServiceError as err:
                print(f"error: {err}", file=sys.stderr)
                return 1
        elif args.action == "down":
            service.stop()
        print(f"{name}: {'up' if service.running() else 'down'} on ports {service.ports}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
