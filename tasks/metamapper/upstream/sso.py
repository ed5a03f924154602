"""``app.sso.tasks.*``: single sign-on domains, which a workspace proves it owns with a
DNS TXT record.

Verifying a domain needs DNS lookups, which this image does not do: ``verify_domain`` is
refused (:mod:`metamapper.protocol`). Beat's two SSO entries still run here:
``queue_domain_verifications`` succeeds when no domain waits for verification and fails
loudly, naming how many wait, when some do; ``delete_failed_domains`` removes the domains
whose verification failed for good, as upstream does.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from metamapper.celery import app
from metamapper.metastore import open_metastore
from metamapper.refusals import refuse
from metamapper.upstream.deletes import delete_cascading

logger = logging.getLogger(__name__)

#: Upstream's limit: a domain is verified at most this many times (then it has failed).
MAX_ATTEMPTS = 16
#: A failed domain is removed this long after its last attempt.
FAILED_KEPT_FOR = timedelta(hours=72)
QUEUE_VERIFICATIONS = "app.sso.tasks.queue_domain_verifications"


@app.task(name=QUEUE_VERIFICATIONS)
def queue_domain_verifications(*arg: Any, **kwargs: Any) -> int:
    """How many domains wait for verification: 0, or a loud refusal naming the number.

    A domain waits while it is unverified, has attempts left, and was never tried or its
    back-off (an hour times attempts to the power 1.5) has passed. Upstream compares that
    time the other way round (it picks the domains whose back-off has *not* passed); this
    follows the intent.
    """
    with open_metastore() as conn:
        row = conn.execute(
            """SELECT count(*) FROM sso_domains
                WHERE verified_at IS NULL AND attempts <= %s
                  AND (last_attempted_at IS NULL OR last_attempted_at
                       + interval '1 hour' * power(attempts, 1.5) <= now())""",
            (MAX_ATTEMPTS,),
        ).fetchone()
    waiting = int(row[0]) if row else 0
    if waiting:
        refuse(QUEUE_VERIFICATIONS, f"{waiting} SSO domain(s) wait for verification, which "
               "needs DNS TXT lookups this image does not do")
    logger.info("no SSO domain waits for verification")
    return 0


@app.task(name="app.sso.tasks.delete_failed_domains")
def delete_failed_domains(*arg: Any, **kwargs: Any) -> int:
    """Remove the domains past their last attempt by 72 hours; how many rows went."""
    with open_metastore() as conn:
        failed = [row[0] for row in conn.execute(
            "SELECT id FROM sso_domains WHERE attempts > %s AND last_attempted_at < now() - %s",
            (MAX_ATTEMPTS, FAILED_KEPT_FOR),
        )]
        return delete_cascading(conn, "sso_domains", "id", failed) if failed else 0
