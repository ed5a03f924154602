"""Whether METAMAPPER_DB_* name a metastore, and what a fleet without one leaves out.

Metamapper's web app cannot run without its database, and a fleet that serves it takes
the same METAMAPPER_DB_* (from the web app's Secret, say). A fleet where none of them is
set serves only the queues: no task can read Metamapper's catalog, and the web app's
defaults (host ``database``) would only make every metastore task fail on a name that
does not resolve. So, with none set:

- the worker and beat say so once, when they start, naming the variables;
- beat leaves out its entries whose tasks need the metastore (:func:`split_schedule`);
  its heartbeat still ticks (the beat's liveness metric and alert read that tick), without
  writing ``healthchecks_heartbeat``;
- a task that needs the metastore, sent anyway, fails at once naming the variables
  (:class:`metamapper.metastore.connection.MetastoreNotConfigured`), never retried.

Any one of them set (even only ``METAMAPPER_DB_HOST``) names a metastore; the others take
the web app's defaults. No I/O here: the callers pass the environment.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# The web app's settings (environment variable -> default) and the tasks of beat's
# schedule that need the metastore live in metamapper_beat: the operator reads them too,
# and warms no pool for an entry beat leaves out.
from metamapper_beat import METASTORE_ENV, NEEDS_METASTORE

NOT_CONFIGURED = (
    "no metastore: none of " + ", ".join(METASTORE_ENV) + " is set, so no task can read "
    "or write Metamapper's metastore"
)
WORKER_WARNING = (
    f"{NOT_CONFIGURED}. This worker serves the queues; a task that needs the metastore "
    "(the revisioner's, checks', usage's, ...) fails at once saying so. Set "
    "METAMAPPER_DB_* as the web app has them to serve Metamapper."
)


def configured(environ: Mapping[str, str]) -> bool:
    """Whether any METAMAPPER_DB_* is set (the unset ones then take the web app's defaults)."""
    return any(name in environ for name in METASTORE_ENV)


def split_schedule(schedule: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Beat's ``schedule`` without the entries whose task needs the metastore, and the
    names of those left out (sorted)."""
    kept = {name: entry for name, entry in schedule.items()
            if entry.get("task") not in NEEDS_METASTORE}
    return kept, sorted(set(schedule) - set(kept))


def beat_warning(left_out: list[str]) -> str:
    """What beat says when it starts without a metastore, having left out ``left_out``."""
    entries = ", ".join(left_out) if left_out else "none"
    return (f"{NOT_CONFIGURED}. Beat leaves out the entries that need it ({entries}); its "
            "heartbeat ticks without writing healthchecks_heartbeat. Set METAMAPPER_DB_* "
            "as the web app has them to serve Metamapper.")
