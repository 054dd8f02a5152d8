"""The event timeline in a real etcd: written in order, read by time and after a cursor, unreadable
records skipped and counted, pruned by age and count; and ``EventSink`` writing what it derives."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator

import pytest

from steering import event as ev
from steering.config import load_config
from steering.controller.sinks import EventSink
from steering.etcdproc import EtcdCluster
from steering.event import Event
from steering.model import TargetHealth
from steering.store import Store
from steering.store.events import new_id
from tests.support import eventually
from tests.support.paths import EXAMPLE_CONFIG
from tests.support.store import etcd_cfg

NOW = time.time()


@pytest.fixture
async def store(etcd: EtcdCluster) -> AsyncIterator[Store]:
    async with Store(etcd_cfg(etcd.endpoints)) as s:
        yield s


def _event(i: int, t: float, subject: str = "site/a") -> Event:
    return Event(time=t, kind=ev.HEALTH_CHANGED, severity="warning", subject=subject, message=f"event {i}",
                 details={"i": i})


async def test_written_events_read_back_in_order_by_time_and_cursor(store: Store) -> None:
    events = [_event(i, NOW - 100 + i) for i in range(10)]
    ids = await store.put_events(events)
    assert ids == sorted(ids) and len(set(ids)) == 10
    page = await store.list_events(limit=50)
    assert [e.message for e in page.events] == [f"event {i}" for i in range(10)]
    assert page.events[0].id == ids[0] and page.events[0].details == {"i": 0} and page.skipped == 0
    newest = await store.list_events(limit=3)
    assert [e.message for e in newest.events] == ["event 7", "event 8", "event 9"] and newest.more
    since = await store.list_events(since=NOW - 100 + 5.5)
    assert [e.details["i"] for e in since.events] == [6, 7, 8, 9]
    after = await store.list_events(after=ids[3], limit=2)  # a follower pages forward: the oldest after it
    assert [e.details["i"] for e in after.events] == [4, 5]
    assert (await store.list_events(after=ids[-1])).events == []


async def test_an_event_written_again_with_its_id_is_stored_once(store: Store) -> None:
    """A retried write (its answer lost, etcd may have applied it) puts the same key; an event without an id
    gets a new one each time, and an id not of the store's form is not used as a key."""
    kept = dataclasses.replace(_event(1, NOW - 3), id=new_id(NOW - 3))
    assert await store.put_events([kept]) == [kept.id]
    assert await store.put_events([kept]) == [kept.id]
    fresh = _event(2, NOW - 2)
    first, second = (await store.put_events([fresh]))[0], (await store.put_events([fresh]))[0]
    odd = dataclasses.replace(_event(3, NOW - 1), id="../../leader")
    (made,) = await store.put_events([odd])
    assert first != second and made != odd.id and made.endswith(tuple("0123456789abcdef"))
    page = await store.list_events()
    assert [e.details["i"] for e in page.events] == [1, 2, 2, 3] and page.events[0].id == kept.id


@contextlib.asynccontextmanager
async def serving(sink: EventSink, store: Store) -> AsyncIterator[None]:
    """The sink's term, from its elected event (in etcd) to ``stop``."""
    stop = asyncio.Event()
    task = asyncio.create_task(sink.serve(None, stop))
    try:
        async def elected() -> bool:
            return [e.kind for e in (await store.list_events()).events] == [ev.LEADER_ELECTED]

        await eventually(elected, what="the elected event")
        yield
    finally:
        stop.set()
        await task


class _LostAnswer:
    """The store with the answer to the first event write lost after etcd applied it (a timeout that came
    after the commit, as when etcd was slow or frozen just after it): the sink retries that write."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.lost = 0

    def __getattr__(self, name: str) -> object:
        return getattr(self.store, name)

    async def put_events(self, events: list[Event]) -> list[str]:
        ids = await self.store.put_events(events)
        if not self.lost and any(e.kind == ev.HEALTH_CHANGED for e in events):
            self.lost += 1
            raise TimeoutError("answer lost (test)")
        return ids


async def test_a_write_retried_after_a_lost_answer_leaves_each_event_once(store: Store) -> None:
    config = load_config(EXAMPLE_CONFIG)
    lossy = _LostAnswer(store)
    sink = EventSink(config, lossy, "c8")  # type: ignore[arg-type]
    async with serving(sink, store):
        ids = [r.id for r in config.regions]
        sink.health_seen({t: TargetHealth(status="healthy") for t in ids}, {})
        sink.health_seen({t: TargetHealth(status="unhealthy") for t in ids}, {})

        async def settled() -> list[Event]:
            events = [e for e in (await store.list_events()).events if e.kind == ev.HEALTH_CHANGED]
            ok = lossy.lost and sink.status() is not None and sink.status().ok  # type: ignore[union-attr]
            return events if ok else []

        events = await eventually(settled, what="the retried write")
        assert sorted(e.subject for e in events) == sorted(f"region/{r}" for r in ids)


async def test_a_record_that_cannot_be_decoded_is_skipped_and_counted(store: Store) -> None:
    await store.put_events([_event(1, NOW - 2), _event(2, NOW)])
    await store.kv.put(store.keys.event(new_id(NOW - 1)), b"{not json")
    await store.kv.put(store.keys.event(new_id(NOW - 1.5)), b'{"time": 1, "kind": "x", "severity": "loud"}')
    page = await store.list_events()
    assert [e.message for e in page.events] == ["event 1", "event 2"]
    assert page.skipped == 2


async def test_pruning_deletes_the_old_then_the_oldest_beyond_the_count(store: Store) -> None:
    old = [_event(i, NOW - 7200 - i) for i in range(5)]  # two hours old
    recent = [_event(100 + i, NOW - 60 + i) for i in range(20)]
    await store.put_events(old + recent)
    assert await store.count_events() == 25
    deleted = await store.prune_events(max_count=8, max_age=3600, now=NOW)
    assert deleted == 17
    page = await store.list_events(limit=100)
    assert [e.details["i"] for e in page.events] == list(range(112, 120))
    assert await store.prune_events(max_count=8, max_age=3600, now=NOW) == 0


async def test_the_event_sink_writes_what_it_derives_and_counts_what_it_limits(store: Store) -> None:
    """The sink as the leader drives it: a term starts (elected), health flaps beyond the budget, the term
    ends (resigned). Written through a real etcd; the budget holds."""
    config = load_config(EXAMPLE_CONFIG)
    config = config.model_copy(update={"controller": config.controller.model_copy(
        update={"events": config.controller.events.model_copy(update={"per_subject_per_minute": 2})})})
    sink = EventSink(config, store, "c9")
    stop = asyncio.Event()
    serving = asyncio.create_task(sink.serve(None, stop))
    try:
        async def elected() -> bool:
            page = await store.list_events()
            return [e.kind for e in page.events] == [ev.LEADER_ELECTED]

        await eventually(elected, what="the term's first event")  # the leader plans only once serving
        ids = [r.id for r in config.regions] + [s.id for s in config.sites]
        up = {t: TargetHealth(status="healthy") for t in ids}
        down = {**up, "oc-lon-1": TargetHealth(status="unhealthy", detail="frontend: status 503")}
        sink.health_seen(up, {})
        for _ in range(5):
            sink.health_seen(down, {"oc-lon-1@c9": down["oc-lon-1"]})
            sink.health_seen(up, {})

        async def written() -> list[Event]:
            page = await store.list_events(limit=100)
            return page.events if len(page.events) >= 3 else []

        events = await eventually(written, what="the elected event and two health events")
        assert events[0].kind == ev.LEADER_ELECTED and events[0].replica == "c9"
        flips = [e for e in events if e.subject == "site/oc-lon-1"]
        assert len(flips) == 2 and sink.limiter.suppressed_total == 8
    finally:
        stop.set()
        await serving
    sink.leadership_ended(True, "test over")
    assert await sink.drain()
    last = (await store.list_events(limit=1)).events[0]
    assert last.kind == ev.LEADER_RESIGNED and "test over" in last.message


async def test_events_wait_while_etcd_is_away_and_a_lost_term_is_written_when_it_is_back(etcd: EtcdCluster) -> None:
    """Nothing derived is lost to an outage: events queue (bounded) and are written once etcd answers; a term
    lost meanwhile is written in the background while the replica campaigns again."""
    config = load_config(EXAMPLE_CONFIG)
    async with Store(etcd_cfg(etcd.endpoints, timeout=1.0)) as store:
        sink = EventSink(config, store, "c7")
        async with serving(sink, store):
            member = etcd.members[0]
            member.pause()  # a frozen etcd: calls time out
            try:
                ids = [r.id for r in config.regions]
                sink.health_seen({t: TargetHealth(status="healthy") for t in ids}, {})
                sink.health_seen({t: TargetHealth(status="unhealthy") for t in ids}, {})
                await eventually(lambda: sink.status() is not None and not sink.status().ok,  # type: ignore[union-attr]
                                 timeout=20, what="a write to fail while etcd is frozen")
            finally:
                member.resume()

            async def written() -> bool:
                page = await store.list_events()
                return sum(e.kind == ev.HEALTH_CHANGED for e in page.events) == len(ids)

            await eventually(written, timeout=20, what="the queued health events to be written")
        sink.leadership_ended(False, "lease lost: test")  # not awaited: the drain runs in the background

        async def lost() -> bool:
            return any(e.kind == ev.LEADER_LOST for e in (await store.list_events()).events)

        await eventually(lost, what="the lost term's event")
        await sink.close()
