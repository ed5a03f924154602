"""The checks behind ``metamapper health``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from celery import Celery

from metamapper.celery import app
from metamapper.metastore import MetastoreSettings, heartbeats, open_metastore, schema
from metamapper_urls import redact, redact_text


@dataclass(frozen=True)
class CheckResult:
    name: str
    ok: bool
    detail: str


def check_broker(celery: Celery, timeout: float) -> CheckResult:
    url = redact(str(celery.conf.broker_url))
    try:
        with celery.connection_for_write(connect_timeout=timeout) as conn:
            conn.ensure_connection(max_retries=1, timeout=timeout)
    except Exception as exc:
        return CheckResult("broker", False, f"{url}: {redact_text(str(exc))}")
    return CheckResult("broker", True, url)


#: Tables of Metamapper's the worker's tasks write (the web app's migrations or
#: ``metamapper metastore init`` create them).
REQUIRED_TABLES = frozenset({
    "definitions_datastore", "revisioner_run", "checks_execution", "definitions_table_usage",
    "audit_activity", "healthchecks_heartbeat",
})


def check_metastore() -> CheckResult:
    """Metamapper's metastore (METAMAPPER_DB_*) answers and holds Metamapper's tables."""
    try:
        settings = MetastoreSettings.from_env()
        with open_metastore(settings) as conn:
            missing = sorted(REQUIRED_TABLES - schema.tables(conn))
    except Exception as exc:
        return CheckResult("metastore", False, redact_text(str(exc)))
    if missing:
        return CheckResult("metastore", False, f"{settings.display}: no table "
                           f"{', '.join(missing)} (the web app's migrations or "
                           "metamapper metastore init create them)")
    return CheckResult("metastore", True, settings.display)


def check_beat(max_age: timedelta) -> CheckResult:
    """The age of Metamapper's heartbeat (``healthchecks_heartbeat``), as its web app
    judges the scheduler: beat sends ``app.healthchecks.tasks.heartbeat`` every minute."""
    try:
        with open_metastore() as conn:
            at = heartbeats.latest(conn)
    except Exception as exc:
        return CheckResult("beat", False, redact_text(str(exc)))
    if at is None:
        return CheckResult("beat", False, "no heartbeat recorded yet")
    age = datetime.now(UTC) - at
    return CheckResult("beat", age <= max_age, f"last tick {age.total_seconds():.0f} s ago")


def check_workers(celery: Celery, timeout: float) -> CheckResult:
    """Ping the workers; skipped (not failed) on brokers without broadcast, e.g. plain SQS."""
    try:
        with celery.connection_for_write() as conn:
            if not conn.supports_exchange_type("fanout"):
                return CheckResult("workers", True, "skipped: the broker cannot broadcast a ping")
        replies = celery.control.ping(timeout=timeout)
    except Exception as exc:
        return CheckResult("workers", False, redact_text(str(exc)))
    names = sorted(name for reply in replies for name in reply)
    if not names:
        return CheckResult("workers", False, "no worker answered")
    return CheckResult("workers", True, f"{len(names)} live: {', '.join(names)}")


CHECKS = ("broker", "metastore", "beat", "workers")


def run_checks(
    names: tuple[str, ...], timeout: float, max_beat_age: timedelta
) -> list[CheckResult]:
    checks: dict[str, Callable[[], CheckResult]] = {
        "broker": lambda: check_broker(app, timeout),
        "metastore": check_metastore,
        "beat": lambda: check_beat(max_beat_age),
        "workers": lambda: check_workers(app, timeout),
    }
    return [checks[name]() for name in names]
