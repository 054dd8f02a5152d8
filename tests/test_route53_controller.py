"""The leader drives Route 53: a controller on a real etcd with moto's Route 53 behind real HTTP.

Agents stream health; an evacuation written to etcd makes the leader publish a
table, and the sink (running only on the leader) brings Route 53 to it; the
sync result is shared through etcd for every replica's status.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path
from typing import Any

import yaml

from steering.config import parse_config
from steering.controller.server import Controller
from steering.etcdproc import EtcdCluster
from steering.model import Evacuation
from steering.store import Store
from tests.support import EXAMPLE_CONFIG, eventually
from tests.support.controller import make_config
from tests.support.paths import STEERCTL
from tests.support.reporters import REGIONS, start_agents
from tests.support.route53 import MotoRoute53, Route53Env


async def test_leader_syncs_route53_and_evacuation_zeroes_the_region(etcd: EtcdCluster, moto: MotoRoute53,
                                                                     tmp_path: Path) -> None:
    env = Route53Env(moto)
    try:
        base = make_config(etcd.endpoints)
        data = base.model_dump(mode="json", exclude_none=True)
        data["route53"] = {"hosted_zone_id": env.zone_id, "endpoint_url": env.proxy.url,
                           "max_requests_per_second": 500, "sync_interval": 30}
        config = parse_config(data, "test", EXAMPLE_CONFIG.parent)
        store = Store(config.etcd)
        await store.open()
        ctl = Controller(config, "c1", "127.0.0.1:0")
        port = await ctl.start()
        agents = await start_agents(port)
        try:
            def weights(region: str) -> list[int]:
                return [r.weight for k, r in env.records().items()
                        if r.set_id == region and r.weight is not None and r.type == "A"]

            async def synced_healthy() -> bool:
                t = await store.get_table()
                return (t is not None and all(t.regions[r].health == "healthy" for r in REGIONS)
                        and any(w > 0 for w in weights("us-east-1")))

            await eventually(synced_healthy, timeout=20, what="Route 53 records for the healthy table")
            await store.put_evacuation(Evacuation(region="us-east-1", mode="now", reason="test", started_at=0))

            def evacuated() -> bool:
                w = weights("us-east-1")
                return bool(w) and all(x == 0 for x in w)

            await eventually(evacuated, timeout=20, what="us-east-1 weight 0 in every geo in Route 53")

            async def shared_status() -> dict[str, Any] | None:
                status = json.loads(await store.get_status("route53") or b"{}")
                return status if status.get("table_version", 0) >= 2 else None

            status = await eventually(shared_status, what="the sync result shared through etcd")
            assert status.get("error") in (None, ""), status
            await store.delete_evacuation("us-east-1")
            await eventually(lambda: any(w > 0 for w in weights("us-east-1")), timeout=20,
                             what="us-east-1 back in Route 53")

            # steerctl route53 plan: in sync, nothing to do; after someone edits our record, the repair.
            cfg_file = tmp_path / "steering.yaml"
            cfg_file.write_text(yaml.safe_dump({**data, "zones": [
                {**z, "file": str(EXAMPLE_CONFIG.parent / z["file"])} if z.get("file") else z
                for z in data["zones"]]}))

            async def plan_json() -> dict[str, Any]:
                proc = await asyncio.to_thread(
                    subprocess.run, [STEERCTL, "route53", "plan", "--config", str(cfg_file),
                                     "--server", f"127.0.0.1:{port}", "--json"],
                    capture_output=True, text=True, timeout=60)
                assert proc.returncode == 0, proc.stderr
                return json.loads(proc.stdout)

            async def in_sync() -> bool:
                return sum((await plan_json())["counts"].values()) == 0

            await eventually(in_sync, timeout=20, what="steerctl route53 plan to show no changes")
            rec = next(r for r in env.records().values() if r.set_id == "us-west-2" and r.type == "A")
            env.change({"Action": "UPSERT", "ResourceRecordSet": {**rec.to_api(), "Weight": 7}})
            drift = await plan_json()
            assert drift["counts"]["UPSERT"] == 1, drift["counts"]
            assert [c["set_identifier"] for b in drift["batches"] for c in b] == ["us-west-2"]
            assert weights("us-west-2").count(7) == 1, "plan must not apply anything"
        finally:
            for a in agents.values():
                await a.stop()
            await ctl.stop()
            await store.close()
    finally:
        env.close()
