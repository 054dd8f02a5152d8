"""``steering.store.decoded.Decoded`` (a watched range decoded again only where keys changed) against decoding
every item in order: over random puts, updates, deletes, keys deleted and created again, records that cannot
be decoded (and can again), snapshots the watch does not yield (nothing's value moved) and fresh listings,
the map is the same, in the same order, and a record that did not change is the same object."""

from __future__ import annotations

from hypothesis import example, given, settings
from hypothesis import strategies as st

from steering.store.decoded import Decoded
from steering.store.watch import Item

KEYS = [f"k{i}".encode() for i in range(6)]


def decode(key: bytes, value: bytes) -> tuple[str, list[bytes] | None]:
    # A new object per call: the test tells a record handed on from one decoded again.
    return key.decode(), ([value] if value.startswith(b"ok") else None)


ops = st.lists(st.one_of(
    st.tuples(st.just("put"), st.sampled_from(KEYS), st.sampled_from([b"ok1", b"ok2", b"ok1", b"bad"])),
    st.tuples(st.just("delete"), st.sampled_from(KEYS), st.just(b"")),
    st.tuples(st.just("yield"), st.just(b""), st.just(b"")),
    st.tuples(st.just("relist"), st.just(b""), st.just(b"")),
), max_size=40)


@settings(max_examples=500, deadline=None)
@given(ops)
# A record that could not be decoded becomes readable in place: it goes where its key is, before B.
@example([("put", b"k0", b"bad"), ("put", b"k1", b"ok1"), ("yield", b"", b""), ("put", b"k0", b"ok1")])
def test_decoded_equals_a_full_decode_in_order(steps: list[tuple[str, bytes, bytes]]) -> None:
    items: dict[bytes, Item] = {}
    revision = 1
    decoded: Decoded[list[bytes]] = Decoded(decode)
    last_values: dict[bytes, bytes] | None = None
    pending: set[bytes] | None = None
    before: dict[str, list[bytes]] = {}
    touched_since: set[bytes] = set()
    incremental = 0
    for op, key, value in [*steps, ("yield", b"", b"")]:
        revision += 1
        if op == "put":
            old = items.get(key)
            items[key] = Item(value, revision, old.create_revision if old else revision)
        elif op == "delete":
            items.pop(key, None)
        elif op == "relist":
            pending = None  # as watch_range after a fresh listing: the next snapshot has no changed keys
        if op in ("put", "delete"):
            touched_since.add(key)
            if pending is not None:
                pending.add(key)
            continue
        values = {k: i.value for k, i in items.items()}
        if op == "yield" and values == last_values:
            continue  # the watch yields nothing when no value moved
        last_values = values
        out = decoded.update(dict(items), None if pending is None else frozenset(pending))
        incremental += decoded.last_incremental
        want = {k.decode(): [i.value] for k, i in items.items() if i.value.startswith(b"ok")}
        assert list(out.items()) == list(want.items())
        for name, v in out.items():
            if name.encode() not in touched_since and name in before:
                assert v is before[name]  # not decoded again
        before, touched_since, pending = out, set(), set()


def test_one_record_put_again_among_many_is_decoded_alone() -> None:
    calls: list[bytes] = []

    def counting(key: bytes, value: bytes) -> tuple[str, list[bytes] | None]:
        calls.append(key)
        return decode(key, value)

    items = {f"s{i:04d}".encode(): Item(b"ok", 2, 2) for i in range(1000)}
    decoded: Decoded[list[bytes]] = Decoded(counting)
    first = decoded.update(dict(items), None)
    assert len(calls) == 1000 and not decoded.last_incremental
    items[b"s0500"] = Item(b"ok-again", 3, 2)
    second = decoded.update(dict(items), frozenset({b"s0500"}))
    assert decoded.last_incremental and calls[1000:] == [b"s0500"]
    assert second["s0500"] == [b"ok-again"] and second["s0499"] is first["s0499"] and list(second) == list(first)
