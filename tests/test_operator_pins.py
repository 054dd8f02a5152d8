"""PinWeights gets the evacuation's safety thinking, over real gRPC on a controller backed by a real etcd."""

from __future__ import annotations

import json

import grpc

from steering.controller.operator import PREVIEW_TRAILER
from steering.etcdproc import EtcdCluster
from steering.store import Store
from steering.v1 import steering_pb2 as pb
from tests.support import eventually
from tests.support.cli import steerctl
from tests.support.controller import API, make_config, refused, start_controller, stubs

VIDEO = "video.example.test."


async def test_pin_rules_refuse_write_nothing_and_force_is_audited_once(etcd: EtcdCluster) -> None:
    config = make_config(etcd.endpoints, min_serving_regions=1)
    run = await start_controller(config)
    store = Store(config.etcd)
    await store.open()
    ch, op, _, md = stubs(run.target)

    async def nothing_written() -> None:
        assert (await store.get_overrides()).pins == () and await store.list_audit() == []

    try:
        # Bad input names the field.
        err = await refused(op.PinWeights, pb.PinWeightsRequest(service=API, geo="europe", weights={"mars-1": 1},
                                                                 reason="x"), metadata=md)
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and err.details().startswith("weights.mars-1:")

        # Targets the planner would ignore: refused even when forced, naming the rule and the numbers.
        for req, rule, words in (
                (pb.PinWeightsRequest(service=API, geo="europe", weights={"oc-lon-1": 1000}, reason="x", force=True),
                 "no_answers", ("oc-lon-1", "answers for 3")),
                (pb.PinWeightsRequest(service=VIDEO, geo="europe", weights={"oc-nyc-1": 1000}, reason="x",
                                      force=True),
                 "not_a_candidate", ("oc-nyc-1", "4 candidate(s)"))):
            err = await refused(op.PinWeights, req, metadata=md)
            assert err.code() == grpc.StatusCode.FAILED_PRECONDITION, err.details()
            assert err.details().startswith(f"refused by {rule}:") and all(w in err.details() for w in words)
            assert "--force cannot override" in err.details()
        await nothing_written()

        # A target that cannot serve: refused with the preview, nothing written.
        eu = run.agents["eu-west-1"]
        eu.set(status=pb.HEALTH_STATUS_UNHEALTHY,
               checks=[pb.CheckResult(name="web", kind="http", ok=False, detail="status 503")])

        async def eu_out() -> bool:
            t = await store.get_table()
            return t is not None and t.regions["eu-west-1"].health == "unhealthy"

        await eventually(eu_out, what="eu-west-1 unhealthy in the table")
        req = pb.PinWeightsRequest(service=API, geo="na-east", weights={"eu-west-1": 1, "us-east-1": 1},
                                   reason="canary", request_id="pin-1")
        err = await refused(op.PinWeights, req, metadata=md)
        assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert err.details().startswith("refused by cannot_serve:"), err.details()
        assert "eu-west-1 is unhealthy (web: status 503) but would get 500 of 1000" in err.details()
        assert PREVIEW_TRAILER in dict(err.trailing_metadata() or ())
        await nothing_written()
        dry = await op.PinWeights(pb.PinWeightsRequest(service=API, geo="na-east", weights={"us-east-1": 1},
                                                       reason="dry", dry_run=True), metadata=md)
        assert dry.dry_run and not dry.applied
        await nothing_written()

        # Forced: applied once, audited as forced, the warning names the rule; a retry is a duplicate.
        req.force = True
        first = await op.PinWeights(req, metadata=md)
        again = await op.PinWeights(req, metadata=md)
        assert first.applied and not first.duplicate and any("forced past cannot_serve" in w for w in first.warnings)
        assert again.duplicate and again.audit_id == first.audit_id
        audit = await store.list_audit()
        assert len(audit) == 1 and audit[0]["action"] == "pin" and audit[0]["forced"] is True
        assert audit[0]["details"]["weights"] == {"us-east-1": 500, "eu-west-1": 500}
        pins = (await store.get_overrides()).pins
        assert len(pins) == 1 and pins[0].weights == {"us-east-1": 500, "eu-west-1": 500}

        # The planner keeps the dead target out while the pin stands.
        async def pinned() -> bool:
            t = await store.get_table()
            r = t.route(API, "na-east") if t else None
            return r is not None and r.pinned and r.weights == {"us-east-1": 1000, "us-west-2": 0, "eu-west-1": 0}

        await eventually(pinned, what="na-east pinned to us-east-1 alone")

        # An evacuated region cannot serve either.
        ok = await op.Evacuate(pb.EvacuateRequest(region="us-west-2", mode=pb.EVACUATION_MODE_NOW, reason="maint"),
                               metadata=md)
        assert ok.applied
        err = await refused(op.PinWeights, pb.PinWeightsRequest(service=API, geo="na-west",
                                                                 weights={"us-west-2": 1000}, reason="x"),
                             metadata=md)
        assert "cannot_serve" in err.details() and "us-west-2 is evacuated (now, reason: maint)" in err.details()
        assert "none of the pinned targets can serve" in err.details()
        assert len(await store.list_audit()) == 2  # the pin and the evacuation, nothing more
    finally:
        await ch.close()
        await store.close()
        await run.stop()


async def test_pin_beyond_hard_limit_is_refused_with_numbers_and_steerctl_exit_codes(etcd: EtcdCluster) -> None:
    config = make_config(etcd.endpoints, min_serving_regions=1)
    # 7000 req/s in each region: all of na-east on us-west-2 (capacity 8000) is far beyond it.
    run = await start_controller(config, load=7000.0)
    store = Store(config.etcd)
    await store.open()
    ch, op, _, md = stubs(run.target)
    env = {"STEERCTL_SERVER": run.target}
    try:
        async def loaded() -> bool:
            t = await store.get_table()
            return t is not None and all(st.load == 7000.0 for st in t.regions.values())

        await eventually(loaded, what="the reported loads in the table")
        err = await refused(op.PinWeights, pb.PinWeightsRequest(service=API, geo="na-east",
                                                                 weights={"us-west-2": 1000}, reason="x"),
                             metadata=md)
        assert err.code() == grpc.StatusCode.FAILED_PRECONDITION and err.details().startswith("refused by hard_limit:")
        assert "us-west-2 would be planned at" in err.details() and "capacity 8000" in err.details()
        assert "hard limit 100%" in err.details()
        assert (await store.get_overrides()).pins == ()

        # steerctl: the same refusal is exit 1 and one line; --json carries the code and the preview.
        rc, out, err_text = await steerctl("pin", API, "na-east", "us-west-2=1", "--reason", "x", "--yes", env=env)
        assert rc == 1 and "hard_limit" in err_text and len(err_text.strip().splitlines()) == 1, err_text
        rc, out, _ = await steerctl("pin", API, "na-east", "us-west-2=1", "--reason", "x", "--yes", "--json",
                                    env=env)
        data = json.loads(out)
        assert rc == 1 and data["error"]["code"] == "FAILED_PRECONDITION" and data["preview"]["regions"]
        rc, _, err_text = await steerctl("pin", API, "europe", "oc-lon-1=1", "--reason", "x", "--yes", "--force",
                                         env=env)
        assert rc == 1 and "no_answers" in err_text
        # Forced past the limit: accepted, with the warning on stderr, audited as forced.
        rc, out, err_text = await steerctl("pin", API, "na-east", "us-west-2=1", "--reason", "drill", "--yes",
                                           "--force", env=env)
        assert rc == 0 and "forced past hard_limit" in err_text and "accepted" in out, (out, err_text)
        audit = await store.list_audit()
        assert [(a["action"], a["forced"]) for a in audit] == [("pin", True)]
    finally:
        await ch.close()
        await store.close()
        await run.stop()
