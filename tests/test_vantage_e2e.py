"""Health from several vantage points, end to end (docs/health.md): real etcd, ``steering controller`` as a
process, the target's own agent and an observer as ``steering agent`` processes probing a real HTTP target.

An observer failing while the local agent says healthy leaves the target in service globally, out of the
observer's geo (per_geo_reachability), and status says "unreachable from ..."; both failing (a majority of
two) takes it out everywhere. A report from an observer for a target it may not observe is refused and
counted; two agents with one agent_id are flagged. Bad observer configuration stops every command at start.
"""

from __future__ import annotations

import json
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml

from steering.etcdproc import EtcdCluster
from steering.store import Store
from steering.table import RoutingTable
from steering.v1 import steering_pb2 as pb
from tests.support import eventually, free_port, stop_process
from tests.support.agent_targets import HttpTarget
from tests.support.cli import steerctl
from tests.support.controller import API, ControllerProcess, make_config, region_share, write_config
from tests.support.paths import STEERING
from tests.support.reporters import SITES, FakeAgent, send_refused

OBSERVERS = [{"id": "probe-na", "geos": ["na-east"], "targets": ["us-east-1"]}]
HEALTH = {"quorum": "majority", "per_geo_reachability": True}


def agent_file(path: Path, controller: str, config: Path, url: str, **fields: Any) -> Path:
    data: dict[str, Any] = {
        "site": "us-east-1", "region": "us-east-1", "kind": "region", "controllers": [controller],
        "interval_seconds": 0.2, "fall": 2, "rise": 2, "initial": "healthy", "steering_config": str(config),
        "probes": [{"name": "frontend", "kind": "http", "url": url, "timeout_seconds": 1}],
        "backoff": {"initial_seconds": 0.1, "max_seconds": 1}, **fields,
    }
    path.write_text(yaml.safe_dump(data))
    return path


class Agents:
    """``steering agent`` processes, each stopped by PID."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, config: Path, name: str) -> subprocess.Popen[bytes]:
        with open(self.tmp_path / f"{name}.log", "wb") as out:
            proc = subprocess.Popen([STEERING, "agent", "--config", str(config)], stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append(proc)
        return proc

    def stop(self) -> None:
        for p in self.procs:
            stop_process(p, 5)


@pytest.fixture
def agents(tmp_path: Path) -> Iterator[Agents]:
    a = Agents(tmp_path)
    try:
        yield a
    finally:
        a.stop()


def metrics(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return r.read().decode()  # type: ignore[no-any-return]


async def test_an_observer_that_cannot_reach_a_region_takes_it_out_of_its_geo_only(
        etcd: EtcdCluster, tmp_path: Path, agents: Agents) -> None:
    target = HttpTarget()
    target.set("/local")
    target.set("/observer")
    config = write_config(tmp_path / "steering.yaml", etcd.endpoints, {"observers": OBSERVERS}, health=HEALTH)
    metrics_port = free_port()
    ctl = ControllerProcess(tmp_path, config, extra=["--metrics-addr", f"127.0.0.1:{metrics_port}"])
    store = Store(make_config(etcd.endpoints).etcd)
    await store.open()
    others = [FakeAgent(ctl.port, r, r, pb.SITE_KIND_REGION) for r in ("us-west-2", "eu-west-1")]
    others += [FakeAgent(ctl.port, s, r, pb.SITE_KIND_CACHE) for s, r in SITES.items()]
    try:
        await ctl.ready()
        for a in others:
            a.start()
        local = agent_file(tmp_path / "local.yaml", ctl.target, config, target.url("/local"), agent_id="east-local",
                           capacity=10000, load=6000)
        observer = agent_file(tmp_path / "observer.yaml", ctl.target, config, target.url("/observer"),
                              agent_id="probe-na", role="observer", geos=["na-east"])
        agents.start(local, "agent-local")
        agents.start(observer, "agent-probe-na")

        async def table_where(ok: Any, what: str) -> RoutingTable:
            async def check() -> RoutingTable | None:
                t = await store.get_table()
                return t if t is not None and ok(t) else None
            return await eventually(check, timeout=30, what=what)  # type: ignore[no-any-return]

        def reporters_heard(t: RoutingTable) -> bool:
            return (t.regions["us-east-1"].health == "healthy" and t.regions["us-west-2"].health == "healthy"
                    and t.services[API].geos["na-east"].weights["us-east-1"] > 0)

        await table_where(reporters_heard, "us-east-1 healthy, na-east's home")
        await eventually(lambda: 'steering_target_reporter_healthy{reporter="probe-na",target="us-east-1"} 1.0'
                         in metrics(metrics_port), timeout=15, what="both reporters heard")

        # The observer can no longer reach it; its own agent still can.
        target.set("/observer", 503, "unreachable")
        # For the reachability reason, not any: on a loaded machine the local agent's reports can stall past the
        # silence timeout for a moment, and then the observer alone counts and calls it unhealthy.
        table = await table_where(lambda t: t.services[API].geos["na-east"].reasons.get("us-east-1")
                                  == "unreachable from na-east: probe-na", "na-east to leave us-east-1")
        na = table.services[API].geos["na-east"]
        assert na.weights["us-east-1"] == 0
        assert sum(na.weights.values()) == 1000 and not na.fail_open
        assert table.regions["us-east-1"].serving and table.regions["us-east-1"].health == "healthy"
        assert table.services[API].geos["south-america"].weights["us-east-1"] > 0, "a geo that reaches it lost it"

        async def east_unreachable() -> dict[str, Any] | None:
            code, out, err = await steerctl("--server", ctl.target, "status", "--json")
            assert code == 0, err
            east: dict[str, Any] = next(r for r in json.loads(out)["regions"] if r["region"] == "us-east-1")
            return east if east["verdict"] == "unreachable from probe-na (na-east)" else None

        east = await eventually(east_unreachable, timeout=30, what="status to say us-east-1 is unreachable from na-east")
        assert east["unreachable_geos"] == ["na-east"]
        seen = {r["reporter"]: r for r in east["reporters"]}
        assert (seen["local"]["status"], seen["local"]["counted"]) == ("healthy", True)
        assert (seen["probe-na"]["status"], seen["probe-na"]["geos"]) == ("unhealthy", ["na-east"])
        assert seen["probe-na"]["last_report_local"] and seen["probe-na"]["last_report"] is not None
        assert "probe-na/frontend" not in json.dumps(east["checks"])  # healthy: no failing checks to show
        code, text, _ = await steerctl("--server", ctl.target, "status")
        assert code == 0 and "reporters" in text and "probe-na" in text and "unreachable from" in text
        scraped = metrics(metrics_port)
        assert 'steering_target_reporter_healthy{reporter="probe-na",target="us-east-1"} 0.0' in scraped
        assert 'steering_target_reporter_healthy{reporter="local",target="us-east-1"} 1.0' in scraped
        assert 'steering_target_unreachable{geo="na-east",target="us-east-1"} 1.0' in scraped

        # An observer reporting a target it may not observe: refused, counted, nothing stored.
        spoof = pb.HealthReport(site="eu-west-1", region="eu-west-1", kind=pb.SITE_KIND_REGION, sequence=1,
                                status=pb.HEALTH_STATUS_UNHEALTHY, agent_id="probe-na", role=pb.AGENT_ROLE_OBSERVER)
        err = await send_refused(ctl.target, [spoof])
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED
        assert err.details() == "site: observer 'probe-na' may not observe 'eu-west-1' (not in its observers[].targets)"
        assert 'steering_reports_rejected_total{reason="observer"} 1.0' in metrics(metrics_port)
        assert not [k for k in await store.get_health() if k.startswith("eu-west-1~")]

        # A second process with the same agent_id: flagged in the log, the metric and status.
        agents.start(observer, "agent-probe-na-twin")
        await eventually(lambda: any(e.get("event") == "two agents report with the same agent_id at once"
                                     and e.get("agent") == "probe-na" for e in ctl.logs()),
                         timeout=15, what="the duplicate agent_id flagged")
        assert "steering_controller_duplicate_agent_ids 1.0" in metrics(metrics_port)
        code, out, _ = await steerctl("--server", ctl.target, "status", "--json")
        east = next(r for r in json.loads(out)["regions"] if r["region"] == "us-east-1")
        assert {r["reporter"]: r["streams"] for r in east["reporters"]}["probe-na"] == 2
        stop_process(agents.procs.pop(), 5)
        await eventually(lambda: "steering_controller_duplicate_agent_ids 0.0" in metrics(metrics_port),
                         timeout=15, what="the flag cleared once the twin stopped")

        # Its own agent fails too: a majority of its two reporters, out everywhere.
        target.set("/local", 503, "down")
        table = await table_where(lambda t: not t.regions["us-east-1"].serving, "us-east-1 out of service")
        assert table.regions["us-east-1"].health == "unhealthy" and region_share(table, "us-east-1") == 0
        assert "2 of 2 reporters" in table.regions["us-east-1"].reason
    finally:
        for a in others:
            await a.stop()
        await store.close()
        ctl.stop()
        target.close()


# ---- bad input: one line naming the field, exit 2, nothing started or stored


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([STEERING, *args], capture_output=True, text=True, timeout=60)


async def test_bad_observer_input_stops_every_command_at_start(etcd: EtcdCluster, tmp_path: Path) -> None:
    bad = write_config(tmp_path / "bad.yaml", etcd.endpoints,
                       {"observers": [{"id": "probe-na", "geos": ["na-east"], "targets": ["mars-1"]}]})
    line = "observers[0].targets[0]: unknown region or site 'mars-1'"
    for cmd in (["config", "check", "--config", str(bad)], ["controller", "--config", str(bad)]):
        done = run(*cmd)
        assert done.returncode == 2 and done.stderr.strip().endswith(line), (cmd, done.stderr)
        assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
    too_many = write_config(tmp_path / "quorum.yaml", etcd.endpoints, {"observers": OBSERVERS},
                            health={"quorum": 3})
    done = run("config", "check", "--config", str(too_many))
    assert done.returncode == 2 and "policy.health.quorum: 3 is more than the 2 reporters configured for " \
                                      "'us-east-1'" in done.stderr

    good = write_config(tmp_path / "good.yaml", etcd.endpoints, {"observers": OBSERVERS}, health=HEALTH)
    elsewhere = agent_file(tmp_path / "elsewhere.yaml", "127.0.0.1:1", good, "http://127.0.0.1:1/", site="eu-west-1",
                           region="eu-west-1", agent_id="probe-na", role="observer", geos=["na-east"])
    done = run("agent", "--config", str(elsewhere))
    assert done.returncode == 2 and "site: observer 'probe-na' may not observe 'eu-west-1'" in done.stderr
    wrong_geo = agent_file(tmp_path / "geo.yaml", "127.0.0.1:1", good, "http://127.0.0.1:1/", agent_id="probe-na",
                           role="observer", geos=["eurpe"])
    for cmd in (["agent", "--config", str(wrong_geo)],
                ["config", "check", "--config", str(good), "--agent", str(wrong_geo)]):
        done = run(*cmd)
        assert done.returncode == 2 and "geos[0]: 'eurpe' is not among the geos" in done.stderr, done.stderr
    assert run("config", "check", "--config", str(good)).stdout.strip() == "ok"

    store = Store(make_config(etcd.endpoints).etcd)
    await store.open()
    try:
        assert await store.get_health() == {} and await store.get_table() is None  # nothing was stored
    finally:
        await store.close()
