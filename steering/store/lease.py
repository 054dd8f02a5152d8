"""A lease kept alive in the background, with a ``lost`` event.

Our own loop over the raw LeaseKeepAlive stream, rather than etcd3aio's
``keep_alive_context``, because we must know *when* a lease is gone: the
server says TTL 0 (revoked or expired), or no acknowledgement came back
before the TTL ran out (we are cut off, so we must assume it expired: a
leader that cannot prove its lease is alive must stop acting as one).

That local deadline is for a lease that is a claim to act (the election's).
A lease that only carries records (health) is ``strict=False``: what matters
there is whether etcd still has it, so it is lost when etcd says so (TTL 0, or
a write refused for it), or when nothing has answered for one TTL past the
local deadline. A keepalive that comes back late with TTL > 0 proves the
records were never gone, and declaring the lease lost meanwhile only cost a
recovery: a new lease and every record put back, and a window for the races
of a put-back (docs/lab.md, Findings; the 300 ms spike lost a health lease
that way in CI while etcd still held it).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable
from typing import Any

import grpc.aio
from etcd3aio._protobuf import LeaseKeepAliveRequest

from steering import logs
from steering.store.client import Backoff, Conn, LeaseNotFound, StoreError, describe, is_transient

log = logs.get(__name__)

# New streams one slow keepalive may be sent on besides its own, and how far apart after the first (a fraction
# of ``patience``); see LeaseKeeper._keepalive.
HEDGES = 8
HEDGE_SPACING = 0.25


class LeaseKeeper:
    """Grant a lease, keep it alive until ``stop``/``revoke``; ``lost`` is set once it is (or may be) gone."""

    def __init__(self, conn: Conn, ttl: float, purpose: str, strict: bool = True) -> None:
        self.conn = conn
        self.ttl = max(1, math.ceil(ttl))
        self.purpose = purpose
        self.strict = strict
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
        starts: list[float] = []

        async def attempt(ttl: int, timeout: float) -> Any:
            starts.append(time.monotonic())
            return await self.conn.lease.grant(ttl, timeout=timeout)

        resp = await self.conn.call("Lease.Grant", attempt, self.ttl, deadline=deadline)
        self._keep(int(resp.ID), int(resp.TTL) or self.ttl, starts[-1])
        log.debug("lease_granted", purpose=self.purpose, lease=self.id, ttl=self.ttl)
        return self.id

    def _keep(self, lease_id: int, ttl: int, sent: float) -> None:
        """Keep ``lease_id`` alive from now on, its countdown from ``sent``: the start of the attempt that was
        answered, not of the first (a retried call, over a slow link or past a member that timed out, would
        otherwise start the lease's life here already near or past its expiry)."""
        self.id = lease_id
        self.ttl = ttl
        self._expires = sent + ttl
        self._task = asyncio.create_task(self._run(), name=f"lease-keepalive-{self.purpose}")

    async def adopt(self, lease_id: int, deadline: float | None = None) -> bool:
        """Keep alive a lease granted earlier (by this process, for a term it gave up): True once etcd renewed
        it, the countdown from that keepalive's send; False if etcd no longer has it."""
        starts: list[float] = []

        async def attempt(timeout: float) -> Any:
            starts.append(time.monotonic())
            stream = self._open()
            try:
                async with asyncio.timeout(timeout):
                    return await _ask(stream, LeaseKeepAliveRequest(ID=lease_id))
            finally:
                stream.cancel()

        resp = await self.conn.call("Lease.KeepAlive", attempt, deadline=deadline)
        if resp is grpc.aio.EOF or resp.TTL <= 0:
            return False
        self._keep(lease_id, int(resp.TTL), starts[-1])
        log.info("lease_adopted", purpose=self.purpose, lease=self.id, ttl=self.ttl)
        return True

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

    @property
    def _deadline(self) -> float:
        """When an unanswered lease counts as lost here: at its expiry as last acknowledged (strict), else one
        TTL after it."""
        return self._expires if self.strict else self._expires + self.ttl

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

    @property
    def send_interval(self) -> float:
        """Seconds from one keepalive's send to the next one's.

        A strict lease is lost here at the last acknowledged send plus the TTL, so the time since that send is
        headroom gone before any outage begins. Cutting the member that leads etcd stalls every keepalive
        for the majority's election, up to twice etcd's election timeout (4 s in the lab, against a 5 s
        lease): at a third of the TTL the leader's lease lapsed locally while etcd still held it, and the
        majority changed controller leader for a partition of a region that did not lead (docs/lab.md,
        Findings). So a strict lease is renewed every fifteenth of its TTL (at least 0.25 s apart); one that
        only carries records, whose local deadline has a TTL to spare, every third."""
        return max(0.25, self.ttl / 15) if self.strict else max(0.3, self.ttl / 3)

    @property
    def patience(self) -> float:
        """Seconds an unanswered keepalive waits before it is also sent on a new stream (a third of the TTL)."""
        return max(0.3, self.ttl / 3)

    async def _run(self) -> None:
        """Send a keepalive every ``send_interval`` from the last one's send, on one stream.

        A keepalive may take long (through a member that does not lead, over a slow link: a round trip to the
        leader and its own confirmation, over a second at 300 ms one-way) or never come back (a silent member).
        So one is never given up for being slow while the lease still runs: it may take until the expiry.
        But when it takes longer than ``patience``, the same keepalive is also sent on new streams, up to
        ``HEDGES`` (round robin puts them on other members), and whichever answers first renews the lease and
        carries on (``_keepalive``). A member forwards a keepalive to the etcd leader it knows, and one that
        went just as that leader was cut off waits for its etcd request timeout (seconds past the lease's
        expiry) even after the majority elected another: only a keepalive sent after the election is
        answered, so the hedges go on, a quarter of ``patience`` apart, until one is. Before,
        each keepalive had a third of the TTL to be answered and was then sent again: at a 3 s TTL with 1.2 s round
        trips every try timed out and the lease lapsed (docs/failure-modes.md, the 300 ms finding)."""
        backoff = Backoff(0.05, min(1.0, self.conn.cfg.reconnect_max_seconds), self.conn)
        interval = self.send_interval
        stream: Any = None
        while not self.lost.is_set():
            try:
                if stream is None:
                    stream = self._open()
                while True:
                    if time.monotonic() >= self._deadline:
                        break
                    sent = time.monotonic()
                    resp, winner = await self._keepalive(stream, sent, self.patience)
                    if winner is not stream:  # the hedge answered first: it is the stream from now on
                        stream.cancel()
                        stream = winner
                    if resp is grpc.aio.EOF:
                        raise ConnectionError("keepalive stream ended")
                    if resp.TTL <= 0:
                        self._set_lost("revoked or expired (server reports TTL 0)")
                        return
                    self._expires = max(self._expires, sent + resp.TTL)
                    self.conn.answered()
                    backoff.reset()
                    # the next one ``interval`` after this one was sent, not after its answer came: a slow answer
                    # must not push the next keepalive towards the expiry
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(max(0.0, sent + interval - time.monotonic())):
                            await self._kick.wait()
                    self._kick.clear()
            except asyncio.CancelledError:
                if stream is not None:
                    stream.cancel()
                raise
            except (grpc.aio.AioRpcError, TimeoutError, ConnectionError, StoreError, asyncio.InvalidStateError) as exc:
                # InvalidStateError: grpc.aio refuses a write on a stream the server already ended.
                if not isinstance(exc, grpc.aio.AioRpcError) or is_transient(exc):
                    self.conn.failed(exc)
                log.info("lease_keepalive_retry", purpose=self.purpose, lease=self.id, error=describe(exc))
                if stream is not None:
                    stream.cancel()
                stream = None
            except Exception:  # never die silently: a dead keepalive loop would lose the lease unnoticed
                log.exception("lease_keepalive_error", purpose=self.purpose, lease=self.id)
                if stream is not None:
                    stream.cancel()
                stream = None
            if time.monotonic() >= self._deadline:
                if stream is not None:
                    stream.cancel()
                self._set_lost("no keepalive acknowledged within the TTL" if self.strict else
                               "no keepalive acknowledged within two TTLs")
                return
            await backoff.sleep()

    def _open(self) -> Any:
        return self.conn.lease_stub().LeaseKeepAlive(metadata=self.conn.metadata())

    async def _keepalive(self, stream: Any, sent: float, patience: float) -> tuple[Any, Any]:
        """One keepalive: its answer and the stream that gave it (``stream``, or a hedge opened meanwhile,
        which then replaces it: the caller cancels the others). Unanswered after ``patience``, it is also sent
        on a new stream, and again every ``HEDGE_SPACING`` of ``patience``, at most ``HEDGES`` times: round
        robin spreads them over the members, so one that went silent, or a forward to an etcd leader that is
        gone, does not hold the lease to its expiry. Raises TimeoutError at
        the lease's expiry, or the last stream's error when none is left to wait for."""
        req = LeaseKeepAliveRequest(ID=self.id)
        tasks = {asyncio.create_task(_ask(stream, req), name=f"lease-keepalive-{self.purpose}"): stream}
        hedges: list[Any] = []
        winner: Any = None
        next_hedge = sent + patience
        try:
            while True:
                now = time.monotonic()
                if now >= self._deadline:
                    raise TimeoutError("no keepalive answered before the lease's expiry")
                if now >= next_hedge and len(hedges) < HEDGES:
                    hedge = self._open()
                    hedges.append(hedge)
                    tasks[asyncio.create_task(_ask(hedge, req), name=f"lease-keepalive-{self.purpose}-hedge")] = hedge
                    log.debug("lease_keepalive_slow", purpose=self.purpose, lease=self.id, waited=round(now - sent, 3),
                             streams=len(tasks))
                    next_hedge = now + patience * HEDGE_SPACING
                until = min(self._deadline, next_hedge) if len(hedges) < HEDGES else self._deadline
                done, _ = await asyncio.wait(set(tasks), timeout=max(0.0, until - time.monotonic()),
                                             return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    st = tasks.pop(task)
                    exc = task.exception()
                    if exc is None:
                        winner = st
                        return task.result(), st
                    if not tasks and (len(hedges) >= HEDGES or time.monotonic() >= self._deadline):
                        raise exc
                    if not tasks:
                        next_hedge = time.monotonic()  # the only stream failed: try a new one at once
        finally:
            for task in tasks:
                task.cancel()
            for hedge in hedges:
                if hedge is not winner:
                    hedge.cancel()

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


async def _ask(stream: Any, req: LeaseKeepAliveRequest) -> Any:
    await stream.write(req)
    return await stream.read()
