"""The ``metamapper`` commands that work on Metamapper's metastore (``metastore``, ``runs``,
``revisions``, ``inspect``).

They need the worker image's database drivers, so :mod:`metamapper.cli` loads this module
only when one of them is used or listed: the operator image, which has the ``metamapper``
command but not the drivers, still runs ``metamapper --help`` and ``metamapper operator``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta

import click
import psycopg

from metamapper.metastore import (
    MetastoreUnavailable,
    datastores,
    open_metastore,
    revision_log,
    revisioner,
    schema,
    workspaces,
)
from metamapper.metastore.datastores import DatastoreError
from metamapper_urls import URLError


@click.group("metastore")
def metastore_group() -> None:
    """Metamapper's metastore (METAMAPPER_DB_*) where no web app manages it.

    Where Metamapper's web app runs, its migrations own the schema and its UI registers
    workspaces and datastores: these commands are for installations without it.
    """


@metastore_group.command("init")
def metastore_init() -> None:
    """Create Metamapper 1.0's tables in an empty database."""
    with _metastore() as conn:
        try:
            schema.create(conn)
        except schema.SchemaExists as exc:
            raise click.ClickException(str(exc)) from None
        count = len(schema.tables(conn))
    click.echo(f"created Metamapper's schema ({count} tables)")


@metastore_group.command("add-workspace")
@click.argument("slug")
@click.option("--owner", "owner_email", required=True, help="The owner's e-mail address.")
@click.option("--name", help="Display name (default: the slug).")
def metastore_add_workspace(slug: str, owner_email: str, name: str | None) -> None:
    """Add a workspace and its owner (a user who signs in through the web app, if any)."""
    with _metastore() as conn, conn.transaction():
        if conn.execute("SELECT 1 FROM auth_workspaces WHERE slug = %s", (slug,)).fetchone():
            raise click.ClickException(f"workspace {slug!r} exists")
        row = conn.execute("SELECT id FROM auth_users WHERE email = %s", (owner_email,)
                           ).fetchone()
        owner = row[0] if row else workspaces.create_user(conn, owner_email)
        workspace = workspaces.create_workspace(conn, slug, name or slug, owner)
    click.echo(f"added workspace {workspace.slug} ({workspace.id})")


@metastore_group.command("add-datastore")
@click.argument("name")
@click.option("--workspace", "workspace_slug", required=True, help="The workspace's slug.")
@click.option("--url-env", required=True, help="The environment variable holding the "
              "connection URL (e.g. postgresql://user:pass@host:5432/db), so that no "
              "password is ever on a command line.")
@click.option("--engine", type=click.Choice(datastores.ENGINES),
              help="Metamapper's engine (default: from the URL's scheme).")
@click.option("--contact", "contacts", multiple=True,
              help="An incident contact's e-mail address (repeatable).")
@click.option("--interval", "interval_minutes", default=24 * 60, show_default=True,
              help="Minutes between inspections.")
def metastore_add_datastore(
    name: str, workspace_slug: str, url_env: str, engine: str | None,
    contacts: tuple[str, ...], interval_minutes: int,
) -> None:
    """Register a datastore as the web app does (its password encrypted with
    METAMAPPER_FERNET_KEY)."""
    url = os.environ.get(url_env)
    if not url:
        raise click.ClickException(f"environment variable {url_env} is not set")
    try:
        settings = datastores.settings_from_url(url, engine)
    except (DatastoreError, URLError) as exc:
        raise click.ClickException(str(exc)) from None
    with _metastore() as conn:
        row = conn.execute("SELECT id FROM auth_workspaces WHERE slug = %s",
                           (workspace_slug,)).fetchone()
        if row is None:
            raise click.ClickException(f"no workspace {workspace_slug!r}")
        try:
            datastore_id = datastores.register(
                conn, row[0], name, settings, incident_contacts=contacts,
                interval=timedelta(minutes=interval_minutes),
            )
        except DatastoreError as exc:
            raise click.ClickException(str(exc)) from None
    click.echo(f"added datastore {name} ({datastore_id}, {settings.engine})")


@metastore_group.command("datastores")
def metastore_datastores() -> None:
    """The registered datastores (no passwords)."""
    with _metastore() as conn:
        rows = [
            (d.id, d.workspace_slug, d.name, d.engine, d.address,
             "yes" if d.is_enabled else "no")
            for d in datastores.list_registered(conn)
        ]
    _print_table(("ID", "WORKSPACE", "NAME", "ENGINE", "ADDRESS", "ENABLED"), rows)


@contextmanager
def _metastore() -> Iterator[psycopg.Connection]:
    try:
        with open_metastore() as conn:
            yield conn
    except MetastoreUnavailable as exc:
        raise click.ClickException(str(exc)) from None


@click.command("runs")
@click.option("--datastore", "datastore_ref", help="Only this datastore's runs (id or slug).")
@click.option("--limit", default=20, show_default=True)
def runs_command(datastore_ref: str | None, limit: int) -> None:
    """The latest revisioner runs, with the errors of their failed steps."""
    with _metastore() as conn:
        datastore_id = _datastore_id(conn, datastore_ref) if datastore_ref else None
        rows = [
            (r.id, r.datastore_id, r.status, _time(r.created_at), _time(r.finished_at),
             _errors(conn, r.id))
            for r in revisioner.recent(conn, datastore_id, limit)
        ]
    _print_table(("RUN", "DATASTORE", "STATUS", "CREATED", "FINISHED", "ERROR"), rows)


@click.command("revisions")
@click.argument("datastore_ref", metavar="DATASTORE")
@click.option("--limit", default=100, show_default=True)
def revisions_command(datastore_ref: str, limit: int) -> None:
    """The latest changes the revisioner recorded in a datastore's catalog (id or slug)."""
    with _metastore() as conn:
        _print_revisions(revision_log.history(conn, _datastore_id(conn, datastore_ref), limit))


@click.command("inspect")
@click.argument("datastore_ref", metavar="DATASTORE")
def inspect_command(datastore_ref: str) -> None:
    """Run the revisioner on a datastore (id or slug) now, in this process."""
    from metamapper.revisioner.steps import RunRefused, run_now

    with _metastore() as conn:
        datastore_id = _datastore_id(conn, datastore_ref)
        try:
            run = run_now(conn, datastore_id)
        except (RunRefused, DatastoreError) as exc:
            raise click.ClickException(str(exc)) from None
        changes = revision_log.history(conn, datastore_id, sys.maxsize, run_id=run.id)
        errors = _errors(conn, run.id)
    click.echo(f"run {run.id}: {run.status}, {len(changes)} changes")
    _print_revisions(changes)
    if run.status != "SUCCESS":
        raise click.ClickException(errors or run.status)


def _errors(conn: psycopg.Connection, run_id: str) -> str:
    return "; ".join(t.error for t in revisioner.tasks(conn, run_id) if t.error)


def _print_revisions(changes: Sequence[revision_log.Change]) -> None:
    _print_table(
        ("RUN", "RECORDED", "ACTION", "KIND", "PATH", "CHANGE"),
        [
            (c.run_id, _time(c.created_at), c.action, c.kind, c.path,
             _change(c.field, c.old_value, c.new_value))
            for c in changes
        ],
    )


def _datastore_id(conn: psycopg.Connection, ref: str) -> str:
    row = conn.execute(
        "SELECT id FROM definitions_datastore WHERE (id = %s OR slug = %s)"
        " AND deleted_at IS NULL", (ref, ref),
    ).fetchone()
    if row is None:
        raise click.ClickException(f"no datastore {ref!r}")
    return str(row[0])


def _change(field: str | None, old: object, new: object) -> str:
    return f"{field}: {old!r} -> {new!r}" if field else ""


def _time(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else ""


def _print_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(headers)]
    for row in (headers, *rows):
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
                   .rstrip())


COMMANDS: dict[str, click.Command] = {
    "metastore": metastore_group, "runs": runs_command, "revisions": revisions_command,
    "inspect": inspect_command,
}
