"""The worker image's defaults the operator keeps a copy of (it does not import the worker
package): a copy that drifted would make the operator reason about another worker."""

from __future__ import annotations

from metamapper import defaults
from metamapper_operator.model import WORKER_TASK_TIME_LIMIT, WORKER_VISIBILITY_TIMEOUT


def test_the_operators_copies_of_the_worker_defaults_match_them() -> None:
    assert defaults.SETTINGS["task_time_limit"] == WORKER_TASK_TIME_LIMIT
    assert (defaults.SETTINGS["broker_transport_options"]["visibility_timeout"]
            == WORKER_VISIBILITY_TIMEOUT)
