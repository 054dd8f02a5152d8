"""The Route 53 sink against moto's Route 53 in server mode, over real HTTP on loopback.

A fault-injecting proxy (``FaultProxy`` in tests/support/route53.py) sits between the
sink and moto: it answers Throttling, PriorRequestNotComplete and
InvalidChangeBatch, and PENDING from GetChange, which moto never does.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import REGISTRY

from steering.config import Config, load_config, load_yaml, parse_config
from steering.model import Evacuation, Observed, Overrides, Restore
from steering.planner import plan as plan_table
from steering.route53.client import RetryPolicy
from steering.route53.records import Record, RecordKey, desired_records
from steering.table import RoutingTable
from tests.support import EXAMPLE_CONFIG, eventually
from tests.support.route53 import MotoRoute53, Route53Env


@pytest.fixture
def env(moto: MotoRoute53) -> Iterator[Route53Env]:
    """A fresh hosted zone behind a fault proxy (the moto server is the module's: tests/support/route53.py)."""
    e = Route53Env(moto)
    try:
        yield e
    finally:
        e.close()


def table_for(config: Config, overrides: Overrides | None = None, previous: RoutingTable | None = None,
              now: float = 0.0) -> RoutingTable:
    return plan_table(config, Observed(), Overrides() if overrides is None else overrides, previous, now)


def ours(env: Route53Env, config: Config) -> dict[RecordKey, Record]:
    return {k: r for k, r in env.records().items() if k.name.endswith(("api.example.test.", "video.example.test."))}


def expected(config: Config, table: RoutingTable, zone_id: str) -> dict[RecordKey, Record]:
    return dict(desired_records(config, table, zone_id).records)


def assert_matches(env: Route53Env, config: Config, table: RoutingTable) -> None:
    have = env.records()
    want = expected(config, table, env.zone_id)
    for key, rec in want.items():
        assert key in have, f"missing {key}"
        assert have[key] == rec, f"{key}: have {have[key]}, want {rec}"
    steered = {k for k in have if k.type in ("A", "AAAA") and k.set_id}
    assert steered - set(want) == set(), "records the table does not call for"


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def weights_of(env: Route53Env, target: str) -> list[int]:
    return [r.weight for k, r in env.records().items() if k.set_id == target and r.weight is not None]


# ---- create / update / delete


async def test_create_update_delete_cycle(env: Route53Env) -> None:
    config = env.config()
    sink = env.sink(config)
    t0 = table_for(config)
    r1 = await sink.sync(t0)
    assert r1.ok, r1.error
    assert r1.changes["CREATE"] > 50 and r1.changes["DELETE"] == 0
    assert_matches(env, config, t0)
    have = env.records()
    na_east = {k.set_id: r.weight for k, r in have.items() if k.name == "na-east.api.example.test." and k.type == "A"}
    assert na_east == {"us-east-1": 255, "us-west-2": 0, "eu-west-1": 0}
    alias = have[RecordKey("api.example.test.", "A", "continent-NA")]
    assert alias.alias is not None and alias.alias[1] == "na-east.api.example.test."
    assert have[RecordKey("api.example.test.", "AAAA", "default")].alias[1] == "world.api.example.test."
    assert RecordKey("_steering.api.example.test.", "TXT") in have
    # values and TTL come from the config
    rec = have[RecordKey("na-east.api.example.test.", "A", "us-east-1")]
    assert rec.values == ("192.0.2.10", "192.0.2.11") and rec.ttl == 30

    # nothing changed: nothing to do
    r2 = await sink.sync(t0)
    assert r2.ok and r2.change_count == 0 and r2.batches == 0

    # update: a pinned split between two regions becomes UPSERTs of weights
    from steering.model import Pin
    pin = Pin(service="api.example.test.", geo="na-east", weights={"us-east-1": 600, "us-west-2": 400})
    t1 = table_for(config, Overrides(pins=(pin,)), t0, 1.0)
    r3 = await sink.sync(t1)
    assert r3.ok, r3.error
    assert r3.changes["UPSERT"] == 4 and r3.changes["CREATE"] == 0 and r3.changes["DELETE"] == 0
    assert_matches(env, config, t1)
    have = env.records()
    assert have[RecordKey("na-east.api.example.test.", "A", "us-east-1")].weight == 153
    assert have[RecordKey("na-east.api.example.test.", "AAAA", "us-west-2")].weight == 102

    # delete: the video service leaves the config; its records and markers go, api stays
    data = load_yaml(EXAMPLE_CONFIG)
    data["services"] = [s for s in data["services"] if not s["name"].startswith("video")]
    smaller = env.config(data)
    sink2 = env.sink(smaller)
    t2 = table_for(smaller, Overrides(pins=(pin,)), None, 2.0)
    r4 = await sink2.sync(t2)
    assert r4.ok, r4.error
    assert r4.changes["DELETE"] > 20 and r4.changes["CREATE"] == 0
    left = env.records()
    assert not [k for k in left if "video" in k.name]
    assert_matches(env, smaller, t2)


async def test_evacuation_drives_weight_to_zero_and_restore_brings_it_back(env: Route53Env) -> None:
    config = env.config()
    sink = env.sink(config)
    t0 = table_for(config)
    assert (await sink.sync(t0)).ok
    before = env.records()
    assert max(weights_of(env, "us-east-1")) == 255

    evac = Evacuation(region="us-east-1", mode="now", reason="test", started_at=10.0)
    t1 = table_for(config, Overrides(evacuations=(evac,)), t0, 10.0)
    r = await sink.sync(t1)
    assert r.ok, r.error
    assert r.changes["UPSERT"] > 0
    assert_matches(env, config, t1)
    ws = weights_of(env, "us-east-1")
    assert ws and all(w == 0 for w in ws), ws  # every geo, both services, A and AAAA
    # every weighted set still has a non-zero member: no all-zero set (Route 53 would spread it evenly)
    sets: dict[tuple[str, str], list[int]] = {}
    for k, rec in env.records().items():
        if rec.weight is not None:
            sets.setdefault((k.name, k.type), []).append(rec.weight)
    assert all(max(ws) > 0 for ws in sets.values())

    # restore ramps back over a few steps; bounded loop
    restore = Restore(region="us-east-1", step=0.5, interval=5.0, started_at=20.0)
    table = t1
    for step in range(12):
        table = table_for(config, Overrides(restores=(restore,)), table, 20.0 + 5.0 * step)
        assert (await sink.sync(table)).ok
        if table.routing_json() == t0.routing_json():
            break
    assert table.routing_json() == t0.routing_json(), "restore did not converge in 12 steps"
    after = env.records()
    assert {k: r for k, r in after.items() if r.weight is not None} == \
        {k: r for k, r in before.items() if r.weight is not None}


# ---- batching


def many_geos_config(env: Route53Env, n: int) -> Config:
    from steering.geocodes import COUNTRY_CONTINENT, US_STATES

    # real codes (the config takes ISO 3166-1 countries and US states only): a location per geo
    codes = [("country", c) for c in sorted(COUNTRY_CONTINENT)] + [("subdivisions", [f"US-{s}"])
                                                                   for s in sorted(US_STATES)]
    data = load_yaml(EXAMPLE_CONFIG)
    data["sites"] = []
    data["geos"] = [{"id": f"g{i}", field: code, "demand": 1.0, "prefer": ["us-east-1", "us-west-2", "eu-west-1"]}
                    for i, (field, code) in enumerate(codes[:n])]
    data["geos"][0]["default"] = True
    data["services"] = [{"name": "api.example.test.", "ttl": 30, "answers": {
        "us-east-1": {"A": ["192.0.2.10"]}, "us-west-2": {"A": ["192.0.2.20"]}, "eu-west-1": {"A": ["192.0.2.30"]}}}]
    return env.config(data)


async def test_more_than_1000_changes_are_split_into_batches(env: Route53Env) -> None:
    config = many_geos_config(env, 300)
    sink = env.sink(config)
    t0 = table_for(config)
    plan = await asyncio.to_thread(sink.plan, t0)
    assert len(plan.changes) > 1000
    assert len(plan.batches) >= 2
    for batch in plan.batches:
        assert sum(c.cost()[0] for c in batch) <= 1000
        assert sum(c.cost()[1] for c in batch) <= 32000
    calls = env.proxy.count("ChangeResourceRecordSets")
    r = await sink.sync(t0)
    assert r.ok, r.error
    assert r.batches == len(plan.batches)
    assert env.proxy.count("ChangeResourceRecordSets") - calls == len(plan.batches)
    assert sum(r.changes.values()) == len(plan.changes)
    assert_matches(env, config, t0)
    # the marker at the service name was grown first and is complete at the end
    marker = env.records()[RecordKey("_steering.api.example.test.", "TXT")]
    assert len(marker.values) == 1 and "type=A" in marker.values[0]
    again = await sink.sync(t0)
    assert again.ok and again.change_count == 0


# ---- ownership


def foreign_changes(zone_id: str) -> list[dict[str, Any]]:
    return [
        {"Action": "CREATE", "ResourceRecordSet": {"Name": "www.example.test.", "Type": "A", "TTL": 60,
                                                   "ResourceRecords": [{"Value": "198.51.100.7"}]}},
        # same SetIdentifier as one of ours, at another name (moto once deleted these together)
        {"Action": "CREATE", "ResourceRecordSet": {"Name": "legacy.example.test.", "Type": "A", "TTL": 60,
                                                   "SetIdentifier": "us-east-1", "Weight": 10,
                                                   "ResourceRecords": [{"Value": "198.51.100.8"}]}},
        # a weighted set someone else runs at one of "our" names: a conflict we must leave alone
        {"Action": "CREATE", "ResourceRecordSet": {"Name": "na-west.video.example.test.", "Type": "A", "TTL": 60,
                                                   "SetIdentifier": "manual", "Weight": 10,
                                                   "ResourceRecords": [{"Value": "198.51.100.9"}]}},
        # a user's TXT at a steered name
        {"Action": "CREATE", "ResourceRecordSet": {"Name": "api.example.test.", "Type": "TXT", "TTL": 60,
                                                   "ResourceRecords": [{"Value": '"v=spf1 -all"'}]}},
    ]


async def test_foreign_records_are_never_touched(env: Route53Env) -> None:
    config = env.config()
    env.change(*foreign_changes(env.zone_id))
    foreign = {k: r for k, r in env.records().items() if k.type in ("A", "TXT")}
    assert len(foreign) == 4
    sink = env.sink(config)
    t0 = table_for(config)
    r = await sink.sync(t0)
    assert r.ok, r.error
    assert any("na-west.video.example.test. A" in c for c in r.conflicts)
    # the conflicting name got none of ours, and the alias that would point there was not made either
    have = env.records()
    assert [k for k in have if k.name == "na-west.video.example.test."] == \
        [RecordKey("na-west.video.example.test.", "A", "manual")]
    assert not [k for k, r in have.items() if r.alias is not None and r.alias[1] == "na-west.video.example.test."]
    # evacuate, then delete a whole service: foreign records stay exactly as they were
    t1 = table_for(config, Overrides(evacuations=(Evacuation(region="us-east-1"),)), t0, 1.0)
    assert (await sink.sync(t1)).ok
    data = load_yaml(EXAMPLE_CONFIG)
    data["services"] = data["services"][:1]
    smaller = env.config(data)
    assert (await env.sink(smaller).sync(table_for(smaller))).ok
    have = env.records()
    for key, rec in foreign.items():
        assert have.get(key) == rec, f"foreign {key} changed"
    assert not [k for k in have if "video" in k.name and k not in foreign]


async def test_another_owner_name_is_left_alone(env: Route53Env) -> None:
    config = env.config()
    env.change({"Action": "CREATE", "ResourceRecordSet": {
        "Name": "_steering.europe.api.example.test.", "Type": "TXT", "TTL": 300,
        "ResourceRecords": [{"Value": '"heritage=steering,owner=other-cluster,type=A"'}]}})
    r = await env.sink(config).sync(table_for(config))
    assert r.ok, r.error
    assert any("other-cluster" in c for c in r.conflicts)
    assert not [k for k in env.records() if k.name == "europe.api.example.test."]
    assert env.records()[RecordKey("_steering.europe.api.example.test.", "TXT")].values == \
        ('"heritage=steering,owner=other-cluster,type=A"',)


# ---- faults


async def test_throttling_and_prior_request_not_complete_are_retried(env: Route53Env) -> None:
    config = env.config()
    sink = env.sink(config)
    throttles = metric("steering_route53_throttles_total")
    env.proxy.inject("ListResourceRecordSets", "Throttling", times=2)
    env.proxy.inject("ChangeResourceRecordSets", "Throttling", times=2)
    env.proxy.inject("ChangeResourceRecordSets", "PriorRequestNotComplete", times=2)
    env.proxy.pending_getchange = 3
    t0 = table_for(config)
    r = await sink.sync(t0)
    assert r.ok, r.error
    assert_matches(env, config, t0)
    assert env.proxy.count("ChangeResourceRecordSets", "Throttling") == 2
    assert env.proxy.count("ChangeResourceRecordSets", "PriorRequestNotComplete") == 2
    assert env.proxy.count("ListResourceRecordSets", "Throttling") == 2
    assert env.proxy.count("GetChange", "PENDING") == 3
    assert env.proxy.count("GetChange") == 4  # INSYNC only on the fourth poll, then counted as done
    assert metric("steering_route53_throttles_total") - throttles == 4


async def test_retries_give_up_and_report(env: Route53Env) -> None:
    config = env.config()
    sink = env.sink(config, retry=RetryPolicy(attempts=3, base_seconds=0.001, max_seconds=0.005))
    env.proxy.inject("ChangeResourceRecordSets", "Throttling", times=10)
    r = await sink.sync(table_for(config))
    assert not r.ok and "gave up after 3 attempts" in (r.error or "")
    assert env.proxy.count("ChangeResourceRecordSets", "Throttling") == 3
    assert not [k for k in env.records() if k.type == "A"]


async def test_rejected_batch_leaves_old_state_is_reported_and_held(env: Route53Env) -> None:
    now = [1000.0]
    config = env.config(sync_interval=30)
    sink = env.sink(config, clock=lambda: now[0])
    t0 = table_for(config)
    assert (await sink.sync(t0)).ok
    before = env.records()
    rejected = metric("steering_route53_rejected_batches_total")
    t1 = table_for(config, Overrides(evacuations=(Evacuation(region="us-east-1"),)), t0, 1.0)
    env.proxy.inject("ChangeResourceRecordSets", "InvalidChangeBatch", times=1)
    r = await sink.sync(t1)
    assert r.rejected and not r.ok and "InvalidChangeBatch" in (r.error or "")
    assert r.change_count == 0
    assert env.records() == before
    assert metric("steering_route53_rejected_batches_total") - rejected == 1
    assert sink.last_result is r
    # the same batch is not resent at once ...
    calls = env.proxy.count("ChangeResourceRecordSets")
    held = await sink.sync(t1)
    assert held.held and not held.ok and env.proxy.count("ChangeResourceRecordSets") == calls
    assert env.records() == before
    # ... but after the hold-down (sync_interval) it is, and now it goes through
    now[0] += 31
    ok = await sink.sync(t1)
    assert ok.ok, ok.error
    assert_matches(env, config, t1)


async def test_invalid_records_are_not_sent(env: Route53Env) -> None:
    """moto would accept a weight of 300; we refuse it before sending."""
    from steering.route53 import plan as plan_mod
    config = env.config()
    sink = env.sink(config)
    t0 = table_for(config)
    good = await asyncio.to_thread(sink.plan, t0)
    desired = desired_records(config, t0, env.zone_id)
    key = RecordKey("na-east.api.example.test.", "A", "us-east-1")
    bad = dict(desired.records)
    bad[key] = Record(**{**{f: getattr(bad[key], f) for f in ("name", "type", "set_id", "ttl", "values")},
                         "weight": 300})
    p = plan_mod.compute_plan(type(desired)(bad, desired.service_of, ()), [], "steering", "example.test.")
    assert any("weight 300" in i for i in p.invalid)
    assert len(p.changes) == len(good.changes) - 1


# ---- drift


async def test_periodic_compare_repairs_drift(env: Route53Env) -> None:
    config = env.config(sync_interval=0.2)
    sink = env.sink(config)
    t0 = table_for(config)
    stop = asyncio.Event()
    runner = asyncio.create_task(sink.run(stop))
    try:
        sink.notify(t0)
        await eventually(lambda: sink.last_result is not None and sink.last_result.ok, 10, "a good sync")
        assert_matches(env, config, t0)
        key = RecordKey("europe.api.example.test.", "A", "eu-west-1")
        alias = env.records()[RecordKey("api.example.test.", "A", "continent-EU")]
        env.change(
            {"Action": "UPSERT", "ResourceRecordSet": {"Name": key.name, "Type": "A", "TTL": 300,
                                                       "SetIdentifier": key.set_id, "Weight": 7,
                                                       "ResourceRecords": [{"Value": "203.0.113.66"}]}},
            {"Action": "DELETE", "ResourceRecordSet": alias.to_api()},
        )
        assert env.records()[key].weight == 7
        def repaired() -> bool:
            records = env.records()
            return (records.get(key) == expected(config, t0, env.zone_id)[key]
                    and RecordKey("api.example.test.", "A", "continent-EU") in records)

        # boto3 blocks: read the zone off the loop, where the sink's periodic compare runs
        await eventually(lambda: asyncio.to_thread(repaired), 10, "the drift repaired")
        assert_matches(env, config, t0)
    finally:
        stop.set()
        await asyncio.wait_for(runner, 10)


def test_load_config_with_route53_section(tmp_path: Any) -> None:
    data = load_yaml(EXAMPLE_CONFIG)
    data["route53"] = {"hosted_zone_id": "Z123", "owner_id": "bad,owner"}
    with pytest.raises(Exception) as exc:
        parse_config(data, "x.yaml", EXAMPLE_CONFIG.parent)
    assert "route53.owner_id" in str(exc.value)
    assert load_config(EXAMPLE_CONFIG).route53 is None


async def test_broken_pagination_is_detected_and_nothing_is_written(env: Route53Env) -> None:
    """Without the proxy's correct pages, moto repeats a token once a (name, type) has >300 records."""
    config = many_geos_config(env, 305)
    sink = env.sink(config)
    t0 = table_for(config)
    assert (await sink.sync(t0)).ok
    env.proxy.paginate = False
    t1 = table_for(config, Overrides(evacuations=(Evacuation(region="us-east-1"),)), t0, 1.0)
    before = env.records()
    errors = metric("steering_route53_errors_total", kind="pagination")
    r = await sink.sync(t1)
    assert not r.ok and "PaginationError" in (r.error or "") and r.change_count == 0
    assert env.records() == before
    assert metric("steering_route53_errors_total", kind="pagination") - errors == 1
