"""The per-object state: a re-created object starts afresh, a size just set is believed
until the watch index shows it (or for a while), keys match kopf's index keys."""

from __future__ import annotations

from metamapper_operator.state import SCALE_SETTLE_SECONDS, Key, ObjectStates

KEY = Key("ns", "mm")


def test_a_key_finds_what_kopfs_index_keyed_by_a_plain_tuple() -> None:
    index = {("ns", "mm"): "found"}
    assert index[KEY] == "found" and KEY == ("ns", "mm")
    assert (KEY.namespace, KEY.name) == ("ns", "mm")


def test_a_new_uid_gets_new_state_and_lock() -> None:
    states = ObjectStates()
    first, lock = states.state(KEY, "u-1")
    first.generation = 4
    assert states.state(KEY, "u-1") == (first, lock)
    second, other_lock = states.state(KEY, "u-2")
    assert second.generation == 0 and other_lock is not lock


def test_only_a_re_created_object_is_forgotten_first() -> None:
    """Forgetting walks every metric series: a first sight must not pay for it (it made
    creating 10,000 objects quadratic)."""
    forgotten: list[Key] = []

    class Recording(ObjectStates):
        def forget(self, key: Key) -> None:
            forgotten.append(key)
            super().forget(key)

    states = Recording()
    states.state(KEY, "u-1")
    states.state(Key("ns", "other"), "u-1")
    states.state(KEY, "u-1")
    assert forgotten == []
    states.state(KEY, "u-2")
    assert forgotten == [KEY]


def test_a_size_just_set_holds_until_the_index_shows_it_or_it_settles() -> None:
    now = [100.0]
    states = ObjectStates(clock=lambda: now[0])
    states.note_scale(KEY, "mm-default", 5)
    assert states.replicas(KEY, "mm-default", indexed=2) == 5      # the index lags
    assert states.replicas(KEY, "mm-default", indexed=5) == 5      # the index caught up ...
    assert (KEY, "mm-default") not in states.scaled                # ... and the note goes
    states.note_scale(KEY, "mm-default", 7)
    now[0] += SCALE_SETTLE_SECONDS
    assert states.replicas(KEY, "mm-default", indexed=2) == 2      # too old to believe
    states.note_scale(KEY, "mm-default", 3)
    states.forget(KEY)
    assert states.scaled == {} and states.replicas(KEY, "mm-default", indexed=1) == 1
