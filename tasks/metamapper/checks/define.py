"""Checks, alert rules and integrations written the way the web app writes them: for an
installation without the web app, the demo and the tests. Where the web app runs, people
make them there."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from hashlib import md5
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from metamapper.metastore.datastores import new_id
from metamapper.metastore.fernet import Cipher

HOUR = dt.timedelta(hours=1)


@dataclass(frozen=True, kw_only=True)
class ExpectationSpec:
    """One expectation: upstream's class names (``app.checks.tasks.expectations.*`` and
    ``app.checks.tasks.pass_values.*``) and their inputs."""

    handler: str
    handler_input: Mapping[str, Any] = field(default_factory=dict)
    pass_value: str
    pass_value_input: Mapping[str, Any] = field(default_factory=dict)


def create_check(conn: psycopg.Connection, *, workspace_id: str, datastore_id: str,
                 creator_id: int, name: str, sql_text: str,
                 expectations: Sequence[ExpectationSpec], interval: dt.timedelta = HOUR,
                 enabled: bool = True) -> str:
    """A check with its query (shared by the workspace's checks of the same SQL, keyed by
    its MD5 as the web app keys it) and its expectations, in that order; returns its id."""
    check_id = new_id()
    key = md5(sql_text.encode(), usedforsecurity=False).hexdigest()
    with conn.transaction():
        conn.execute(
            "INSERT INTO checks_query (created_at, key, sql_text, columns, datastore_id,"
            " workspace_id) VALUES (now(), %s, %s, '{}', %s, %s)"
            " ON CONFLICT (key, workspace_id) DO NOTHING",
            (key, sql_text, datastore_id, workspace_id))
        query = conn.execute("SELECT id FROM checks_query WHERE key = %s AND workspace_id = %s",
                             (key, workspace_id)).fetchone()
        assert query is not None
        conn.execute(
            "INSERT INTO checks (id, created_at, updated_at, name, tags, is_enabled, interval,"
            " creator_id, datastore_id, query_id, workspace_id)"
            " VALUES (%s, now(), now(), %s, '{}', %s, %s, %s, %s, %s, %s)",
            (check_id, name, enabled, interval, creator_id, datastore_id, query[0],
             workspace_id))
        for expectation in expectations:
            conn.execute(
                "INSERT INTO checks_expectation (created_at, updated_at, handler_class,"
                " handler_input, pass_value_class, pass_value_input, job_id, workspace_id)"
                " VALUES (clock_timestamp(), clock_timestamp(), %s, %s, %s, %s, %s, %s)",
                (expectation.handler, Jsonb(dict(expectation.handler_input)),
                 expectation.pass_value, Jsonb(dict(expectation.pass_value_input)), check_id,
                 workspace_id))
    return check_id


def add_alert_rule(conn: psycopg.Connection, *, workspace_id: str, check_id: str,
                   channel: str, channel_config: Mapping[str, Any], name: str,
                   interval: dt.timedelta = HOUR) -> int:
    """An alert rule (``EMAIL``, ``SLACK`` or ``PAGERDUTY``); returns its id."""
    row = conn.execute(
        "INSERT INTO checks_alertrule (created_at, updated_at, name, channel, channel_config,"
        " job_id, workspace_id, interval) VALUES (now(), now(), %s, %s, %s, %s, %s, %s)"
        " RETURNING id",
        (name, channel, Jsonb(dict(channel_config)), check_id, workspace_id, interval),
    ).fetchone()
    assert row is not None
    return int(row[0])


def add_integration(conn: psycopg.Connection, *, workspace_id: str, user_id: int, kind: str,
                    auth: str, displayable: str, meta: Mapping[str, Any] | None = None,
                    cipher: Cipher | None = None) -> str:
    """A workspace's ``SLACK`` or ``PAGERDUTY`` integration, ``auth`` (a Slack token or
    webhook URL, a PagerDuty key) encrypted as the web app stores it; returns its id."""
    integration_id = new_id()
    conn.execute(
        "INSERT INTO integration_config (id, created_at, updated_at, integration, displayable,"
        " auth, meta, user_id, workspace_id) VALUES (%s, now(), now(), %s, %s, %s, %s, %s, %s)",
        (integration_id, kind, displayable, (cipher or Cipher.from_env()).encrypt(auth),
         Jsonb(dict(meta or {})), user_id, workspace_id))
    return integration_id
