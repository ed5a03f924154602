"""Beat's SSO entries on Metamapper's metastore: failed domains are removed as upstream
removes them; domains waiting for a DNS check this image cannot make are refused loudly."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg
import pytest

from metamapper.celery import app
from metamapper.metastore import open_metastore, workspaces
from tests.tasks.conftest import MetamapperDB

QUEUE = "app.sso.tasks.queue_domain_verifications"
DELETE = "app.sso.tasks.delete_failed_domains"


@dataclass(frozen=True)
class Domains:
    conn: psycopg.Connection
    workspace: str

    def add(self, domain: str, attempts: int, hours_ago: float | None,
            verified: bool = False) -> None:
        self.conn.execute(
            """INSERT INTO sso_domains (id, created_at, updated_at, domain, attempts,
                   last_attempted_at, verified_at, verification_token, workspace_id)
               VALUES (%s, now(), now(), %s, %s, now() - %s * interval '1 hour',
                       CASE WHEN %s THEN now() END, %s, %s)""",
            (uuid.uuid4().hex, domain, attempts, hours_ago, verified, uuid.uuid4().hex,
             self.workspace))

    def names(self) -> list[str]:
        return [r[0] for r in self.conn.execute("SELECT domain FROM sso_domains ORDER BY 1")]


@pytest.fixture
def domains(metamapper_db: MetamapperDB) -> Iterator[Domains]:
    app.loader.import_default_modules()
    with open_metastore() as conn:
        user = workspaces.create_user(conn, "ada@example.com")
        yield Domains(conn, workspaces.create_workspace(conn, "sso", "SSO", user).id)


def test_failed_domains_go_72_hours_after_their_last_attempt(domains: Domains) -> None:
    domains.add("failed-long-ago.example", attempts=17, hours_ago=73)
    domains.add("failed-lately.example", attempts=17, hours_ago=1)
    domains.add("still-trying.example", attempts=5, hours_ago=100)
    assert app.tasks[DELETE].apply(throw=True).get() == 1
    assert domains.names() == ["failed-lately.example", "still-trying.example"]


def test_no_waiting_domain_is_a_quiet_success(
    domains: Domains, caplog: pytest.LogCaptureFixture,
) -> None:
    domains.add("verified.example", attempts=0, hours_ago=0.1, verified=True)
    domains.add("backing-off.example", attempts=4, hours_ago=1)  # next try after 8 hours
    domains.add("given-up.example", attempts=17, hours_ago=200)
    result = app.tasks[QUEUE].apply(throw=True)
    assert result.state == "SUCCESS" and result.get() == 0
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_waiting_domains_are_refused_loudly(
    domains: Domains, caplog: pytest.LogCaptureFixture,
) -> None:
    domains.add("new.example", attempts=0, hours_ago=None)
    domains.add("due-again.example", attempts=1, hours_ago=2)  # back-off of 1 hour passed
    domains.add("backing-off.example", attempts=4, hours_ago=1)
    assert app.tasks[QUEUE].apply().state == "REJECTED"
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [f"{QUEUE} cannot run here: 2 SSO domain(s) wait for verification, "
                      "which needs DNS TXT lookups this image does not do; its message is "
                      "rejected, not requeued"]
