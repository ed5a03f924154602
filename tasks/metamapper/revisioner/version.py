"""``app.revisioner.tasks.v1.version.check_version``: keep a datastore's engine version."""

from __future__ import annotations

import logging

from metamapper.celery import app
from metamapper.inspectors import InspectionError, datastore_version
from metamapper.metastore import datastores, open_metastore

logger = logging.getLogger(__name__)


@app.task(name="app.revisioner.tasks.v1.version.check_version")
def check_version(datastore_id: str) -> str | None:
    """Record the server's version on the datastore when it changed; the version, or
    None when the datastore could not be asked (as upstream, that is no error)."""
    with open_metastore() as conn:
        datastore = datastores.load(conn, datastore_id)
        try:
            found = datastore_version(datastore.connection)
        except InspectionError as exc:
            logger.info("datastore %s: version unknown: %s", datastore_id, exc)
            return None
        if datastores.set_version(conn, datastore_id, found):
            logger.info("datastore %s: version %s", datastore_id, found)
    return found
