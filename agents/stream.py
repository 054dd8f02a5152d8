"""The agent's side of ``HealthService.Report``: one bidi stream to one controller at a time.

Reports are offered to a one-slot mailbox (the newest replaces an unsent
older one), so a controller that is slow or down never makes the agent queue
or burst: after a reconnect it gets the latest state, not a backlog.

Connection policy:
- endpoints are tried in turn; when a stream fails or cannot be opened, the
  next endpoint is tried after an exponential, jittered backoff (reset once a
  stream has carried acks);
- a stream with a report unacked for ``ack_timeout`` is declared dead, so a
  controller that hangs is treated like one that is down;
- the list is an order of preference (the region's own controllers first):
  while reporting to any but the first, the ones before it are tried every
  ``failback`` seconds, and the agent moves back to the first that accepts a
  connection. Otherwise an agent that started before its own controller, or
  outlived a restart of it, reports across regions for good, and its region's
  health then hangs on a link it does not need: cut that link and the region
  turns silent for the leader, healthy as it is (docs/lab.md, Findings). A
  move back that carries no ack doubles the wait before the next (up to 16x);
- the old stream is half-closed cleanly on a move back; its controller's
  record of the site expires on that controller's silence timeout while the
  new one's, newer, already decides (``healthmerge``: the newest wins);
- ``INVALID_ARGUMENT`` means the controller rejected what we send, and
  ``PERMISSION_DENIED``/``UNAUTHENTICATED`` that our credential (token or
  client certificate) is not allowed to report this site: logged loudly with
  its message, and the backoff keeps growing (no reset), so a misconfigured
  agent retries slowly instead of spinning.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc

from agents import backoff, metrics
from agents.config import Backoff
from steering import logs
from steering.v1 import steering_pb2, steering_pb2_grpc

log = logs.get("agents.stream")

ChannelFactory = Callable[[str], grpc.aio.Channel]

# The controller refuses what we send or who we are: only an operator can fix that.
_REFUSALS = (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED)

# How long a new stream waits for the controller's headers before writing anyway.
ACCEPT_SECONDS = 2.0

# How long a session's end waits for its tasks and its channel to close.
CLOSE_SECONDS = 2.0

# A move back to a preferred controller that carried no ack doubles the wait before the next, up to this.
MAX_FAILBACK_FACTOR = 16

# What a controller may ask for in ReportAck.report_interval_seconds.
MIN_INTERVAL = 0.05
MAX_INTERVAL = 300.0


def insecure_channel(endpoint: str) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(endpoint)


def clamp_interval(seconds: float) -> float:
    return min(MAX_INTERVAL, max(MIN_INTERVAL, seconds))


@dataclass
class _Outcome:
    acked: bool = False
    rejected: bool = False
    code: str = ""
    failback: int | None = None  # the index of a preferred endpoint that accepted a connection meanwhile


class ReportStream:
    def __init__(
        self,
        endpoints: Sequence[str],
        *,
        site: str,
        policy: Backoff,
        connect_timeout: float = 5.0,
        ack_timeout: Callable[[], float] = lambda: 5.0,
        failback: float = 10.0,
        channel_factory: ChannelFactory = insecure_channel,
        metadata: Sequence[tuple[str, str]] = (),
        on_interval: Callable[[float], None] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if not endpoints:
            raise ValueError("at least one controller endpoint is needed")
        self.endpoints = list(endpoints)
        self.site = site
        self.policy = policy
        self.connect_timeout = connect_timeout
        self.ack_timeout = ack_timeout
        self.failback = failback  # 0: never move back to a preferred endpoint
        self._failback_factor = 1
        self.channel_factory = channel_factory
        self.metadata = tuple(metadata)
        self.on_interval = on_interval
        self.rng = rng or random.Random()
        self._pending: steering_pb2.HealthReport | None = None
        self._wake = asyncio.Event()
        self._unacked_since: float | None = None
        self._last_sent_seq = 0
        # Observable state (tests, status, metrics).
        self.endpoint: str | None = None
        self.connected = False
        self.sent = 0
        self.acks = 0
        self.attempts = 0
        self.failbacks = 0
        self.last_ack: steering_pb2.ReportAck | None = None
        self.last_error = ""
        self.pauses: list[float] = []  # the most recent reconnect delays, newest last

    def offer(self, report: steering_pb2.HealthReport) -> None:
        """Hand over the newest report; an unsent older one is dropped."""
        self._pending = report
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        attempt = 0
        index = 0
        moved_back = False
        while not stop.is_set():
            endpoint = self.endpoints[index]
            self.attempts += 1
            metrics.RECONNECTS.labels(self.site).inc()
            outcome = await self._session(endpoint, index, stop)
            if stop.is_set():
                break
            if moved_back:
                self._failback_factor = 1 if outcome.acked else min(MAX_FAILBACK_FACTOR, 2 * self._failback_factor)
                moved_back = False
            if outcome.acked and not outcome.rejected:
                attempt = 0
            if outcome.failback is not None:
                index, moved_back = outcome.failback, True
                self.failbacks += 1
                log.info("controller stream failback", site=self.site, left=endpoint, to=self.endpoints[index])
                continue
            index = (index + 1) % len(self.endpoints)
            pause = backoff.delay(attempt, self.policy.initial_seconds, self.policy.max_seconds,
                                  self.policy.multiplier, self.rng)
            attempt += 1
            self.pauses = [*self.pauses[-31:], pause]
            log.info("controller stream retry", site=self.site, failed=endpoint,
                     next=self.endpoints[index], in_seconds=round(pause, 3), error=self.last_error)
            try:
                await asyncio.wait_for(stop.wait(), pause)
            except TimeoutError:
                pass

    async def _session(self, endpoint: str, index: int, stop: asyncio.Event) -> _Outcome:
        outcome = _Outcome()
        self.endpoint = endpoint
        channel = self.channel_factory(endpoint)
        call: Any = None
        tasks: list[asyncio.Task[Any]] = []
        try:
            error = await self._until_stopped(self._connect(channel), stop)
            if stop.is_set():
                return outcome
            if error:
                self.last_error = f"{endpoint}: {error}"
                outcome.code = "UNAVAILABLE"
                metrics.STREAM_ERRORS.labels(self.site, outcome.code).inc()
                return outcome
            # grpcio-tools generates steering_pb2_grpc without annotations
            stub = steering_pb2_grpc.HealthServiceStub(channel)  # type: ignore[no-untyped-call]
            call = stub.Report(metadata=self.metadata or None)
            self._unacked_since = None
            self.connected = True
            metrics.CONNECTED.labels(self.site).set(1)
            log.info("controller stream open", site=self.site, endpoint=endpoint)
            tasks = [
                asyncio.create_task(self._read(call, outcome)),
                asyncio.create_task(self._write(call)),
                asyncio.create_task(self._watchdog()),
                asyncio.create_task(stop.wait()),
            ]
            if index > 0 and self.failback > 0:
                tasks.append(asyncio.create_task(self._preferred(index)))
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            # The reader holds the call's real status; a failed write only echoes it, so a write that failed
            # first gives the reader a moment to bring the status.
            if tasks[1] in done and tasks[0] not in done and not stop.is_set():
                done |= (await asyncio.wait([tasks[0]], timeout=1.0))[0]
            for task in tasks[:3]:
                if task in done and not task.cancelled() and task.exception() is not None:
                    self._record_error(endpoint, task.exception(), outcome)
                    break
            if len(tasks) > 4 and tasks[4] in done and not any(t in done for t in tasks[:4]):
                outcome.failback = tasks[4].result()
            if stop.is_set() or outcome.failback is not None:
                # Half-close politely so the controller sees a clean end, not an error.
                try:
                    await asyncio.wait_for(call.done_writing(), 0.5)
                except (TimeoutError, grpc.aio.AioRpcError, grpc.aio.UsageError):
                    pass
            return outcome
        finally:
            self.connected = False
            metrics.CONNECTED.labels(self.site).set(0)
            for task in tasks:
                task.cancel()
            if call is not None:
                call.cancel()
            # Bounded: a session's end must never hold the agent (or its stop) on grpc finishing a call or
            # closing a channel; what has not finished by then is left to end on its own, and said.
            closing = asyncio.ensure_future(channel.close(grace=None))
            ended, late = await asyncio.wait({*tasks, closing}, timeout=CLOSE_SECONDS)
            for t in ended:
                if not t.cancelled():
                    t.exception()  # retrieved (the finished ones too): what a session's task ended with is said above
            if late:
                log.warning("controller stream slow to close", site=self.site, endpoint=endpoint,
                            pending=len(late), seconds=CLOSE_SECONDS)

    @staticmethod
    async def _until_stopped(coro: Any, stop: asyncio.Event) -> Any:
        """Await ``coro`` unless ``stop`` is set first (then cancel it and return None)."""
        work = asyncio.ensure_future(coro)
        stopper = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait([work, stopper], return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (work, stopper):
                task.cancel()
        return work.result() if work.done() and not work.cancelled() else None

    async def _connect(self, channel: grpc.aio.Channel) -> str:
        """Wait for READY; fail fast on a refused connection, bounded on a black hole."""
        deadline = time.monotonic() + self.connect_timeout
        state = channel.get_state(try_to_connect=True)
        while state != grpc.ChannelConnectivity.READY:
            if state in (grpc.ChannelConnectivity.TRANSIENT_FAILURE, grpc.ChannelConnectivity.SHUTDOWN):
                return "unreachable"
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return f"not connected after {self.connect_timeout:g}s"
            try:
                await asyncio.wait_for(channel.wait_for_state_change(state), remaining)
            except TimeoutError:
                return f"not connected after {self.connect_timeout:g}s"
            state = channel.get_state(try_to_connect=True)
        return ""

    async def _preferred(self, index: int) -> int:
        """Every ``failback`` seconds (jittered, so a site's agents do not move back in step), try the
        endpoints before ``index`` in order; the first that accepts a connection is returned."""
        while True:
            wait = self.failback * self._failback_factor
            await asyncio.sleep(wait * self.rng.uniform(0.8, 1.2))
            for i in range(index):
                try:
                    probe = self.channel_factory(self.endpoints[i])
                    try:
                        ready = await self._connect(probe) == ""
                    finally:
                        await probe.close(grace=None)
                except Exception as exc:  # a probe must never end the session it looks out from
                    log.warning("controller failback probe failed", site=self.site, endpoint=self.endpoints[i],
                                error=f"{type(exc).__name__}: {exc}")
                    continue
                if ready:
                    return i

    async def _write(self, call: Any) -> None:
        await self._accepted(call)
        while True:
            await self._wake.wait()
            self._wake.clear()
            report = self._pending
            if report is None:
                continue
            self._pending = None
            await call.write(report)
            self.sent += 1
            self._last_sent_seq = report.sequence
            if self._unacked_since is None:
                self._unacked_since = time.monotonic()
            metrics.REPORTS_SENT.labels(self.site).inc()

    async def _accepted(self, call: Any) -> None:
        """Wait for the stream's headers: the controller sends them once it accepted our credential.

        Writing before them races a refusal, and grpc.aio then ends the call INTERNAL instead of with the
        controller's UNAUTHENTICATED or PERMISSION_DENIED, which the operator must see. Bounded, so a
        controller that sends headers only with its first ack (before this was added) still gets reports.
        """
        try:
            await asyncio.wait_for(call.initial_metadata(), ACCEPT_SECONDS)
        except TimeoutError:
            return
        if call.done():
            # Refused: the reader ends the session with the controller's status; write nothing.
            await asyncio.Event().wait()

    async def _read(self, call: Any, outcome: _Outcome) -> None:
        while True:
            ack = await call.read()
            if ack is grpc.aio.EOF:
                code = await call.code()
                if code != grpc.StatusCode.OK:
                    raise grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(),
                                               await call.details())
                self.last_error = "controller closed the stream"
                outcome.code = "OK"
                return
            outcome.acked = True
            self.acks += 1
            self.last_ack = ack
            metrics.ACKS.labels(self.site).inc()
            if ack.sequence >= self._last_sent_seq:
                self._unacked_since = None
            elif self._unacked_since is not None:
                self._unacked_since = time.monotonic()
            if ack.report_interval_seconds > 0 and self.on_interval is not None:
                self.on_interval(clamp_interval(ack.report_interval_seconds))

    async def _watchdog(self) -> None:
        while True:
            limit = self.ack_timeout()
            await asyncio.sleep(min(limit / 4, 1.0))
            since = self._unacked_since
            if since is not None and time.monotonic() - since > limit:
                raise TimeoutError(f"no ack for {limit:g}s")

    def _record_error(self, endpoint: str, exc: BaseException | None, outcome: _Outcome) -> None:
        if isinstance(exc, grpc.aio.AioRpcError):
            outcome.code = exc.code().name
            message = exc.details() or ""
            if exc.code() in _REFUSALS:
                outcome.rejected = True
                # Loud on purpose: the agent's config or build disagrees with
                # the controller, and only an operator can fix that.
                log.error("controller rejected report", site=self.site, endpoint=endpoint, message=message)
            self.last_error = f"{endpoint}: {exc.code().name}: {message}"
        elif isinstance(exc, TimeoutError):
            outcome.code = "ACK_TIMEOUT"
            self.last_error = f"{endpoint}: {exc}"
        else:
            outcome.code = type(exc).__name__
            self.last_error = f"{endpoint}: {type(exc).__name__}: {exc}"
        metrics.STREAM_ERRORS.labels(self.site, outcome.code).inc()
