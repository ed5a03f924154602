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
for its reconcile, which reads it, unless another object's reconcile reads it first), and
gives each a state marked ``listed``. One that cannot be learned is remembered
(:class:`Learner`) and read again only when its entry changes or the Secret it waits for
is read: thousands waiting for their reconcile cost no parsing at every cycle. Its pools are
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
from dataclasses import dataclass, field

from metamapper_operator.model import SpecError
from metamapper_operator.references import NotCached, read_spec
from metamapper_operator.runtime import Runtime
from metamapper_operator.state import Key

log = logging.getLogger(__name__)
# Objects read between two turns of the event loop (about 0.2 ms each): kopf's watches
# and handlers, and the Lease's renewal, go on while a new process reads thousands.
READ_AT_ONCE = 100


@dataclass(frozen=True, slots=True)
class Unread:
    """An object that could not be learned: the index entry that was read, and the
    Secret (namespace, name) not read yet that it waits for (None: its spec, which the
    reconcile reports, or a surprise, logged)."""

    entry: str
    secret: tuple[str, str] | None


@dataclass
class Learner:
    """Learns the objects of kopf's index that have no state yet (:meth:`learn`), and
    remembers those it could not learn: each is read again only when its index entry
    changes or the Secret it waits for is read (by another object's reconcile), not at
    every cycle until its own reconcile, and a surprise is logged once per entry."""

    unread: dict[Key, Unread] = field(default_factory=dict)

    def _waits(self, runtime: Runtime, key: Key, entry: str) -> bool:
        unread = self.unread.get(key)
        return unread is not None and unread.entry == entry and (
            unread.secret is None or not runtime.secrets.holds(*unread.secret))

    async def learn(self, runtime: Runtime, bodies: Mapping[Key, Collection[str]]) -> None:
        """Give a state to every object of ``bodies`` (kopf's index, as
        ``handlers.metamappers`` keeps it) that has none and whose spec and broker can
        be read without a request. Those it cannot read wait for their reconcile, which
        reports why."""
        self.unread = {key: unread for key, unread in self.unread.items()
                       if key in bodies and key not in runtime.fleets}
        learned = 0
        for n, key in enumerate([key for key in bodies if key not in runtime.fleets]):
            if n and n % READ_AT_ONCE == 0:
                await asyncio.sleep(0)
            entry = next(iter(bodies.get(key, ())), None)
            if entry is None or key in runtime.fleets:   # deleted, or reconciled, meanwhile
                continue
            if self._waits(runtime, key, entry):
                continue
            body = json.loads(entry)
            try:
                spec = await read_spec(body, runtime.secrets.cached,
                                       runtime.config.home_namespace)
            except NotCached as missing:
                self.unread[key] = Unread(entry, missing.secret)
                continue
            except SpecError:
                self.unread[key] = Unread(entry, None)
                continue
            except Exception:   # one object's surprise must not keep the others unknown
                log.exception("%s/%s could not be read from the index", *key)
                self.unread[key] = Unread(entry, None)
                continue
            self.unread.pop(key, None)
            state, _ = runtime.state(key, spec.fleet.uid)
            state.fleet, state.access, state.listed = spec.fleet, spec.access, True
            state.generation = int(body["metadata"].get("generation", 0))
            learned += 1
        if learned:
            runtime.note_change()
