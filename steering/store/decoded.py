"""A watched range's records decoded, kept from one snapshot to the next: pure.

The health watch sees thousands of records (one per site and replica) and a few of them change per
second; decoding, or even walking, every record at each change was milliseconds of the leader's loop per
change (issue 18). ``Decoded.update`` takes a snapshot's items and the keys put or deleted since the one
before (``watch.Snapshot.changed``) and returns the same map, in the same order, as decoding every item in
the snapshot's order would: only the changed keys are decoded again, and a record that did not change is
handed on as the very object it was (the leader's merge tells changes apart by identity). A record that
cannot be decoded is left out (the decoder reports it), as a full decode leaves it out. Without the
changed keys (a fresh listing), or when a record that could not be decoded now can (its place in the
order is that of its key, which the map no longer shows), it decodes everything again.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import Generic, NamedTuple, TypeVar

from steering.store.watch import Item

T = TypeVar("T")


class _Entry(NamedTuple, Generic[T]):
    mod_revision: int
    create_revision: int
    name: str
    value: T | None


class Decoded(Generic[T]):
    """``decode(key, value) -> (name, decoded or None)``; one per watch."""

    def __init__(self, decode: Callable[[bytes, bytes], tuple[str, T | None]]) -> None:
        self._decode = decode
        self._memo: dict[bytes, _Entry[T]] = {}
        self._out: dict[str, T] = {}
        self.last_incremental = False  # for tests

    def update(self, items: Mapping[bytes, Item], changed: Collection[bytes] | None) -> dict[str, T]:
        self.last_incremental = False
        if changed is not None and self._incremental(items, changed):
            self.last_incremental = True
            return dict(self._out)
        memo = self._memo
        fresh: dict[bytes, _Entry[T]] = {}
        out: dict[str, T] = {}
        for key, item in items.items():
            entry = memo.get(key)
            if entry is None or entry.mod_revision != item.mod_revision:
                entry = _Entry(item.mod_revision, item.create_revision, *self._decode(key, item.value))
            fresh[key] = entry
            if entry.value is not None:
                out[entry.name] = entry.value
        self._memo, self._out = fresh, out
        return dict(out)

    def _incremental(self, items: Mapping[bytes, Item], changed: Collection[bytes]) -> bool:
        """Apply ``changed`` to the last result; False (and nothing applied) where only a full decode can say."""
        memo = self._memo
        todo: list[tuple[bytes, _Entry[T] | None, _Entry[T] | None]] = []  # (key, before, now; None: deleted)
        appended = 0
        for key in changed:
            item = items.get(key)
            entry = memo.get(key)
            if item is None:
                if entry is not None:
                    todo.append((key, entry, None))
                continue
            if entry is not None and entry.mod_revision == item.mod_revision \
                    and entry.create_revision == item.create_revision:
                continue  # the same record
            new = _Entry(item.mod_revision, item.create_revision, *self._decode(key, item.value))
            if entry is None or entry.create_revision != new.create_revision:
                # Created (again): its key went to the end of the items. Of two or more, which came first
                # the changed keys do not say.
                appended += 1
                if appended > 1:
                    return False
            elif entry.value is None and new.value is not None:
                return False  # readable now, in place: its place among the others is its key's in the items
            todo.append((key, entry, new))
        out = self._out
        for key, entry, now in todo:
            if entry is not None and entry.value is not None and (
                    now is None or now.value is None or now.create_revision != entry.create_revision):
                out.pop(entry.name, None)  # deleted, unreadable now, or created again (to the end, below)
            if now is None:
                del memo[key]
                continue
            memo[key] = now
            if now.value is not None:
                out[now.name] = now.value
        return True
