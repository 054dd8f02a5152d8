"""Defence in depth: the leader never stops publishing because of one stored record.

A record the planner cannot use (NaN, inf, huge, negative, the wrong type, an unknown region, not even
JSON) is skipped and reported (a table note, a log line naming the key, a metric), and the rest is planned.
Hypothesis feeds arbitrary stored overrides to the planner path; the regression test runs
``steering controller`` as a real process on a real etcd and forces a NaN evacuation into etcd.
"""

from __future__ import annotations

import json
import math
import urllib.request
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from steering.config import TOTAL_WEIGHT, load_config
from steering.controller.leader import Leader
from steering.etcdproc import EtcdCluster
from steering.model import Evacuation, Observed, Overrides, Pin, Restore, TargetHealth
from steering.overridecheck import usable
from steering.planner import plan
from steering.store import Store
from steering.store.store import decode_overrides
from steering.table import RoutingTable
from steering.v1 import steering_pb2 as pb
from tests.support import EXAMPLE_CONFIG, eventually, free_port
from tests.support.cli import steerctl
from tests.support.controller import API, ControllerProcess, refused, region_share, stubs, write_config
from tests.support.reporters import start_agents

CONFIG = load_config(EXAMPLE_CONFIG)
REGIONS = [r.id for r in CONFIG.regions]
TARGETS = REGIONS + [s.id for s in CONFIG.sites]
SERVICES = [s.name for s in CONFIG.services]
GEOS = [g.id for g in CONFIG.geos]

# ---- strategies: records that are right, right at their bounds, or broken in one or two fields

numbers = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10**30, 10**30),
                    st.sampled_from([0, -1, 1e-9, 1e12, 1e308, -0.0, 10**400, 0.25, 30, 1.0]))
scalars = st.one_of(st.none(), st.booleans(), numbers, st.text(max_size=12))
json_values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                             st.dictionaries(st.text(max_size=6), inner, max_size=3)),
                           max_leaves=8)
garbage = st.one_of(numbers, scalars, json_values)

steps = st.one_of(st.floats(0.001, 1.0), st.sampled_from([0.001, 1.0, 0.25]))
intervals = st.one_of(st.floats(0.1, 86400.0), st.sampled_from([0.1, 86400.0, 30.0]))
times = st.one_of(st.floats(0.0, 1e11), st.sampled_from([0.0, 1e11, 1.7e9]))
weights = st.dictionaries(st.sampled_from(TARGETS), st.one_of(st.integers(0, 1_000_000), st.sampled_from([0, 1_000_000])),
                          min_size=1, max_size=4)
FIELDS: dict[str, dict[str, st.SearchStrategy[Any]]] = {
    "evacuations": {"region": st.sampled_from(REGIONS), "mode": st.sampled_from(["now", "ramp"]), "step": steps,
                    "interval": intervals, "started_at": times, "forced": st.booleans(),
                    "reason": st.text(max_size=20), "actor": st.text(max_size=8)},
    "restores": {"region": st.sampled_from(REGIONS), "step": steps, "interval": intervals, "started_at": times,
                 "reason": st.text(max_size=20)},
    "weights": {"service": st.sampled_from(SERVICES), "geo": st.sampled_from(GEOS), "weights": weights,
                "reason": st.text(max_size=20)},
}


@st.composite
def fields(draw: st.DrawFn, kind: str) -> dict[str, Any]:
    """A record of ``kind`` with usable fields, then up to two of them replaced by garbage or removed."""
    spec = FIELDS[kind]
    rec = {name: draw(strategy) for name, strategy in spec.items()}
    for name in draw(st.sets(st.sampled_from(sorted(spec)), max_size=2)):
        if draw(st.booleans()):
            rec[name] = draw(garbage)
        else:
            del rec[name]
    return rec


@st.composite
def stored(draw: st.DrawFn) -> tuple[str, bytes]:
    """(key, value) as etcd could hold it under overrides/: mostly well-formed, sometimes anything at all."""
    kind = draw(st.sampled_from(["evacuations", "restores", "weights", "other"]))
    if kind == "other" or draw(st.integers(0, 9)) == 0:
        return f"overrides/{kind}/{draw(st.text(max_size=10))}", draw(st.one_of(st.binary(max_size=40),
                                                                                garbage.map(lambda v: json.dumps(v).encode())))
    rec = draw(fields(kind))
    where = (f"{rec.get('service')}/{rec.get('geo')}" if kind == "weights" else str(rec.get("region")))
    return f"overrides/{kind}/{where}", json.dumps(rec).encode()  # NaN and Infinity as Python's json writes them


healths = st.dictionaries(st.sampled_from(TARGETS), st.builds(
    TargetHealth, status=st.sampled_from(["healthy", "unhealthy", "silent", "unknown"]),
    capacity=st.one_of(st.none(), st.floats(0, 1e12)), load=st.one_of(st.none(), st.floats(0, 1e12))), max_size=5)
nows = st.one_of(st.floats(0, 1e11), st.sampled_from([0.0, 1e11, 1.7e9]))


def assert_publishable(table: RoutingTable, overrides: Overrides) -> None:
    assert isinstance(table, RoutingTable)
    for svc in table.services.values():
        for route in svc.geos.values():
            assert sum(route.weights.values()) == TOTAL_WEIGHT and min(route.weights.values()) >= 0
    assert RoutingTable.from_json(table.to_json()).same_routing(table)  # what etcd and the DNS servers read
    skipped = usable(CONFIG, overrides).skipped
    for s in skipped:
        assert s.note() in table.notes, (s, table.notes)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records=st.lists(stored(), max_size=6).map(dict), health=healths, now=nows, chained=st.booleans())
def test_any_stored_overrides_still_plan_a_table(records: dict[str, bytes], health: dict[str, TargetHealth],
                                                  now: float, chained: bool) -> None:
    overrides = decode_overrides(records)  # never raises: what it cannot read is skipped, naming the key
    assert len(overrides.evacuations) + len(overrides.restores) + len(overrides.pins) + len(overrides.skipped) \
        == len(records)
    previous = plan(CONFIG, Observed(health=health), Overrides(), None, now) if chained else None
    table = plan(CONFIG, Observed(health=health), overrides, previous, now)
    assert_publishable(table, overrides)


evacuations = fields("evacuations").map(lambda f: Evacuation(**{"region": None, **f}))
restores = fields("restores").map(lambda f: Restore(**{"region": None, **f}))
pins = fields("weights").map(lambda f: Pin(**{"service": None, "geo": None, "weights": None, **f}))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(evacs=st.lists(evacuations, max_size=4), rests=st.lists(restores, max_size=3), ps=st.lists(pins, max_size=3),
       health=healths, now=nows)
def test_any_override_objects_still_plan_a_table(evacs: list[Evacuation], rests: list[Restore], ps: list[Pin],
                                                 health: dict[str, TargetHealth], now: float) -> None:
    """Overrides built in code (a state file, a what-if, a bug) bypass ``from_dict``: the planner's intake
    is the second line."""
    overrides = Overrides(evacuations=tuple(evacs), restores=tuple(rests), pins=tuple(ps))
    table = plan(CONFIG, Observed(health=health), overrides, None, now)
    assert_publishable(table, overrides)
    assert usable(CONFIG, usable(CONFIG, overrides)) == usable(CONFIG, overrides)  # idempotent


class _Raises(str):
    """A reason that passes every check (it is a str) but breaks formatting: a stand-in for a failure no
    check foresaw."""

    def __format__(self, spec: str) -> str:
        raise RuntimeError("cannot format this reason")


def test_the_leader_isolates_a_record_the_planner_fails_on_and_plans_the_rest() -> None:
    leader = Leader(CONFIG, store=None, replica="t")
    bad = Pin(service=API, geo="europe", weights={"eu-west-1": 1}, reason=_Raises("x"))
    good = Evacuation(region="us-west-2", mode="now", started_at=1.0, reason="maintenance")
    table, _ = leader._plan({}, Overrides(evacuations=(good,), pins=(bad,)), None, 100.0)
    assert region_share(table, "us-west-2") == 0  # the good record is planned
    assert not table.route(API, "europe").pinned  # type: ignore[union-attr]
    assert any(n.startswith(f"SKIPPED overrides/weights/{API}/europe: the planner fails with it") for n in table.notes)


def _metric(port: int, name: str) -> float | None:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return None


async def test_nan_evacuation_refused_by_the_api_and_skipped_when_forced_into_etcd(etcd: EtcdCluster,
                                                                                  tmp_path: Path) -> None:
    metrics_port = free_port()
    config_path = write_config(tmp_path / "steering.yaml", etcd.endpoints)
    ctl = ControllerProcess(tmp_path, config_path, extra=["--metrics-addr", f"127.0.0.1:{metrics_port}"])
    store = Store(load_config(config_path).etcd)
    await store.open()
    agents: dict[str, Any] = {}
    ch, op, _, md = stubs(ctl.target)
    try:
        await ctl.ready()
        agents = await start_agents(ctl.port)

        async def healthy_table() -> RoutingTable | None:
            t = await store.get_table()
            return t if t is not None and all(st.health == "healthy" for st in t.regions.values()) else None

        t0 = await eventually(healthy_table, timeout=20, what="a table with every region healthy")

        # 1. The API refuses the NaN; nothing is stored.
        err = await refused(op.Evacuate, pb.EvacuateRequest(
            region="eu-west-1", mode=pb.EVACUATION_MODE_RAMP, reason="probe",
            ramp=pb.Ramp(step=0.25, interval_seconds=math.nan)), metadata=md)
        assert err.details().startswith("ramp.interval_seconds: nan is not a finite number"), err.details()
        assert (await store.get_overrides()).evacuations == ()

        # 2. The same record forced into etcd by hand: skipped and reported; the table is still published.
        record = {"region": "eu-west-1", "mode": "ramp", "step": 0.25, "interval": math.nan,
                  "started_at": 1.7e9, "reason": "forced by hand"}
        await store.kv.put(store.keys.evacuation("eu-west-1"), json.dumps(record).encode())
        note = "SKIPPED overrides/evacuations/eu-west-1: interval: nan is not a finite number"

        async def noted() -> RoutingTable | None:
            t = await store.get_table()
            return t if t is not None and t.version > t0.version and any(n.startswith(note) for n in t.notes) else None

        t1 = await eventually(noted, timeout=15, what="a new table noting the skipped record")
        assert region_share(t1, "eu-west-1") > 0  # the unusable evacuation is not applied

        # 3. The leader keeps planning everything else: a valid evacuation lands in a newer table.
        await op.Evacuate(pb.EvacuateRequest(region="us-west-2", mode=pb.EVACUATION_MODE_NOW, reason="maint"),
                          metadata=md)

        async def evacuated() -> bool:
            t = await store.get_table()
            return t is not None and t.version > t1.version and region_share(t, "us-west-2") == 0

        await eventually(evacuated, timeout=15, what="us-west-2 evacuated while the bad record stays")

        # 4. Reported: steerctl status shows it, a log line names the key, the metric counts it once.
        env = {"STEERCTL_SERVER": ctl.target}
        rc, out, err_text = await steerctl("status", env=env)
        assert rc == 0 and note in " ".join(out.split()), (out, err_text)
        skipped_logs = [e for e in ctl.logs() if e.get("event", "").startswith("override record skipped")]
        assert [e["key"] for e in skipped_logs] == ["overrides/evacuations/eu-west-1"], skipped_logs
        assert skipped_logs[0]["kind"] == "evacuation" and "nan" in skipped_logs[0]["problem"]
        assert _metric(metrics_port, 'steering_controller_skipped_records_total{kind="evacuation"}') == 1.0
        # The daemon's collector policy is on (steering.controller.gcpolicy): its start-up collection was timed.
        assert (_metric(metrics_port, 'steering_gc_seconds_total{generation="2"}') or 0.0) > 0.0
        assert not any("leader loop failed" in e.get("event", "") for e in ctl.logs())

        # 5. The operator can remove it with a restore; the note goes with it.
        rc, out, err_text = await steerctl("restore", "eu-west-1", "--now", "--yes", env=env)
        assert rc == 0 and "done: routing table" in out, (out, err_text)
        assert all(s.key != "overrides/evacuations/eu-west-1" for s in (await store.get_overrides()).skipped)
        t = await store.get_table()
        assert t is not None and not any(n.startswith("SKIPPED") for n in t.notes)
    finally:
        for a in agents.values():
            await a.stop()
        await ch.close()
        await store.close()
        ctl.stop()
