"""Pure parts of the Route 53 sink: weights, record model, plan, batches, rendering; client units with Stubber."""

from __future__ import annotations

import json
import random
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from hypothesis import given, settings
from hypothesis import strategies as st

from steering.config import load_yaml, parse_config
from steering.model import Evacuation, Observed, Overrides
from steering.planner import plan as plan_table
from steering.route53.client import PaginationError, RetryPolicy, Route53Client, TokenBucket
from steering.route53.plan import Change, Limits, compute_plan, ownership, pack
from steering.route53.records import (
    MAX_WEIGHT,
    Record,
    RecordKey,
    desired_records,
    locations,
    marker_record,
    scale_weight,
    validate,
)
from steering.route53.render import plan_to_dict, render_plan_json, render_plan_text
from tests.support import EXAMPLE_CONFIG

ZONE = "/hostedzone/ZTEST"


def config(**changes: Any):  # type: ignore[no-untyped-def]
    data = load_yaml(EXAMPLE_CONFIG)
    data.update(changes)
    data["route53"] = {"hosted_zone_id": ZONE}
    return parse_config(data, "test", EXAMPLE_CONFIG.parent)


CFG = config()
T0 = plan_table(CFG, Observed(), Overrides(), None, 0.0)
T_EVAC = plan_table(CFG, Observed(), Overrides(evacuations=(Evacuation(region="us-east-1"),)), T0, 1.0)
DESIRED = desired_records(CFG, T0, ZONE)


# ---- weights


@given(st.integers(min_value=0, max_value=1000))
def test_scale_weight_stays_in_range_and_keeps_nonzero(w: int) -> None:
    s = scale_weight(w)
    assert 0 <= s <= MAX_WEIGHT
    assert (s == 0) == (w == 0)


@given(st.integers(0, 1000), st.integers(0, 1000))
def test_scale_weight_is_monotonic(a: int, b: int) -> None:
    if a <= b:
        assert scale_weight(a) <= scale_weight(b)


def test_scale_weight_examples() -> None:
    assert [scale_weight(w) for w in (0, 1, 2, 500, 1000)] == [0, 1, 1, 128, 255]


# ---- the record model


def test_locations_first_geo_wins_and_default_takes_star() -> None:
    data = load_yaml(EXAMPLE_CONFIG)
    data["geos"].append({"id": "europe-2", "continent": "EU", "demand": 0.1, "prefer": ["eu-west-1"]})
    data["geos"].append({"id": "nowhere", "demand": 0.1, "prefer": ["eu-west-1"]})
    data["route53"] = {"hosted_zone_id": ZONE}
    cfg = parse_config(data, "t", EXAMPLE_CONFIG.parent)
    chosen, notes = locations(cfg)
    assert chosen[("continent", "EU")] == "europe"
    assert chosen[("country", "*")] == "world"  # the default geo, though "nowhere" also has no location
    assert any("europe-2" in n for n in notes) and any("nowhere" in n for n in notes)


def test_default_geo_gets_star_when_nobody_maps_there() -> None:
    data = load_yaml(EXAMPLE_CONFIG)
    data["geos"][-1]["continent"] = "AF"
    data["route53"] = {"hosted_zone_id": ZONE}
    chosen, _ = locations(parse_config(data, "t", EXAMPLE_CONFIG.parent))
    assert chosen[("country", "*")] == "world" and chosen[("continent", "AF")] == "world"


def test_desired_records_shape() -> None:
    recs = DESIRED.records
    w = recs[RecordKey("na-east.api.example.test.", "AAAA", "us-east-1")]
    assert (w.weight, w.ttl, w.values) == (255, 30, ("2001:db8::10",))
    geo = recs[RecordKey("api.example.test.", "A", "subdivision-US-CA")]
    assert geo.geo == ("subdivision", "US-CA") and geo.alias == ("ZTEST", "na-west.api.example.test.", False)
    # the video service has only A answers: no AAAA anywhere
    assert not [k for k in recs if k.name.endswith("video.example.test.") and k.type == "AAAA"]
    assert all(not validate(r, "example.test.") for r in recs.values())


def test_all_zero_type_is_not_published() -> None:
    data = load_yaml(EXAMPLE_CONFIG)
    # only us-east-1 has AAAA; when it is evacuated the AAAA sets would be all zero
    for target in ("us-west-2", "eu-west-1"):
        data["services"][0]["answers"][target].pop("AAAA")
    data["route53"] = {"hosted_zone_id": ZONE}
    cfg = parse_config(data, "t", EXAMPLE_CONFIG.parent)
    t0 = plan_table(cfg, Observed(), Overrides(), None, 0.0)
    t1 = plan_table(cfg, Observed(), Overrides(evacuations=(Evacuation(region="us-east-1"),)), t0, 1.0)
    recs = desired_records(cfg, t1, ZONE).records
    assert not [k for k in recs if k.type == "AAAA" and k.name.endswith("api.example.test.")]


@pytest.mark.parametrize("change,problem", [
    ({"weight": 300}, "weight 300"),
    ({"set_id": ""}, "without SetIdentifier"),
    ({"values": ("not-an-ip",)}, "not a valid A"),
    ({"ttl": -1}, "TTL -1"),
    ({"name": "x.other.test."}, "outside the hosted zone"),
    ({"set_id": "x" * 129}, "longer than 128"),
])
def test_validate_rejects_what_aws_rejects(change: dict[str, Any], problem: str) -> None:
    base = DESIRED.records[RecordKey("na-east.api.example.test.", "A", "us-east-1")]
    fields = {f: getattr(base, f) for f in ("name", "type", "set_id", "ttl", "values", "weight")}
    rec = Record(**{**fields, **change})
    assert any(problem in p for p in validate(rec, "example.test.")), validate(rec, "example.test.")


def test_validate_geolocation_and_alias() -> None:
    geo = DESIRED.records[RecordKey("api.example.test.", "A", "continent-NA")]
    assert validate(Record(geo.name, "A", "x", geo=("continent", "XX"), alias=geo.alias))
    assert validate(Record(geo.name, "A", "x", ttl=30, geo=geo.geo, alias=geo.alias))


def test_record_round_trips_through_the_api_form() -> None:
    for rec in DESIRED.records.values():
        assert Record.from_api(rec.to_api()) == rec


# ---- plan


def apply(current: dict[RecordKey, Record], changes: list[Change]) -> dict[RecordKey, Record]:
    """What Route 53 would hold after the changes (strict, like AWS)."""
    out = dict(current)
    for c in changes:
        key = c.record.key
        if c.action == "CREATE":
            assert key not in out, f"CREATE of existing {key}"
            out[key] = Record.from_api(c.record.to_api())
        elif c.action == "UPSERT":
            out[key] = Record.from_api(c.record.to_api())
        else:
            assert out.get(key) == c.record, f"DELETE of {key} that differs or is missing"
            del out[key]
    return out


def test_plan_from_empty_then_converged() -> None:
    p = compute_plan(DESIRED, [], "steering", "example.test.")
    assert p.counts()["CREATE"] == len(p.changes) and len(p.batches) == 1 and not p.conflicts
    state = apply({}, list(p.changes))
    assert compute_plan(DESIRED, list(state.values()), "steering", "example.test.").empty
    # evacuation: only UPSERTs of weights
    d1 = desired_records(CFG, T_EVAC, ZONE)
    p1 = compute_plan(d1, list(state.values()), "steering", "example.test.")
    assert set(p1.counts()) and p1.counts()["UPSERT"] > 0 and p1.counts()["CREATE"] == 0
    assert all(c.record.weight is not None for c in p1.changes)


def test_routing_policy_change_is_delete_then_create() -> None:
    state = apply({}, list(compute_plan(DESIRED, [], "steering").changes))
    key = RecordKey("na-east.api.example.test.", "A", "us-east-1")
    old = state[key]
    state[key] = Record.from_api({**{k: v for k, v in old.to_api().items() if k != "Weight"}, "Failover": "PRIMARY"})
    p = compute_plan(DESIRED, list(state.values()), "steering")
    acts = [(c.action, c.record.key) for c in p.changes]
    assert acts == [("DELETE", key), ("CREATE", key)]


names = st.sampled_from(["api.example.test.", "na-east.api.example.test.", "europe.video.example.test.",
                         "www.example.test.", "world.api.example.test."])


@st.composite
def foreign_or_marked(draw: Any) -> list[Record]:
    out = []
    for _ in range(draw(st.integers(0, 8))):
        name = draw(names)
        kind = draw(st.sampled_from(["simple", "weighted", "txt", "marker-other", "marker-ours", "cname"]))
        if kind == "simple":
            out.append(Record(name, draw(st.sampled_from(["A", "AAAA"])), ttl=60, values=("192.0.2.99",)))
        elif kind == "weighted":
            out.append(Record(name, "A", draw(st.sampled_from(["us-east-1", "manual"])), ttl=60,
                              values=("192.0.2.98",), weight=draw(st.integers(0, 255))))
        elif kind == "txt":
            out.append(Record(name, "TXT", ttl=60, values=('"hello"',)))
        elif kind == "cname":
            out.append(Record(name, "CNAME", ttl=60, values=("elsewhere.example.",)))
        else:
            owner = "other" if kind == "marker-other" else "steering"
            out.append(marker_record(name, owner, frozenset(draw(st.sets(st.sampled_from(["A", "AAAA"]),
                                                                         min_size=1)))))
    return out


@settings(max_examples=150, deadline=None)
@given(foreign_or_marked(), st.booleans())
def test_plan_never_touches_unowned_records(extra: list[Record], evacuated: bool) -> None:
    base = apply({}, list(compute_plan(DESIRED, [], "steering").changes)) if evacuated else {}
    current: dict[RecordKey, Record] = dict(base)
    for r in extra:
        current[r.key] = r
    own = ownership(current.values(), "steering")
    desired = desired_records(CFG, T_EVAC if evacuated else T0, ZONE)
    p = compute_plan(desired, list(current.values()), "steering", "example.test.")
    foreign = {k for k, r in current.items() if not own.owns(r)}
    for c in p.changes:
        key = c.record.key
        assert key not in foreign, f"{c.action} touches foreign {key}"
        if c.action in ("UPSERT", "DELETE"):
            assert key in current
    after = apply(current, list(p.changes))
    assert {k: after[k] for k in foreign} == {k: current[k] for k in foreign}
    # and a second plan over the result has nothing left to do
    assert compute_plan(desired, list(after.values()), "steering", "example.test.").empty


# ---- batching


@st.composite
def groups(draw: Any) -> list[list[tuple[Change, ...]]]:
    out = []
    for g in range(draw(st.integers(0, 12))):
        units = []
        for u in range(draw(st.integers(1, 25))):
            n = draw(st.integers(1, 20))  # one unit alone always fits: 2 * 20 * 152 chars < 8000
            value = "x" * draw(st.integers(1, 150))
            rec = Record(f"n{g}-{u}.example.test.", "TXT", ttl=1, values=tuple(f'"{value}{i}"' for i in range(n)))
            action = draw(st.sampled_from(["CREATE", "UPSERT", "DELETE"]))
            units.append((Change(action, rec),))
        out.append(units)
    return out


@settings(max_examples=80, deadline=None)
@given(groups(), st.sampled_from([Limits(), Limits(records=200, chars=8000)]))
def test_batches_never_exceed_limits_and_keep_order(gs: list[list[tuple[Change, ...]]], limits: Limits) -> None:
    batches = pack(gs, limits)
    for b in batches:
        assert sum(c.cost()[0] for c in b) <= limits.records
        assert sum(c.cost()[1] for c in b) <= limits.chars
        assert b
    flat = [c for b in batches for c in b]
    assert flat == [c for g in gs for u in g for c in u]
    # a group that fits one batch is never split
    where = {id(c): i for i, b in enumerate(batches) for c in b}
    for g in gs:
        cost_r = sum(c.cost()[0] for u in g for c in u)
        cost_c = sum(c.cost()[1] for u in g for c in u)
        if cost_r <= limits.records and cost_c <= limits.chars:
            assert len({where[id(c)] for u in g for c in u}) == 1


def test_upsert_counts_twice() -> None:
    rec = Record("a.example.test.", "A", ttl=1, values=("192.0.2.1",) * 3)
    assert Change("UPSERT", rec).cost() == (6, 54) and Change("CREATE", rec).cost() == (3, 27)


# ---- rendering


def test_render_text_and_json() -> None:
    p = compute_plan(DESIRED, [], "steering", "example.test.")
    text = render_plan_text(p)
    assert text.splitlines()[0].startswith("Route 53 plan: ")
    assert "+ CREATE na-east.api.example.test. A [us-east-1]  weight 255" in text
    data = json.loads(render_plan_json(p))
    assert data["counts"]["CREATE"] == len(p.changes) == sum(len(b) for b in data["batches"])
    assert plan_to_dict(p)["records"]["desired"] == len(DESIRED.records)
    state = apply({}, list(p.changes))
    assert "nothing to change" in render_plan_text(compute_plan(DESIRED, list(state.values()), "steering"))


# ---- client units


def stubbed(**kw: Any) -> tuple[Route53Client, Stubber, list[float]]:
    raw = boto3.session.Session(aws_access_key_id="x", aws_secret_access_key="y").client(
        "route53", region_name="us-east-1")
    sleeps: list[float] = []
    client = Route53Client("ZTEST", client=raw, sleep=sleeps.append, rng=random.Random(1),
                           max_requests_per_second=1e6, **kw)
    return client, Stubber(raw), sleeps


def rrset(name: str, set_id: str) -> dict[str, Any]:
    return {"Name": name, "Type": "A", "SetIdentifier": set_id, "Weight": 1, "TTL": 30,
            "ResourceRecords": [{"Value": "192.0.2.1"}]}


def test_pagination_follows_identifier_to_the_end() -> None:
    client, stub, _ = stubbed(retry=RetryPolicy(page_size=2))
    base = {"HostedZoneId": "/hostedzone/ZTEST", "MaxItems": "2"}
    stub.add_response("list_resource_record_sets",
                      {"ResourceRecordSets": [rrset("a.example.test.", "1"), rrset("a.example.test.", "2")],
                       "IsTruncated": True, "NextRecordName": "a.example.test.", "NextRecordType": "A",
                       "NextRecordIdentifier": "3", "MaxItems": "2"}, base)
    stub.add_response("list_resource_record_sets",
                      {"ResourceRecordSets": [rrset("a.example.test.", "3"), rrset("b.example.test.", "1")],
                       "IsTruncated": True, "NextRecordName": "c.example.test.", "NextRecordType": "A",
                       "MaxItems": "2"},
                      {**base, "StartRecordName": "a.example.test.", "StartRecordType": "A",
                       "StartRecordIdentifier": "3"})
    stub.add_response("list_resource_record_sets",
                      {"ResourceRecordSets": [rrset("c.example.test.", "1")], "IsTruncated": False, "MaxItems": "2"},
                      {**base, "StartRecordName": "c.example.test.", "StartRecordType": "A"})
    with stub:
        out = client.list_records()
    stub.assert_no_pending_responses()
    assert [(r["Name"], r["SetIdentifier"]) for r in out] == [
        ("a.example.test.", "1"), ("a.example.test.", "2"), ("a.example.test.", "3"),
        ("b.example.test.", "1"), ("c.example.test.", "1")]


def test_pagination_refuses_a_repeated_token() -> None:
    client, stub, _ = stubbed(retry=RetryPolicy(page_size=1))
    page = {"ResourceRecordSets": [rrset("a.example.test.", "1")], "IsTruncated": True,
            "NextRecordName": "a.example.test.", "NextRecordType": "A", "MaxItems": "1"}
    for _ in range(2):
        stub.add_response("list_resource_record_sets", page)
    with stub, pytest.raises(PaginationError, match="twice"):
        client.list_records()


def test_backoff_is_exponential_with_jitter_and_capped() -> None:
    client, stub, sleeps = stubbed(retry=RetryPolicy(attempts=6, base_seconds=0.1, max_seconds=0.5))
    for _ in range(5):
        stub.add_client_error("get_hosted_zone", "Throttling", "Rate exceeded", 400)
    stub.add_response("get_hosted_zone", {"HostedZone": {"Id": "/hostedzone/ZTEST", "Name": "example.test.",
                                                         "CallerReference": "x"},
                                          "DelegationSet": {"NameServers": ["ns.example."]}})
    with stub:
        assert client.zone_name() == "example.test."
    assert len(sleeps) == 5
    caps = [min(0.5, 0.1 * 2 ** a) for a in range(1, 6)]
    assert all(0 <= s <= cap for s, cap in zip(sleeps, caps, strict=True))


def test_rejected_change_is_not_retried() -> None:
    from steering.route53.client import ChangeRejected
    client, stub, sleeps = stubbed()
    stub.add_client_error("change_resource_record_sets", "InvalidChangeBatch", "bad", 400)
    with stub, pytest.raises(ChangeRejected, match="InvalidChangeBatch"):
        client.change([{"Action": "CREATE", "ResourceRecordSet": rrset("a.example.test.", "1")}])
    assert sleeps == []


def test_token_bucket_paces_requests() -> None:
    now = [0.0]
    slept: list[float] = []

    def sleep(s: float) -> None:
        slept.append(s)
        now[0] += s

    bucket = TokenBucket(5.0, burst=1.0, clock=lambda: now[0], sleep=sleep)
    for _ in range(11):
        bucket.acquire()
    assert now[0] == pytest.approx(2.0)  # 1 free, then 10 at 5 per second
