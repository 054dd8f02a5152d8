"""``etcd.endpoints`` as operators write them: addresses of either family, a host name (a Kubernetes service,
say), several names. The channel target is worked out by us (etcd3aio 0.3.0 would build an ``ipv4:`` target
that gRPC refuses for names), then used against a real etcd."""

from __future__ import annotations

import pytest

from steering.etcdproc import EtcdCluster
from steering.store import Store
from steering.store.client import StoreError, literal_target, resolve_target
from tests.support.store import etcd_cfg, make_table


def test_literal_targets() -> None:
    assert literal_target(["10.0.0.1:2379", "10.0.0.2:2380"]) == "ipv4:10.0.0.1:2379,10.0.0.2:2380"
    assert literal_target(["localhost:2379"]) is None  # a name: gRPC's resolver looks it up
    assert literal_target(["[fd00::1]:2379", "[fd00::2]:2379"]) == "ipv6:[fd00::1]:2379,[fd00::2]:2379"
    assert literal_target(["etcd-0.etcd:2379"]) is None
    assert literal_target(["10.0.0.1:2379", "[fd00::1]:2379"]) is None  # one channel, one family


async def test_names_resolve_to_one_family() -> None:
    assert await resolve_target(["etcd.steering.svc:2379"]) == "dns:///etcd.steering.svc:2379"
    # several names (or mixed families): resolved now, to the one family every member has
    assert await resolve_target(["localhost:2379", "127.0.0.1:2380"]) == "ipv4:127.0.0.1:2379,127.0.0.1:2380"
    with pytest.raises(StoreError, match=r"etcd.endpoints: no-such-host.invalid:2379: cannot resolve"):
        await resolve_target(["no-such-host.invalid:2379", "127.0.0.1:2379"])


@pytest.mark.parametrize("form", ["name", "names"])
async def test_a_store_opened_by_host_name_reads_and_writes(etcd: EtcdCluster, form: str) -> None:
    port = etcd.endpoints[0].rsplit(":", 1)[1]
    endpoints = [f"localhost:{port}"] if form == "name" else [f"localhost:{port}", f"127.0.0.1:{port}"]
    store = Store(etcd_cfg(endpoints))
    await store.open()
    try:
        await store.put_table(make_table(version=7))
        got = await store.get_table()
        assert got is not None and got.version == 7
    finally:
        await store.close()
