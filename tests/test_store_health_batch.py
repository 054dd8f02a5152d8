"""Health records written in bursts: many transactions at once (``CHUNKS_IN_FLIGHT``), all or an error."""

from __future__ import annotations

import pytest

from steering.etcdproc import EtcdCluster
from steering.model import TargetHealth
from steering.store import Store
from steering.store import health as health_module
from tests.support.store import etcd_cfg


async def test_a_burst_is_written_in_concurrent_transactions(etcd: EtcdCluster,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    in_flight = peak = 0
    original = health_module.HealthRecords._write_chunk

    async def counted(self: health_module.HealthRecords, chunk: list[tuple[str, bytes | None]], ttl: float) -> None:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        try:
            await original(self, chunk, ttl)
        finally:
            in_flight -= 1

    monkeypatch.setattr(health_module.HealthRecords, "_write_chunk", counted)
    async with Store(etcd_cfg(etcd.endpoints)) as store:
        sites = {f"s{i:04d}": TargetHealth(status="healthy", load=float(i)) for i in range(1000)}
        await store.write_health_batch(sites, [], ttl=10, max_ops=50)
        got = await store.get_health()
        assert set(got) == set(sites) and got["s0999"].load == 999.0
        assert len(store.health_lease_ids()) == 1  # every chunk on the one lease
        assert peak == health_module.CHUNKS_IN_FLIGHT
        # Deletes and puts in one batch, across chunks.
        await store.write_health_batch({"s0000": TargetHealth(status="unhealthy")},
                                       [f"s{i:04d}" for i in range(1, 900)], ttl=10, max_ops=50)
        got = await store.get_health()
        assert len(got) == 101 and got["s0000"].status == "unhealthy" and "s0500" not in got


async def test_a_refused_transaction_fails_the_batch_and_the_others_are_written(etcd: EtcdCluster) -> None:
    async with Store(etcd_cfg(etcd.endpoints)) as store:
        sites = {f"s{i:03d}": TargetHealth(status="healthy") for i in range(300)}
        # 129 operations are over etcd's limit of 128 per transaction: the first two chunks are refused.
        with pytest.raises(Exception, match="too many operations"):
            await store.write_health_batch(sites, [], ttl=10, max_ops=129)
        assert set(await store.get_health()) == {f"s{i:03d}" for i in range(258, 300)}
