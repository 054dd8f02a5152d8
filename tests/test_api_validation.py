"""Validation that cannot be bypassed: every number and string of the operator API is checked against
``steering.limits`` and refused with INVALID_ARGUMENT naming the field, over real gRPC on a controller backed
by a real etcd; nothing refused is stored."""

from __future__ import annotations

import json
import math

import grpc
import pytest

from steering import limits
from steering.etcdproc import EtcdCluster
from steering.model import Evacuation, Pin, Restore, TargetHealth
from steering.store import Store
from steering.table import RoutingTable
from steering.v1 import steering_pb2 as pb
from tests.support.controller import API, make_config, refused, start_controller, stubs

MB = 1024 * 1024
RAMP = pb.EVACUATION_MODE_RAMP


def _evac(**kw: object) -> pb.EvacuateRequest:
    base: dict[str, object] = {"region": "eu-west-1", "reason": "validation", "mode": RAMP}
    return pb.EvacuateRequest(**{**base, **kw})  # type: ignore[arg-type]


BAD_EVACUATIONS = [
    (_evac(ramp=pb.Ramp(step=0.25, interval_seconds=math.nan)), "ramp.interval_seconds", "not a finite number"),
    (_evac(ramp=pb.Ramp(step=0.25, interval_seconds=math.inf)), "ramp.interval_seconds", "not a finite number"),
    (_evac(ramp=pb.Ramp(step=0.25, interval_seconds=-math.inf)), "ramp.interval_seconds", "not a finite number"),
    (_evac(ramp=pb.Ramp(step=0.25, interval_seconds=1e-9)), "ramp.interval_seconds", "outside [0.1, 86400]"),
    (_evac(ramp=pb.Ramp(step=0.25, interval_seconds=1e12)), "ramp.interval_seconds", "outside [0.1, 86400]"),
    (_evac(ramp=pb.Ramp(step=0.25, interval_seconds=-5)), "ramp.interval_seconds", "outside [0.1, 86400]"),
    (_evac(ramp=pb.Ramp(step=math.nan, interval_seconds=60)), "ramp.step", "not a finite number"),
    (_evac(ramp=pb.Ramp(step=math.inf)), "ramp.step", "not a finite number"),
    (_evac(ramp=pb.Ramp(step=1e-9)), "ramp.step", "outside [0.001, 1]"),
    (_evac(ramp=pb.Ramp(step=1.5)), "ramp.step", "outside [0.001, 1]"),
    (_evac(ramp=pb.Ramp(step=-0.25)), "ramp.step", "outside [0.001, 1]"),
    # A number sent with mode NOW is still judged: nothing out of bounds is ever accepted.
    (_evac(mode=pb.EVACUATION_MODE_NOW, ramp=pb.Ramp(interval_seconds=math.nan)), "ramp.interval_seconds",
     "not a finite number"),
    (_evac(reason="x" * MB), "reason", f"{MB} characters; at most {limits.MAX_REASON}"),
    (_evac(region="r" * MB), "region", f"{MB} characters; at most {limits.MAX_ID}"),
    (_evac(request_id="i" * 1000), "request_id", f"1000 characters; at most {limits.MAX_REQUEST_ID}"),
    (_evac(mode=7), "mode", "unknown mode 7"),
]


async def test_operator_api_refuses_every_out_of_bounds_value_naming_the_field(etcd: EtcdCluster) -> None:
    config = make_config(etcd.endpoints)
    run = await start_controller(config, agents=False)
    store = Store(config.etcd)
    await store.open()
    ch, op, routing, md = stubs(run.target)
    try:
        cases: list[tuple[object, object, str, str]] = [(op.Evacuate, req, f, why) for req, f, why in BAD_EVACUATIONS]
        cases += [
            (op.Restore, pb.RestoreRequest(region="eu-west-1", mode=RAMP,
                                           ramp=pb.Ramp(step=0.5, interval_seconds=math.nan)),
             "ramp.interval_seconds", "not a finite number"),
            (op.Restore, pb.RestoreRequest(region="eu-west-1", reason="y" * MB), "reason", "characters; at most"),
            (op.PinWeights, pb.PinWeightsRequest(service=API, geo="europe", reason="p",
                                                 weights={"eu-west-1": 2_000_000}),
             "weights.eu-west-1", f"must be <= {limits.PIN_WEIGHT[1]}"),
            (op.PinWeights, pb.PinWeightsRequest(service=API, geo="europe", reason="p",
                                                 weights={f"t{i}": 1 for i in range(limits.MAX_PIN_TARGETS + 1)}),
             "weights", f"at most {limits.MAX_PIN_TARGETS}"),
            (op.PinWeights, pb.PinWeightsRequest(service="s" * MB, geo="europe", reason="p", weights={"eu-west-1": 1}),
             "service", "characters; at most"),
            (op.PinWeights, pb.PinWeightsRequest(service=API, geo="europe", reason="z" * MB,
                                                 weights={"eu-west-1": 1}), "reason", "characters; at most"),
            (op.UnpinWeights, pb.UnpinWeightsRequest(service=API, geo="europe", reason="u" * MB), "reason",
             "characters; at most"),
            (op.Plan, pb.PlanRequest(evacuations=[pb.Evacuation(region="eu-west-1", mode=RAMP, ramp=pb.Ramp(
                step=0.25, interval_seconds=math.nan))]), "evacuations[0].ramp.interval_seconds", "not a finite"),
            (op.Plan, pb.PlanRequest(evacuations=[pb.Evacuation(region="eu-west-1", reason="w" * MB)]),
             "evacuations[0].reason", "characters; at most"),
            (op.Plan, pb.PlanRequest(healthy={"h" * MB: False}), "healthy", "characters; at most"),
            (op.Plan, pb.PlanRequest(restore=["eu-west-1"] * (limits.MAX_WHAT_IF + 1)), "restore", "at most"),
        ]
        cases += [(routing.Resolve, pb.ResolveRequest(service="s" * MB, geo="europe"), "service", "characters; at most"),
                  (routing.Resolve, pb.ResolveRequest(service=API, client_address="1" * MB), "client_address",
                   "characters; at most")]
        for call, req, field, why in cases:
            err = await refused(call, req, metadata=md)  # type: ignore[arg-type]
            details = err.details() or ""
            assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, (field, err.code(), details[:200])
            assert details.startswith(field + ":") and why in details, (field, details[:200])
            assert len(details) < 400, f"{field}: the refusal echoes the value ({len(details)} characters)"
        overrides = await store.get_overrides()
        assert overrides.evacuations == () and overrides.restores == () and overrides.pins == ()
        assert await store.list_audit() == []

        # The bounds themselves are accepted, and what is stored reads back.
        ok = await op.Evacuate(_evac(ramp=pb.Ramp(step=limits.RAMP_STEP[0], interval_seconds=limits.RAMP_INTERVAL[1]),
                                     reason="r" * limits.MAX_REASON), metadata=md)
        assert ok.applied
        (stored,) = (await store.get_overrides()).evacuations
        assert (stored.step, stored.interval, len(stored.reason)) == (0.001, 86400.0, limits.MAX_REASON)
    finally:
        await ch.close()
        await store.close()
        await run.stop()


def test_limits_helpers_name_the_field_and_never_echo_a_huge_value() -> None:
    for bad in (math.nan, math.inf, -math.inf, "1", None, True, 10**400):
        with pytest.raises(limits.LimitError) as info:
            limits.number("ramp.step", bad, limits.RAMP_STEP)
        assert str(info.value).startswith("ramp.step: ") and info.value.field == "ramp.step"
    assert limits.number("x", 0.5, limits.RAMP_STEP) == 0.5
    with pytest.raises(limits.LimitError, match=r"^weights\.a: -1 must be >= 0$"):
        limits.integer("weights.a", -1, limits.PIN_WEIGHT)
    with pytest.raises(limits.LimitError) as info:
        limits.text("reason", "x" * MB, limits.MAX_REASON)
    assert len(str(info.value)) < 80


@pytest.mark.parametrize("record, field", [
    ({"region": "eu-west-1", "mode": "ramp", "step": 0.25, "interval": math.nan}, "interval"),
    ({"region": "eu-west-1", "mode": "ramp", "step": 0.25, "interval": math.inf}, "interval"),
    ({"region": "eu-west-1", "mode": "ramp", "step": 0.25, "interval": 1e-9}, "interval"),
    ({"region": "eu-west-1", "mode": "ramp", "step": 0.25, "interval": 1e12}, "interval"),
    ({"region": "eu-west-1", "mode": "ramp", "step": math.nan, "interval": 30}, "step"),
    ({"region": "eu-west-1", "mode": "now", "started_at": math.inf}, "started_at"),
    ({"region": "eu-west-1", "mode": "now", "started_at": "yesterday"}, "started_at"),
    ({"region": "eu-west-1", "mode": "now", "forced": "no"}, "forced"),
    ({"region": ["eu-west-1"], "mode": "now"}, "region"),
    ({"mode": "now"}, "region"),
])
def test_stored_evacuations_out_of_bounds_do_not_parse(record: dict[str, object], field: str) -> None:
    with pytest.raises(ValueError, match=f"^{field}: "):
        Evacuation.from_dict(json.loads(json.dumps(record)))


def test_stored_restores_pins_and_health_out_of_bounds_do_not_parse() -> None:
    with pytest.raises(ValueError, match=r"^interval: "):
        Restore.from_dict({"region": "eu-west-1", "step": 0.5, "interval": math.nan})
    with pytest.raises(ValueError, match=r"^weights\.eu-west-1: -5 must be >= 0$"):
        Pin.from_dict({"service": API, "geo": "europe", "weights": {"eu-west-1": -5, "us-east-1": 1005}})
    with pytest.raises(ValueError, match=r"^capacity: "):
        TargetHealth.from_dict({"status": "healthy", "capacity": 1e300})
    # Text that only explains is cut on read, not refused: a record stored before the limit still plans.
    long = Evacuation.from_dict({"region": "eu-west-1", "mode": "now", "reason": "x" * 500_000})
    assert len(long.reason) == limits.MAX_REASON
    # Step and interval mean nothing to an evacuation "now": a stray value does not cost the record.
    assert Evacuation.from_dict({"region": "eu-west-1", "mode": "now", "interval": math.nan}).interval == 30.0


def test_a_negative_weight_in_a_table_is_named_not_summed() -> None:
    data = {"version": 1, "services": {API: {"targets": "regions", "geos": {
        "europe": {"weights": {"eu-west-1": 1100, "us-east-1": -100}}}}}}
    with pytest.raises(ValueError, match=r"weights\[us-east-1\] = -100 must be >= 0"):
        RoutingTable.from_json(json.dumps(data))
