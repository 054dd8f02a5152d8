"""The store fails over from a member whose packets vanish (the lab's cut region), without root.

One etcd member, reached by two paths: directly, and through ``tests.support.blackhole`` (a loopback proxy
that, once silenced, accepts and reads everything and answers nothing, never closing: no RST, no TCP
timeout). The client balances over both, so some of its watches and calls sit on the silent path. Before
the fix a watch there heard nothing for 60 to 70 s (gRPC waited a minute for the ack of its flow-control
ping and skipped keepalive meanwhile) and every read paid a timed-out attempt (docs/lab.md, Findings).
Now a quiet watch asks for a progress report and is re-created elsewhere when none comes, and gRPC drops a
connection whose pings go unanswered within ``KEEPALIVE_TIMEOUT_SECONDS``.
"""

from __future__ import annotations

import asyncio
import functools

from steering.etcdproc import EtcdCluster
from steering.model import TargetHealth
from steering.store import Store, StoreUnavailable
from steering.store.watch import QUIET_SECONDS
from tests.support import eventually
from tests.support.blackhole import Blackhole
from tests.support.store import Follower, etcd_cfg, make_table

TIMEOUT = 2.0  # etcd.timeout_seconds of the store under test: its calls' and its watches' bound
WATCHES = 8  # over two paths: the chance that none is on the silent one is 1 in 256
# A watch on the silent path is found within QUIET_SECONDS + TIMEOUT and re-created; the re-created one may
# land on the silent path again (round robin), until gRPC drops that connection (keepalive 10 s + 5 s).
BOUND = QUIET_SECONDS + 2 * TIMEOUT + 15.0


async def _put_and_read(store: Store, version: int) -> bool:
    await store.put_table(make_table(version))
    got = await store.get_table()
    return got is not None and got.version == version


async def test_watches_reads_and_writes_go_around_a_silent_member(etcd: EtcdCluster) -> None:
    host, port = etcd.endpoints[0].rsplit(":", 1)
    hole = Blackhole((host, int(port)))
    await hole.start()
    try:
        async with Store(etcd_cfg([hole.endpoint, etcd.endpoints[0]], timeout=TIMEOUT)) as store, \
                Store(etcd_cfg(etcd.endpoints)) as writer:
            await writer.put_table(make_table(1))
            tables = [Follower(store.watch_table()) for _ in range(WATCHES)]
            health = Follower(store.watch_health())
            for t in tables:
                await t.wait_for(lambda t: t.version == 1, what="v1")
            await health.wait_for(lambda h: h == {}, what="no health yet")

            hole.silence()
            # One bound for all that follows (not one per wait: those would add up).
            async with asyncio.timeout(BOUND):
                await writer.put_table(make_table(2))
                await writer.put_health("site-a", TargetHealth(status="unhealthy"), ttl=30)
                # Every watch hears both changes, those that were on the silent path too.
                for t in tables:
                    await t.wait_for(lambda t: t.version == 2, what="v2 through every watch", timeout=BOUND)
                await health.wait_for(lambda h: "site-a" in h, what="the health change", timeout=BOUND)
                # Reads and writes keep working. A call that tries the silent path gives up on it within a third
                # of its budget and retries; one whose tries all went there fails (StoreUnavailable) and the
                # caller retries, as the leader does, until gRPC has dropped the silent connection.
                for v in (3, 4, 5):
                    await eventually(functools.partial(_put_and_read, store, v), timeout=BOUND,
                                     what=f"v{v} written and read", ignoring=(StoreUnavailable,))
            # And the path really was silent: the client sent into it and heard nothing.
            await eventually(lambda: hole.swallowed > 0, what="bytes sent into the silent path")
            for t in (*tables, health):
                t.task.cancel()
    finally:
        await hole.close()
