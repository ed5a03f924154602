"""The probe's memory of unacknowledged entries: what it sends and what it keeps."""

from __future__ import annotations

from metamapper_operator.brokers.redis_unacked import (
    KnownTags,
    Unacked,
    UnackedReply,
    parse_reply,
)


def test_reply_parsed_into_counts_learned_and_gone() -> None:
    reply = parse_reply([[b"checks", 2, 1, b"", 1, 0], [b"t1", b"checks", b"t2", None],
                         [b"t0"]])
    assert reply == UnackedReply(counts={"checks": Unacked(2, 1), "": Unacked(1, 0)},
                                 learned={b"t1": "checks", b"t2": None}, gone=[b"t0"])


def test_arguments_group_known_tags_by_routing_key() -> None:
    known = KnownTags()
    known.update(UnackedReply({}, {b"a": "checks", b"b": None, b"c": "checks", b"d": ""}, []))
    assert known.arguments() == [1, b"b", "checks", 2, b"a", b"c", "", 1, b"d"]
    known.update(UnackedReply({}, {}, [b"a", b"b", b"unknown"]))
    assert known.arguments() == [0, "checks", 1, b"c", "", 1, b"d"]
    assert KnownTags().arguments() == [0]


def test_at_most_limit_tags_are_kept() -> None:
    known = KnownTags(limit=2)
    known.update(UnackedReply({}, {b"a": "q", b"b": "q", b"c": "q"}, []))
    assert len(known) == 2
    known.update(UnackedReply({}, {b"c": "q"}, [b"a"]))
    assert known.arguments() == [0, "q", 2, b"b", b"c"]
