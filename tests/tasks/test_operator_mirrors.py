"""The worker image's defaults the operator keeps a copy of (it does not import the worker
package): a copy that drifted would make the operator reason about another worker."""

from __future__ import annotations

from metamapper import defaults
from metamapper_operator.contradictions import ACKS_LATE, REJECT_ON_WORKER_LOST
from metamapper_operator.model import WORKER_TASK_TIME_LIMIT, WORKER_VISIBILITY_TIMEOUT


def test_the_operators_copies_of_the_worker_defaults_match_them() -> None:
    assert defaults.SETTINGS["task_time_limit"] == WORKER_TASK_TIME_LIMIT
    assert (defaults.SETTINGS["broker_transport_options"]["visibility_timeout"]
            == WORKER_VISIBILITY_TIMEOUT)
    # Both on unless celery.settings turns them off (the AcksTooEarly warning).
    assert defaults.SETTINGS[ACKS_LATE] is True
    assert defaults.SETTINGS[REJECT_ON_WORKER_LOST] is True
