"""Fleets the autoscaler knows before their first reconcile: from kopf's index of the
Metamappers, as soon as kopf lists them.

A new operator process (a restart, a new leader) lists every Metamapper and then
reconciles them, at most ``state.RECONCILES_AT_ONCE`` at a time: with thousands, the last
one waits minutes for its turn. Its pools need not wait with it: their Deployments are in
the watch already, and what the autoscaler needs of the object (its pools and its broker)
is in the index. So every autoscaling cycle first takes the objects of the index that
have no state yet, reads their spec as the reconcile does (``references.read_spec``: a
spec the reconcile refuses is not learned either), resolving their broker from the
Secrets already read (no request: a fleet whose broker needs a Secret not read yet waits
for its reconcile, which reads it), and gives each a state marked ``listed``. Its pools are
scaled from that cycle on; its status stays its reconcile's to write, from the status the
watch saw (``publish.publish``), so an object that did not change costs no write.

Each object is looked up in the index and given its state with nothing waited for in
between (the cached reads never wait), so no event of kopf's comes between the two: an
object deleted meanwhile has left the index before its state is forgotten (kopf indexes
an event before its handlers run), and one reconciled meanwhile has a state already.
Between objects the event loop runs now and then: a first cycle reads thousands.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Collection, Mapping

from metamapper_operator.model import SpecError
from metamapper_operator.references import NotCached, read_spec
from metamapper_operator.runtime import Runtime
from metamapper_operator.state import Key

log = logging.getLogger(__name__)
# Objects read between two turns of the event loop (about 0.2 ms each): kopf's watches
# and handlers, and the Lease's renewal, go on while a new process reads thousands.
READ_AT_ONCE = 100


async def learn(runtime: Runtime, bodies: Mapping[Key, Collection[str]]) -> None:
    """Give a state to every object of ``bodies`` (kopf's index, as
    ``handlers.metamappers`` keeps it) that has none and whose spec and broker can be
    read without a request. Those it cannot read wait for their reconcile, which reports
    why."""
    learned = 0
    for n, key in enumerate([key for key in bodies if key not in runtime.fleets]):
        if n and n % READ_AT_ONCE == 0:
            await asyncio.sleep(0)
        entry = next(iter(bodies.get(key, ())), None)
        if entry is None or key in runtime.fleets:   # deleted, or reconciled, meanwhile
            continue
        body = json.loads(entry)
        try:
            spec = await read_spec(body, runtime.secrets.cached)
        except (SpecError, NotCached):
            continue
        except Exception:   # one object's surprise must not keep the others unknown
            log.exception("%s/%s could not be read from the index", *key)
            continue
        state, _ = runtime.state(key, spec.fleet.uid)
        state.fleet, state.access, state.listed = spec.fleet, spec.access, True
        state.generation = int(body["metadata"].get("generation", 0))
        learned += 1
    if learned:
        runtime.note_change()
