"""`Status` says why a site does not serve and when it was last heard from, without a write per report.

Real gRPC and a real etcd: agents report to replica c1; c2 has none, so it
answers from the health records (the latest change) while c1 answers from
its own memory (exact).
"""

from __future__ import annotations

import json
import time

from steering.etcdproc import EtcdCluster
from steering.model import Check
from steering.store import Store
from steering.v1 import steering_pb2 as pb
from tests.support import eventually
from tests.support.cli import steerctl
from tests.support.controller import make_config, start_controller, stubs


def _site(resp: pb.StatusResponse, site: str) -> pb.SiteHealth:
    return next(s for s in resp.sites if s.site == site)


def _t(ts: object) -> float:
    return ts.ToNanoseconds() / 1e9  # type: ignore[attr-defined]


async def test_status_shows_failing_checks_and_last_heard(etcd: EtcdCluster) -> None:
    config = make_config(etcd.endpoints)
    run = await start_controller(config)
    other = await start_controller(config, name="c2", agents=False, lead=False)
    store = Store(config.etcd)
    await store.open()
    ch1, op1, _, md = stubs(run.target)
    ch2, op2, _, _ = stubs(other.target)
    try:
        eu = run.agents["eu-west-1"]
        t_set = time.time()
        eu.set(status=pb.HEALTH_STATUS_UNHEALTHY,
               checks=[pb.CheckResult(name="web", kind="http", ok=False, detail="status 503"),
                       pb.CheckResult(name="db", kind="tcp", ok=True)])

        async def eu_unhealthy() -> bool:
            t = await store.get_table()
            return t is not None and t.regions["eu-west-1"].health == "unhealthy"

        await eventually(eu_unhealthy, what="eu-west-1 unhealthy in the table")
        # The record carries the failing check (only the failing one), and later reports do not rewrite it.
        key = store.keys.health("eu-west-1@c1")
        record = (await store.get_health())["eu-west-1@c1"]
        assert record.status == "unhealthy" and record.checks == (Check("web", "http", "status 503"),)
        assert record.updated_at >= t_set
        rev = (await store.kv.get(key)).kvs[0].mod_revision
        acks = len(eu.acks)
        await eventually(lambda: len(eu.acks) >= acks + 5, what="five more reports acknowledged")
        assert (await store.kv.get(key)).kvs[0].mod_revision == rev, "a steady report was written to etcd"

        # c1 hears the agent: last_report is its own, newer than the record's change.
        async def local_newer() -> pb.SiteHealth | None:
            s = _site(await op1.Status(pb.StatusRequest(), metadata=md), "eu-west-1")
            return s if _t(s.last_report) > record.updated_at else None

        s1 = await eventually(local_newer, what="c1's last_report to pass the record's time")
        assert s1.status == pb.HEALTH_STATUS_UNHEALTHY and s1.last_report_local and s1.heard_by == "c1"
        assert [(c.name, c.kind, c.ok, c.detail) for c in s1.checks] == [("web", "http", False, "status 503")]
        assert abs(_t(s1.last_change) - record.updated_at) < 1e-6 and "web: status 503" in s1.detail

        # c2 hears nobody: it answers from the record (the latest change) and says so.
        s2 = _site(await op2.Status(pb.StatusRequest()), "eu-west-1")
        assert not s2.last_report_local and s2.heard_by == "c1"
        assert abs(_t(s2.last_report) - record.updated_at) < 1e-6 and s2.last_change == s2.last_report
        assert [(c.name, c.detail) for c in s2.checks] == [("web", "status 503")]
        healthy = _site(await op2.Status(pb.StatusRequest()), "us-east-1")
        assert not healthy.checks and healthy.heard_by == "c1" and healthy.HasField("last_report")

        # A silent site: c1 remembers when it last heard it; c2 can only say it is silent.
        await run.agents["oc-lon-1"].stop()

        async def lon_silent() -> bool:
            t = await store.get_table()
            return t is not None and t.sites["oc-lon-1"].health == "silent"

        await eventually(lon_silent, timeout=15, what="oc-lon-1 silent in the table")
        s1 = _site(await op1.Status(pb.StatusRequest(), metadata=md), "oc-lon-1")
        assert s1.status == pb.HEALTH_STATUS_SILENT and s1.last_report_local and s1.HasField("last_report")
        assert "no report within 6s" in s1.detail and "went silent on c1" in s1.detail and not s1.checks
        s2 = _site(await op2.Status(pb.StatusRequest()), "oc-lon-1")
        assert s2.status == pb.HEALTH_STATUS_SILENT and not s2.HasField("last_report") and not s2.heard_by
        assert s2.detail == "no report within 6s"

        # steerctl: a "why" column for the unhealthy and silent ones; --json with the documented keys.
        rc, out, err = await steerctl("status", env={"STEERCTL_SERVER": run.target})
        assert rc == 0, err
        assert "why" in out and "web (http):" in out and "status 503" in out and "no report within" in out, out
        rc, out, err = await steerctl("status", "--json", env={"STEERCTL_SERVER": other.target})
        assert rc == 0, err
        data = json.loads(out)
        eu_json = next(r for r in data["regions"] if r["region"] == "eu-west-1")
        assert eu_json["checks"] == [{"name": "web", "kind": "http", "detail": "status 503"}]
        assert eu_json["heard_by"] == "c1" and eu_json["last_report_local"] is False
        assert eu_json["last_report"] == eu_json["last_change"] and eu_json["last_report"] >= round(t_set, 3) - 0.001
        lon = next(s for s in data["sites"] if s["site"] == "oc-lon-1")
        assert lon["health"] == "silent" and lon["last_report"] is None and lon["detail"] == "no report within 6s"
        us = next(r for r in data["regions"] if r["region"] == "us-east-1")
        assert us["checks"] == [] and us["detail"] == "" and us["heard_by"] == "c1"
    finally:
        await ch1.close()
        await ch2.close()
        await store.close()
        await other.stop()
        await run.stop()


# ---- the pure parts: combining records with a replica's memory, and the "why" column ----------------


def test_site_why_prefers_the_replicas_own_newer_memory_and_falls_back_to_the_record() -> None:
    from steering.controller.sitestatus import newest_records, site_why
    from steering.model import TargetHealth

    web = Check("web", "http", "status 503")
    records = {"eu@c1": TargetHealth(status="unhealthy", updated_at=10.0, detail="web: status 503", checks=(web,)),
               "eu@c2": TargetHealth(status="healthy", updated_at=5.0)}
    newest = newest_records(records)["eu"]
    assert newest[0] == "c1"
    # Here, newer than the record: exact, with this replica's latest checks.
    w = site_why("unhealthy", newest, (12.0, TargetHealth(status="unhealthy", checks=(web,), detail="x")), "c1", 3)
    assert (w.last_report, w.last_report_local, w.last_change, w.heard_by, w.checks) == (12.0, True, 10.0, "c1", (web,))
    # A stale memory (the agent moved to another replica since): the newer record wins.
    w = site_why("unhealthy", newest, (8.0, TargetHealth(status="healthy")), "c2", 3)
    assert (w.last_report, w.last_report_local, w.checks, w.detail) == (10.0, False, (web,), "web: status 503")
    # Silent: remembered here, or nothing known.
    w = site_why("silent", None, (7.0, None), "c1", 3)
    assert w.last_report == 7.0 and w.last_report_local and w.detail == "no report within 3s (went silent on c1)"
    w = site_why("silent", None, None, "c2", 3)
    assert w.last_report is None and not w.heard_by and w.detail == "no report within 3s"
    assert site_why("unknown", None, None, "c1", 3).detail == "waiting for a first report"


def test_why_column_keeps_the_time_whole_and_is_empty_for_serving_sites() -> None:
    from steering.cli.ops import why

    entry = {"health": "unhealthy", "checks": [{"name": "web", "kind": "http", "detail": "x" * 200}], "detail": "",
             "last_report_local": True, "last_report": 100.0, "last_change": 90.0, "heard_by": "c1"}
    text = why(entry, 100.5, width=60)
    assert len(text) <= 60 and text.endswith("; last heard 0.5s ago") and text.startswith("web (http): xxx")
    remote = {**entry, "last_report_local": False, "checks": [{"name": "web", "kind": "", "detail": "down"}]}
    assert why(remote, 90.0 + 150) == "web: down; changed 2m ago via c1"
    assert why({**entry, "health": "healthy"}, 100.0) == ""


def test_health_records_keep_checks_additively() -> None:
    from steering.model import TargetHealth

    old = {"status": "healthy", "capacity": 100.0, "load": 5.0, "updated_at": 1.0, "detail": ""}
    h = TargetHealth.from_dict(old)
    assert h.checks == () and h.to_dict() == old  # records written before the field read and write back the same
    bad = TargetHealth(status="unhealthy", checks=(Check("web", "http", "status 503"),))
    assert TargetHealth.from_dict(bad.to_dict()) == bad
    # Malformed checks never cost a record its health.
    odd = TargetHealth.from_dict({"status": "unhealthy", "checks": [{"kind": "tcp"}, "junk", 3]})
    assert odd.status == "unhealthy" and odd.checks == (Check("unnamed", "tcp", ""),)
    assert TargetHealth.from_dict({"status": "unhealthy", "checks": "junk"}).checks == ()
