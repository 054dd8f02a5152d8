"""Follow the routing table in etcd (``routing/current``) and hand each new one to the server.

The store's watch survives etcd restarts by itself; this loop only guards
against the unexpected (an error escaping the iterator), retrying with a
backoff. While etcd is away nothing changes here: the server keeps
answering from the table it has.

The watch says nothing when etcd goes away (it retries quietly), so a probe
beside it tells the server whether the control plane is reachable: one
small linearizable read (the leader key) every ``probe_seconds``, judged
unreachable only when the store gives up on it (``StoreUnavailable``, after
``etcd.timeout_seconds``: no member or no quorum); a refusal (permissions)
still proves etcd is there. The server uses it to mark answers from an old
table stale (Extended DNS Error 3).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from dnsserver.server import DnsServer
from steering import logs
from steering.store import StoreError, StoreUnavailable

log = logs.get(__name__)

PROBE_SECONDS = 1.0


async def follow(store: Any, server: DnsServer, max_backoff: float | None = None,
                 probe_seconds: float = PROBE_SECONDS) -> None:
    """Run until cancelled: apply every table ``store.watch_table()`` yields; probe reachability beside it.

    ``max_backoff`` defaults to ``etcd.reconnect_max_seconds``, the store's own bound."""
    probe = asyncio.create_task(watch_reachability(store, server, probe_seconds), name="dns-etcd-probe")
    try:
        await _follow_tables(store, server, store.cfg.reconnect_max_seconds if max_backoff is None else max_backoff)
    finally:
        probe.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await probe


async def _follow_tables(store: Any, server: DnsServer, max_backoff: float) -> None:
    delay = 0.1
    while True:
        try:
            async for table in store.watch_table():
                delay = 0.1
                log.info("dns.table.received", version=table.version, parent=table.parent_version)
                server.set_control_plane_reachable(True)  # it just answered
                await server.apply_table(table)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # keep serving the last table whatever the feed does
            log.warning("dns.feed.error", error=f"{type(exc).__name__}: {exc}", retry_in=delay)
        await asyncio.sleep(delay)
        delay = min(max_backoff, delay * 2)


async def probe_once(store: Any) -> bool:
    """Whether etcd answers one read (a refusal counts as an answer)."""
    try:
        await store.leader()
    except StoreUnavailable:
        return False
    except StoreError:
        return True
    return True


async def watch_reachability(store: Any, server: DnsServer, every: float = PROBE_SECONDS) -> None:
    """Tell the server after every probe (it re-judges staleness then); log only the changes."""
    last: bool | None = None
    while True:
        try:
            reachable = await probe_once(store)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the probe must not end on a surprise: count it as unreachable
            log.warning("dns.etcd.probe_error", error=f"{type(exc).__name__}: {exc}")
            reachable = False
        if reachable != last:
            if reachable:
                log.info("dns.etcd.reachable")
            else:
                log.warning("dns.etcd.unreachable")
            last = reachable
        server.set_control_plane_reachable(reachable)
        await asyncio.sleep(every)
