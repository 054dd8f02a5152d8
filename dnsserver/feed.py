"""Follow the routing table in etcd (``routing/current``) and hand each new one to the server.

The store's watch survives etcd restarts by itself; this loop only guards
against the unexpected (an error escaping the iterator), retrying with a
backoff. While etcd is away nothing changes here: the server keeps
answering from the table it has.
"""

from __future__ import annotations

import asyncio
from typing import Any

from dnsserver.server import DnsServer
from steering import logs

log = logs.get(__name__)


async def follow(store: Any, server: DnsServer, max_backoff: float = 5.0) -> None:
    """Run until cancelled: apply every table ``store.watch_table()`` yields."""
    delay = 0.1
    while True:
        try:
            async for table in store.watch_table():
                delay = 0.1
                log.info("dns.table.received", version=table.version, parent=table.parent_version)
                await server.apply_table(table)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # keep serving the last table whatever the feed does
            log.warning("dns.feed.error", error=f"{type(exc).__name__}: {exc}", retry_in=delay)
        await asyncio.sleep(delay)
        delay = min(max_backoff, delay * 2)
