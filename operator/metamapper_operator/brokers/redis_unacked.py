"""Unacknowledged messages per routing key on Redis, at a cost that does not grow with
the messages' size.

kombu keeps a delivered, unacknowledged message in the hash ``unacked`` (delivery tag ->
JSON ``[message, exchange, routing_key]``) and its delivery time in the sorted set
``unacked_index``. Finding an entry's routing key means loading the entry (HGET), whose
cost grows with the message body; the tag and the delivery time cost the same for every
message.

So the routing key of an entry is read once. :class:`KnownTags` remembers tag -> routing
key for the entries already read and passes them to :data:`COUNT_UNACKED` with every
measurement; the script walks ``unacked_index`` (tags and delivery times), loads only the
entries it was not told about, and returns the counts, the routing keys it learned and
the known tags that have left the index (forgotten at once). A poll's work is then one
pass over the tags, whatever the bodies; the first poll after the probe starts reads
every entry once, as the script did on every poll before.

This is exact because a kombu delivery tag is a uuid given at publication and kept with
the message: a message restored to its queue and delivered again comes back under the
same tag with the same routing key. At most ``limit`` tags are remembered, bounding the
probe's memory and the request's size; beyond it, new entries are read on every poll
(counted right, at the old cost).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

# Counts of unacknowledged messages per routing key: KEYS = unacked hash, unacked_index
# sorted set; ARGV[1] = the oldest delivery time still counted in flight; ARGV[2] = how
# many known tags without a routing key follow, then those tags; then groups of a routing
# key, a count n and n known tags. An entry the script loads is the JSON [message,
# exchange, routing key]: the routing key is its last string, found from the end with
# plain searches over the reversed last bytes (a pattern anchored at the end would be
# tried from every position). Returns {{routing key, in flight, stale, ...}, {tag,
# routing key or nil, ...} for the entries loaded, {known tag no longer in the index}}.
COUNT_UNACKED = """
local known = {}
local skipped = tonumber(ARGV[2])
for i = 3, 2 + skipped do known[ARGV[i]] = false end
local i = 3 + skipped
while i <= #ARGV do
  local key, n = ARGV[i], tonumber(ARGV[i + 1])
  for j = i + 2, i + 1 + n do known[ARGV[j]] = key end
  i = i + 2 + n
end
local cutoff = tonumber(ARGV[1])
local counts, learned, seen = {}, {}, {}
local entries = redis.call('ZRANGE', KEYS[2], 0, -1, 'WITHSCORES')
for e = 1, #entries, 2 do
  local tag = entries[e]
  local key = known[tag]
  if key == nil then
    local raw = redis.call('HGET', KEYS[1], tag)
    if raw then
      key = false
      local tail = string.reverse(string.sub(raw, -256))
      local close = string.find(tail, '"', 1, true)
      local open = close and string.find(tail, '"', close + 1, true)
      if open and string.find(string.sub(tail, 1, close - 1), '^%s*%]%s*$') then
        key = string.reverse(string.sub(tail, close + 1, open - 1))
      end
      learned[#learned + 1] = tag
      learned[#learned + 1] = key
    end
  else
    seen[tag] = true
  end
  if key then
    local count = counts[key] or {0, 0}
    if tonumber(entries[e + 1]) >= cutoff then count[1] = count[1] + 1
    else count[2] = count[2] + 1 end
    counts[key] = count
  end
end
local out, gone = {}, {}
for key, count in pairs(counts) do
  out[#out + 1] = key
  out[#out + 1] = count[1]
  out[#out + 1] = count[2]
end
for tag in pairs(known) do
  if not seen[tag] then gone[#gone + 1] = tag end
end
return {out, learned, gone}
"""

#: Tags remembered at most: each costs about 200 bytes in the probe (the tag, its routing
#: key and the dict's slot: about 20 MB at the limit) and about 43 bytes per request.
DEFAULT_LIMIT = 100_000


@dataclass(frozen=True)
class Unacked:
    in_flight: int
    stale: int


@dataclass(frozen=True)
class UnackedReply:
    """What :data:`COUNT_UNACKED` returned."""

    counts: dict[str, Unacked]
    learned: dict[bytes, str | None]  # tag -> routing key (None: the entry has none)
    gone: list[bytes]


def text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def parse_reply(reply: Sequence[Any]) -> UnackedReply:
    """The script's nested reply as a record."""
    counts, learned, gone = reply
    return UnackedReply(
        counts={text(key): Unacked(int(fresh), int(stale))
                for key, fresh, stale in zip(counts[::3], counts[1::3], counts[2::3],
                                             strict=True)},
        learned={tag: None if key is None else text(key)
                 for tag, key in zip(learned[::2], learned[1::2], strict=True)},
        gone=list(gone),
    )


class KnownTags:
    """Delivery tag -> routing key of the unacknowledged entries already read."""

    def __init__(self, limit: int = DEFAULT_LIMIT) -> None:
        self.limit = limit
        self._keys: dict[bytes, str | None] = {}

    def __len__(self) -> int:
        return len(self._keys)

    def arguments(self) -> list[bytes | str | int]:
        """The script's ARGV after the cutoff: the tags without a routing key, then the
        others grouped by routing key."""
        skipped: list[bytes] = []
        groups: dict[str, list[bytes]] = {}
        for tag, key in self._keys.items():
            if key is None:
                skipped.append(tag)
            else:
                groups.setdefault(key, []).append(tag)
        out: list[bytes | str | int] = [len(skipped), *skipped]
        for key, tags in groups.items():
            out += [key, len(tags), *tags]
        return out

    def update(self, reply: UnackedReply) -> None:
        """Forget the tags that left the index; remember the learned ones while there is
        room."""
        for tag in reply.gone:
            self._keys.pop(tag, None)
        for tag, key in reply.learned.items():
            if len(self._keys) >= self.limit:
                break
            self._keys[tag] = key
