"""Compare a fresh inspection with the stored catalog and describe the change as revisions.

Objects are matched level by level (schemas, then tables within a matched schema,
then columns and indexes within a matched table), in passes (:data:`ID_FIRST`):

1. by ``native_id`` when the engine provides one (PostgreSQL oids): a rename keeps
   the oid, so it is a modification; a drop and re-create gets a new oid, so it is
   a drop and a create even under the same name;
2. otherwise by name;
3. what is still unmatched on both sides is paired when exactly one old and one new
   object share everything but their name (same ordinal and type for a column, same
   columns for a table or an index): that is a rename on engines without stable ids.

Metamapper's own identity is the name (:data:`NAME_FIRST`): a name seen again is the
same object, whatever its native id; only then are native ids, then shapes, asked.

A created or dropped object gives one revision for itself; its children are implied
(a CREATED table carries its columns and indexes in its payload).
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from metamapper.catalog import CatalogObject, Column, Index, Schema, Table, to_dict

CREATED = "CREATED"
MODIFIED = "MODIFIED"
DROPPED = "DROPPED"

T = TypeVar("T", Schema, Table, Column, Index)


@dataclass(frozen=True)
class Revision:
    action: str
    kind: str
    #: Dotted path for people: "public.orders.total".
    path: str
    #: Metastore id of the object (for CREATED, its own if it has one, else a new one).
    object_id: str
    parent_id: str | None
    field: str | None = None
    old_value: Any = None
    #: For CREATED, the whole object (with its children) as a dict.
    new_value: Any = None


def new_id() -> str:
    return uuid.uuid4().hex


def signature(obj: CatalogObject) -> tuple[Any, ...]:
    """Everything that identifies ``obj`` except its name (for rename detection)."""
    own = tuple(
        tuple(v) if isinstance(v, list) else v
        for v in (getattr(obj, f) for f in obj.tracked if f != "name")
    )
    if isinstance(obj, Schema):
        return (*own, tuple(sorted(t.name for t in obj.tables)))
    if isinstance(obj, Table):
        return (*own, tuple((c.name, c.data_type) for c in sorted(obj.columns, key=_ordinal)))
    return own


def _ordinal(column: Column) -> int:
    return column.ordinal


Pass = tuple[list[tuple[T, T]], list[T], list[T]]


def match(
    old: Sequence[T], new: Sequence[T], passes: Passes | None = None
) -> tuple[list[tuple[T, T]], list[T], list[T]]:
    """Pair ``old`` with ``new`` objects: returns (pairs, dropped, created)."""
    pairs: list[tuple[T, T]] = []
    old_left, new_left = list(old), list(new)
    for key in passes or ID_FIRST:
        found, old_left, new_left = key(old_left, new_left)
        pairs.extend(found)
    return pairs, old_left, new_left


def _pair_unique(
    old: list[T], new: list[T], key: Callable[[T], Any]
) -> Pass[T]:
    """Pair objects whose key is unique on both sides; ``None`` keys never pair."""
    old_groups: dict[Any, list[T]] = defaultdict(list)
    new_groups: dict[Any, list[T]] = defaultdict(list)
    for o in old:
        old_groups[key(o)].append(o)
    for n in new:
        new_groups[key(n)].append(n)
    pairs = [
        (olds[0], new_groups[k][0])
        for k, olds in old_groups.items()
        if k is not None and len(olds) == 1 and len(new_groups.get(k, ())) == 1
    ]
    paired_old = {id(o) for o, _ in pairs}
    paired_new = {id(n) for _, n in pairs}
    return (
        pairs,
        [o for o in old if id(o) not in paired_old],
        [n for n in new if id(n) not in paired_new],
    )


def _by_native_id(old: list[T], new: list[T]) -> Pass[T]:
    return _pair_unique(old, new, lambda o: o.native_id)


def _by_name(old: list[T], new: list[T]) -> Pass[T]:
    # Objects with native ids were matched (or not) by them: a same-named object
    # with another native id is a different object.
    return _pair_unique(old, new, lambda o: o.name if o.native_id is None else None)


def _by_signature(old: list[T], new: list[T]) -> Pass[T]:
    return _pair_unique(old, new, lambda o: signature(o) if o.native_id is None else None)


def _by_any_name(old: list[T], new: list[T]) -> Pass[T]:
    return _pair_unique(old, new, lambda o: o.name)


def _by_any_signature(old: list[T], new: list[T]) -> Pass[T]:
    return _pair_unique(old, new, signature)


Passes = tuple[Callable[[list[Any], list[Any]], Pass[Any]], ...]
ID_FIRST: Passes = (_by_native_id, _by_name, _by_signature)
NAME_FIRST: Passes = (_by_any_name, _by_native_id, _by_any_signature)


def diff_schema(
    old: Schema | None, new: Schema, passes: Passes | None = None
) -> list[Revision]:
    """Revisions turning the stored ``old`` schema (None if new) into ``new``."""
    if old is None:
        return [_created(new, new.name, None)]
    assert old.id is not None
    revisions = _modified(old, new, new.name)
    table_pairs, dropped, created = match(old.tables, new.tables, passes)
    revisions += [_dropped(t, f"{old.name}.{t.name}", old.id) for t in dropped]
    revisions += [_created(t, f"{new.name}.{t.name}", old.id) for t in created]
    for old_table, new_table in table_pairs:
        revisions += _diff_table(old_table, new_table, f"{new.name}.{new_table.name}", passes)
    return revisions


def _diff_table(old: Table, new: Table, path: str, passes: Passes | None) -> list[Revision]:
    assert old.id is not None
    return [
        *_modified(old, new, path),
        *_diff_children(old.columns, new.columns, path, old.id, passes),
        *_diff_children(old.indexes, new.indexes, path, old.id, passes),
    ]


def _diff_children(
    old: list[T], new: list[T], path: str, parent_id: str, passes: Passes | None
) -> list[Revision]:
    pairs, dropped, created = match(old, new, passes)
    revisions = [_dropped(c, f"{path}.{c.name}", parent_id) for c in dropped]
    revisions += [_created(c, f"{path}.{c.name}", parent_id) for c in created]
    for old_child, new_child in pairs:
        revisions += _modified(old_child, new_child, f"{path}.{new_child.name}")
    return revisions


def dropped_schemas(stored: Sequence[Schema], kept_ids: set[str]) -> list[Revision]:
    """DROPPED revisions for stored schemas that no inspected schema matched."""
    return [_dropped(s, s.name, None) for s in stored if s.id not in kept_ids]


def _created(obj: CatalogObject, path: str, parent_id: str | None) -> Revision:
    return Revision(CREATED, obj.kind, path, obj.id or new_id(), parent_id,
                    new_value=to_dict(obj))


def _dropped(obj: CatalogObject, path: str, parent_id: str | None) -> Revision:
    assert obj.id is not None
    return Revision(DROPPED, obj.kind, path, obj.id, parent_id)


def _modified(old: CatalogObject, new: CatalogObject, path: str) -> list[Revision]:
    assert old.id is not None
    return [
        Revision(MODIFIED, old.kind, path, old.id, None, name, getattr(old, name),
                 getattr(new, name))
        for name in old.tracked
        if getattr(old, name) != getattr(new, name)
    ]
