"""The leader drives Route 53: a controller on a real etcd with moto's Route 53 behind real HTTP.

Agents stream health; an evacuation written to etcd makes the leader publish a
table, and the sink (running only on the leader) brings Route 53 to it; the
sync result is shared through etcd for every replica's status.
"""

from __future__ import annotations

import json
from typing import Any

from test_controller import REGIONS, eventually, make_config, start_agents
from test_route53_moto import Env, moto  # noqa: F401  (the moto fixture)

from steering.config import parse_config
from steering.controller.server import Controller
from steering.model import Evacuation
from steering.store import Store
from steering.testing import EXAMPLE_CONFIG
from steering.testing.etcd import EtcdCluster


async def test_leader_syncs_route53_and_evacuation_zeroes_the_region(etcd: EtcdCluster, moto: Any) -> None:  # noqa: F811
    env = Env(moto)
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
        finally:
            for a in agents.values():
                await a.stop()
            await ctl.stop()
            await store.close()
    finally:
        env.proxy.stop()
