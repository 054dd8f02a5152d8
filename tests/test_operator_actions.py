"""The operator actions as pure change sets (steering/controller/actions.py): no etcd, no gRPC.

Examples pin each action's writes, audit and refusals on the example config;
Hypothesis properties hold for any config, live state and request: a refused
decision writes nothing, every key comes from ``steering.store.keys`` and is
one the store accepts, and the same inputs give the same decision.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from steering.config import Config
from steering.controller import actions, safety
from steering.model import Evacuation, Overrides, Pin, Restore, Skipped, TargetHealth
from steering.store import keys
from steering.store.oplog import check_change_keys
from steering.table import RampProgress
from tests.support.controller import make_config
from tests.support.strategies import configs, live_health, override_sets

CONFIG = make_config(["127.0.0.1:2379"])
API = "api.example.test."
VIDEO = "video.example.test."
T0 = 1_700_000_000.0
HEALTHY = {r: TargetHealth(status="healthy", capacity=c, load=1000.0)
           for r, c in (("us-east-1", 10000.0), ("us-west-2", 8000.0), ("eu-west-1", 8000.0),
                        ("oc-nyc-1", 4000.0), ("oc-lon-1", 3000.0))}
SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


NONE = Overrides()


def live(overrides: Overrides = NONE, health: dict[str, TargetHealth] | None = None,
         sequence: int = 7) -> actions.Live:
    return actions.Live(dict(HEALTHY if health is None else health), overrides, sequence, T0)


def evacuate(region: str = "eu-west-1", mode: actions.Mode = "now", force: bool = False) -> actions.EvacuateRequest:
    return actions.EvacuateRequest(region=region, mode=mode, step=0.25 if mode == "ramp" else 1.0, interval=30.0,
                                   reason="kernel upgrade", actor="alice", request_id="req-1", force=force)


def restore(region: str = "eu-west-1", mode: actions.Mode = "ramp") -> actions.RestoreRequest:
    return actions.RestoreRequest(region=region, mode=mode, step=0.5, interval=10.0, reason="done", actor="bob")


def record(changes: actions.Changes, key: str) -> dict[str, Any]:
    data = json.loads(changes.puts[key])
    assert isinstance(data, dict)
    return data


# ---------------------------------------------------------------------- examples


def test_evacuate_writes_the_record_and_an_audit_with_the_preview() -> None:
    d = actions.decide_evacuate(CONFIG, evacuate(mode="ramp"), live())
    assert not d.refused and d.changes is not None and d.preview is not None and d.warnings == ()
    key = keys.evacuation_path("eu-west-1")
    assert list(d.changes.puts) == [key] and d.changes.deletes == ()
    evac = Evacuation.from_dict(record(d.changes, key))
    assert (evac.region, evac.mode, evac.step, evac.started_at, evac.actor, evac.request_id, evac.forced) == (
        "eu-west-1", "ramp", 0.25, T0, "alice", "req-1", False)
    audit = d.changes.audit
    assert audit["action"] == "evacuate" and audit["actor"] == "alice" and audit["forced"] is False
    assert "eu-west-1" in audit["before"] and "eu-west-1 out (evacuated)" in audit["after"]
    assert audit["details"] == {"mode": "ramp", "step": 0.25, "interval": 30.0, "warnings": []}
    europe = [c for c in d.preview.changes if (c.service, c.geo) == (API, "europe")]
    assert europe and europe[0].before["eu-west-1"] == 1000 and europe[0].after["eu-west-1"] == 0


def test_evacuate_refusal_names_the_rule_keeps_the_preview_and_force_passes_it() -> None:
    strict = make_config(["127.0.0.1:2379"], min_serving_regions=3)
    d = actions.decide_evacuate(strict, evacuate("us-west-2"), live())
    assert d.refused and d.changes is None and d.preview is not None
    assert d.message.startswith("refused by min_serving_regions: ") and "at least 3" in d.message
    forced = actions.decide_evacuate(strict, evacuate("us-west-2", force=True), live())
    assert not forced.refused and forced.changes is not None
    assert [w.split(":")[0] for w in forced.warnings] == ["forced past min_serving_regions"]
    assert forced.changes.audit["forced"] is True and forced.changes.audit["details"]["warnings"] == list(forced.warnings)
    assert Evacuation.from_dict(record(forced.changes, keys.evacuation_path("us-west-2"))).forced


def test_evacuate_replaces_a_restore_record_usable_or_not_and_warns_about_a_dead_region() -> None:
    ramping = Overrides(restores=(Restore(region="eu-west-1", step=0.25, started_at=T0 - 1000),))
    unreadable = Overrides(skipped=(Skipped(keys.restore_path("eu-west-1"), "restore", "bad"),))
    for overrides in (ramping, unreadable):
        d = actions.decide_evacuate(CONFIG, evacuate(), live(overrides))
        assert d.changes is not None and d.changes.deletes == (keys.restore_path("eu-west-1"),), d.message
    down = {**HEALTHY, "eu-west-1": TargetHealth(status="unhealthy", capacity=0.0)}
    d = actions.decide_evacuate(CONFIG, evacuate(), live(health=down))
    assert d.warnings == ("eu-west-1 is unhealthy: it already receives no traffic",)


def test_restore_ramp_now_and_refusals() -> None:
    evacuated = Overrides(evacuations=(Evacuation(region="eu-west-1", started_at=T0 - 100),))
    d = actions.decide_restore(CONFIG, restore(), live(evacuated))
    assert d.changes is not None and d.changes.deletes == (keys.evacuation_path("eu-west-1"),)
    r = Restore.from_dict(record(d.changes, keys.restore_path("eu-west-1")))
    assert (r.step, r.interval, r.started_at, r.actor) == (0.5, 10.0, T0, "bob")
    assert d.changes.audit["details"] == {"mode": "ramp", "step": 0.5, "interval": 10.0,
                                          "removed_unusable_record": False}
    now = actions.decide_restore(CONFIG, restore(mode="now"), live(evacuated))
    assert now.changes is not None and now.changes.puts == {}

    nothing = actions.decide_restore(CONFIG, restore(), live())
    assert nothing.refused and nothing.preview is None and nothing.changes is None
    assert nothing.message == "refused by not_evacuated: eu-west-1 has no evacuation to restore"
    other = Overrides(evacuations=(Evacuation(region="us-west-2", mode="ramp", step=0.1, started_at=T0),))
    busy = actions.decide_restore(CONFIG, restore(), live(other))
    assert busy.message.startswith("refused by conflicting_evacuation: us-west-2 is still ramping out")


def test_conflicts_go_by_the_tables_ramp_progress_not_this_replicas_clock() -> None:
    """A replica whose clock is far off judges a ramp under way by the steps the table shows it took."""
    ramp = Evacuation(region="us-west-2", mode="ramp", step=0.25, interval=30.0, started_at=T0)
    other = Overrides(evacuations=(ramp,))
    ahead = T0 + 3600  # by this replica's clock the ramp ended an hour ago
    assert safety.check_conflicts(other, "eu-west-1", ahead) is None  # no progress known: the record's clock
    shown = {"us-west-2": RampProgress("evacuation", T0, steps=2)}  # the table: two of four steps taken
    busy = safety.check_conflicts(other, "eu-west-1", ahead, ramps=shown)
    assert busy is not None and busy.message.startswith("us-west-2 is still ramping out"), busy
    assert "50% left" in busy.message
    done = {"us-west-2": RampProgress("evacuation", T0, steps=4)}  # the table: done, whatever this clock says
    assert safety.check_conflicts(other, "eu-west-1", T0 - 3600, ramps=done) is None
    earlier = {"us-west-2": RampProgress("evacuation", T0 - 99, steps=1)}  # an earlier ramp's progress
    assert safety.check_conflicts(other, "eu-west-1", ahead, ramps=earlier) is None
    refused = actions.decide_evacuate(CONFIG, evacuate(), dataclasses.replace(live(other), now=ahead, ramps=shown))
    assert refused.message.startswith("refused by conflicting_evacuation: us-west-2 is still ramping out")

    restoring = Overrides(restores=(Restore(region="eu-west-1", step=0.5, interval=10.0, started_at=T0),))
    late = dataclasses.replace(live(restoring), now=T0 + 3600,
                               ramps={"eu-west-1": RampProgress("restore", T0, steps=1)})
    again = actions.decide_restore(CONFIG, restore(), late)
    assert again.message == "refused by conflicting_evacuation: eu-west-1 is being restored (50% back); " \
                            "wait for it to finish", again.message


def test_restoring_an_unusable_evacuation_record_removes_it_at_once() -> None:
    skipped = Overrides(skipped=(Skipped(keys.evacuation_path("eu-west-1"), "evacuation", "mode: 'soon'"),),
                        restores=(Restore(region="eu-west-1"),))
    d = actions.decide_restore(CONFIG, restore(mode="ramp"), live(skipped))
    assert d.changes is not None and d.changes.puts == {}
    assert d.changes.deletes == (keys.evacuation_path("eu-west-1"), keys.restore_path("eu-west-1"))
    assert d.changes.audit["details"]["mode"] == "now" and d.changes.audit["details"]["removed_unusable_record"]


def test_pin_normalises_in_candidate_order_and_refuses_what_the_planner_would_ignore() -> None:
    ask = actions.PinRequest(service=API, geo="europe", weights={"us-east-1": 1, "eu-west-1": 3}, reason="test",
                             actor="carol")
    d = actions.decide_pin(CONFIG, ask, live())
    assert d.changes is not None and not d.refused
    pin = Pin.from_dict(record(d.changes, keys.pin_path(API, "europe")))
    assert list(pin.weights.items()) == [("eu-west-1", 750), ("us-east-1", 250)]  # the geo's preference order
    assert d.changes.audit["details"] == {"weights": {"eu-west-1": 750, "us-east-1": 250}, "warnings": []}
    for weights, rule in (({"oc-lon-1": 1}, "no_answers"), ({"us-east-1": 1}, None)):
        got = actions.pin_target_refusal(CONFIG, actions.PinRequest(API, "europe", weights, "x", "carol"))
        assert (got.rule if got else None) == rule
    site_geo = actions.PinRequest(VIDEO, "asia-pacific", {"oc-lon-1": 1}, "x", "carol", force=True)
    refused = actions.decide_pin(CONFIG, site_geo, live())
    assert refused.refused and refused.changes is None and "not_a_candidate" in refused.message  # force or not


def test_pin_on_a_dead_target_is_refused_unless_forced() -> None:
    down = {**HEALTHY, "us-east-1": TargetHealth(status="silent")}
    ask = actions.PinRequest(API, "europe", {"us-east-1": 1}, "x", "carol")
    d = actions.decide_pin(CONFIG, ask, live(health=down))
    assert d.refused and d.preview is not None and d.message.startswith("refused by cannot_serve: ")
    forced = actions.decide_pin(CONFIG, actions.PinRequest(API, "europe", {"us-east-1": 1}, "x", "carol", True),
                                live(health=down))
    assert forced.changes is not None and forced.warnings[0].startswith("forced past cannot_serve: ")


def test_unpin_deletes_the_pin_or_an_unusable_one_and_refuses_when_nothing_is_pinned() -> None:
    ask = actions.UnpinRequest(API, "europe", "unpin", "dave")
    pinned = Overrides(pins=(Pin(API, "europe", {"us-east-1": 1000}),))
    unusable = Overrides(skipped=(Skipped(keys.pin_path(API, "europe"), "pin", "weights: all zero"),))
    for overrides in (pinned, unusable):
        d = actions.decide_unpin(CONFIG, ask, live(overrides))
        assert d.changes is not None and d.changes.puts == {} and d.changes.deletes == (keys.pin_path(API, "europe"),)
        assert d.changes.audit["action"] == "unpin" and d.changes.audit["actor"] == "dave"
    d = actions.decide_unpin(CONFIG, ask, live())
    assert d.message == f"refused by not_pinned: {API} europe has no pin" and d.changes is None


def test_what_if_combines_overrides_and_health() -> None:
    p = actions.what_if(CONFIG, live(), [("eu-west-1", "drill")], [], {})
    assert not p.after.regions["eu-west-1"].serving and p.after.regions["eu-west-1"].evacuation == "now forced"
    both = actions.what_if(CONFIG, live(), [], [], {"us-west-2": False})
    assert not both.after.regions["us-west-2"].serving and both.before.regions["us-west-2"].serving
    assert any(c.geo == "na-west" for c in both.changes)


# ---------------------------------------------------------------------- properties


def _allowed_keys(config: Config) -> set[str]:
    out = {keys.evacuation_path(r.id) for r in config.regions} | {keys.restore_path(r.id) for r in config.regions}
    return out | {keys.pin_path(s.name, g.id) for s in config.services for g in config.geos}


@st.composite
def cases(draw: st.DrawFn) -> tuple[Config, actions.Live, Any, str]:
    config = draw(configs())
    state = actions.Live(draw(live_health(config)), draw(override_sets(config)), draw(st.integers(0, 99)),
                         draw(st.sampled_from([0.0, 45.0, 100.0])))
    region = draw(st.sampled_from([r.id for r in config.regions]))
    service = draw(st.sampled_from(config.services)).name
    geo = draw(st.sampled_from(config.geos)).id
    mode: actions.Mode = draw(st.sampled_from(["now", "ramp"]))
    force = draw(st.booleans())
    kind = draw(st.sampled_from(["evacuate", "restore", "pin", "unpin"]))
    if kind == "evacuate":
        req: Any = actions.EvacuateRequest(region, mode, 0.25, 30.0, "r", "a", "id", force)
    elif kind == "restore":
        req = actions.RestoreRequest(region, mode, 0.5, 30.0, "r", "a")
    elif kind == "pin":
        targets = sorted({r.id for r in config.regions} | {s.id for s in config.sites})
        chosen = draw(st.lists(st.sampled_from(targets), unique=True, min_size=1, max_size=3))
        weights = {t: draw(st.integers(0, 5)) for t in chosen}
        weights[chosen[0]] += 1
        req = actions.PinRequest(service, geo, weights, "r", "a", force)
    else:
        req = actions.UnpinRequest(service, geo, "r", "a")
    return config, state, req, kind


DECIDE: dict[str, Any] = {"evacuate": actions.decide_evacuate, "restore": actions.decide_restore,
                          "pin": actions.decide_pin, "unpin": actions.decide_unpin}


@SETTINGS
@given(cases())
def test_a_decision_refuses_or_writes_keys_from_keys_py_never_both(case: tuple[Config, actions.Live, Any, str]) -> None:
    config, state, req, kind = case
    d = DECIDE[kind](config, req, state)
    assert d.action == kind
    if d.refused:
        assert d.changes is None, "a refused action must write nothing"
        assert d.message.startswith("refused by ") and all(r.rule and r.message for r in d.refusals)
        return
    assert d.changes is not None and d.preview is not None
    touched = [*d.changes.puts, *d.changes.deletes]
    assert touched and set(touched) <= _allowed_keys(config), touched
    check_change_keys(d.changes.puts, list(d.changes.deletes))  # what the store would refuse, it never gets
    assert len(set(touched)) == len(touched)
    audit = d.changes.audit
    assert audit["action"] == kind and audit["actor"] == "a" and isinstance(audit["forced"], bool)
    assert json.loads(json.dumps(audit)) == audit  # the store writes it as JSON
    if d.warnings:
        assert getattr(req, "force", False) or kind == "evacuate"
    assert DECIDE[kind](config, req, state) == d, "same inputs, same decision"


@SETTINGS
@given(cases())
def test_unforced_actions_never_carry_forced_warnings(case: tuple[Config, actions.Live, Any, str]) -> None:
    config, state, req, kind = case
    if hasattr(req, "force"):
        req = type(req)(**{**req.__dict__, "force": False})
    d = DECIDE[kind](config, req, state)
    assert not any(w.startswith("forced past") for w in d.warnings)
    if d.changes is not None:
        assert d.changes.audit["forced"] is False


@given(st.text(alphabet=st.characters(blacklist_categories=["Cs"]), min_size=1, max_size=20),
       st.sampled_from(["/steering/v1", "/p/"]))
def test_relative_paths_are_the_store_keys_under_the_prefix(name: str, prefix: str) -> None:
    full = keys.Keys(prefix)
    try:
        expected = keys.evacuation_path(name)
    except ValueError:
        return  # not a key component: both refuse it
    under = full.prefix.encode() + b"/"
    assert full.evacuation(name) == under + expected.encode()
    assert full.restore(name) == under + keys.restore_path(name).encode()
    assert full.pin(name, name) == under + keys.pin_path(name, name).encode()
    assert full.strip(full.evacuation(name)) == expected
