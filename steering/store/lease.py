"""A lease kept alive in the background, with a ``lost`` event.

Our own loop over the raw LeaseKeepAlive stream, rather than etcd3aio's
``keep_alive_context``, because we must know *when* a lease is gone: the
server says TTL 0 (revoked or expired), or no acknowledgement came back
before the TTL ran out (we are cut off, so we must assume it expired: a
leader that cannot prove its lease is alive must stop acting as one).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable

import grpc.aio
from etcd3aio._protobuf import LeaseKeepAliveRequest

from steering import logs
from steering.store.client import Backoff, Conn, LeaseNotFound, StoreError, describe, is_transient

log = logs.get(__name__)


class LeaseKeeper:
    """Grant a lease, keep it alive until ``stop``/``revoke``; ``lost`` is set once it is (or may be) gone."""

    def __init__(self, conn: Conn, ttl: float, purpose: str) -> None:
        self.conn = conn
        self.ttl = max(1, math.ceil(ttl))
        self.purpose = purpose
        self.id = 0
        self.lost = asyncio.Event()
        self.lost_reason = ""
        self._expires = 0.0
        self._kick = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._callbacks: list[Callable[[LeaseKeeper], None]] = []

    @property
    def alive(self) -> bool:
        return self.id != 0 and not self.lost.is_set()

    def on_lost(self, callback: Callable[[LeaseKeeper], None]) -> None:
        self._callbacks.append(callback)

    async def grant(self, deadline: float | None = None) -> int:
        sent = time.monotonic()
        resp = await self.conn.call("Lease.Grant", self.conn.lease.grant, self.ttl, deadline=deadline)
        self.id = int(resp.ID)
        self.ttl = int(resp.TTL) or self.ttl
        self._expires = sent + self.ttl
        self._task = asyncio.create_task(self._run(), name=f"lease-keepalive-{self.purpose}")
        log.debug("lease_granted", purpose=self.purpose, lease=self.id, ttl=self.ttl)
        return self.id

    def kick(self) -> None:
        """Send a keepalive now instead of at the next tick."""
        self._kick.set()

    async def refresh(self, timeout: float = 5.0) -> bool:
        """Send a keepalive now and wait until one is acknowledged; False if the lease is lost or time ran out."""
        before = self._expires
        self.kick()
        end = time.monotonic() + timeout
        while time.monotonic() < end and not self.lost.is_set():
            if self._expires > before:
                return True
            await asyncio.sleep(0.02)
        return False

    def _set_lost(self, reason: str) -> None:
        if self.lost.is_set():
            return
        self.lost_reason = reason
        self.lost.set()
        log.warning("lease_lost", purpose=self.purpose, lease=self.id, reason=reason)
        for cb in self._callbacks:
            try:
                cb(self)
            except Exception:  # a callback must not kill the keepalive loop's caller
                log.exception("lease_lost_callback_failed", purpose=self.purpose)

    async def _run(self) -> None:
        backoff = Backoff(0.05, min(1.0, self.conn.cfg.reconnect_max_seconds), self.conn)
        interval = max(0.3, self.ttl / 3)
        while not self.lost.is_set():
            stream = None
            try:
                stream = self.conn.lease_stub().LeaseKeepAlive(metadata=self.conn.metadata())
                while True:
                    left = self._expires - time.monotonic()
                    if left <= 0:
                        break
                    sent = time.monotonic()
                    async with asyncio.timeout(min(interval, left)):
                        await stream.write(LeaseKeepAliveRequest(ID=self.id))
                        resp = await stream.read()
                    if resp is grpc.aio.EOF:
                        raise ConnectionError("keepalive stream ended")
                    if resp.TTL <= 0:
                        self._set_lost("revoked or expired (server reports TTL 0)")
                        return
                    self._expires = sent + resp.TTL
                    self.conn.answered()
                    backoff.reset()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(interval):
                            await self._kick.wait()
                    self._kick.clear()
            except asyncio.CancelledError:
                raise
            except (grpc.aio.AioRpcError, TimeoutError, ConnectionError, StoreError, asyncio.InvalidStateError) as exc:
                # InvalidStateError: grpc.aio refuses a write on a stream the server already ended.
                if not isinstance(exc, grpc.aio.AioRpcError) or is_transient(exc):
                    self.conn.failed(exc)
                log.info("lease_keepalive_retry", purpose=self.purpose, lease=self.id, error=describe(exc))
            except Exception:  # never die silently: a dead keepalive loop would lose the lease unnoticed
                log.exception("lease_keepalive_error", purpose=self.purpose, lease=self.id)
            finally:
                if stream is not None:
                    stream.cancel()
            if time.monotonic() >= self._expires:
                self._set_lost("no keepalive acknowledged within the TTL")
                return
            await backoff.sleep()

    async def stop(self) -> None:
        """Stop keeping the lease alive (it then expires by itself after its TTL)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def revoke(self) -> None:
        """Stop and revoke now: every key bound to the lease is deleted at once."""
        await self.stop()
        if self.id:
            with contextlib.suppress(LeaseNotFound, StoreError):
                await self.conn.call("Lease.Revoke", self.conn.lease.revoke, self.id)
        self._set_lost("revoked by us")
