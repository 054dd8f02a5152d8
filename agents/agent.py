"""The agent loop: probe rounds, the rise/fall status, and the report ticker.

Two independent tasks share one snapshot:
- the prober runs a round every ``interval_seconds``: all probes and
  capacity reads concurrently, each under its own deadline, then feeds the
  round's verdict (every critical probe ok) to the rise/fall state machine;
- the reporter, on its own tick, sends the latest snapshot with a new
  sequence number.
So a probe that hangs until its timeout delays the next round, never the
reports: the controller keeps hearing from the site at the interval.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from agents import metrics
from agents.capacity import Readings
from agents.config import AgentConfig, Probe
from agents.probes import ProbeResult, run_probe, timeout_detail
from agents.stream import ChannelFactory, ReportStream, insecure_channel
from agents.thresholds import State, Thresholds
from steering import limits, logs
from steering.v1 import steering_pb2

log = logs.get("agents.agent")

# Beyond its own timeout a probe gets this much before it is abandoned.
PROBE_GRACE_SECONDS = 0.5


class Sequencer:
    """Strictly increasing sequence numbers, also across agent restarts.

    Each number is at least the wall clock in milliseconds, so an agent that
    restarts with the same ``agent_id`` keeps climbing instead of starting
    over at 1 (which a controller would reject as a replay).
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self.last = 0

    def next(self) -> int:
        self.last = max(self.last + 1, int(self._clock() * 1000))
        return self.last


@dataclass(frozen=True)
class ProbeRound:
    healthy: bool
    checks: tuple[ProbeResult, ...]
    capacity: float
    load: float
    geo_load: dict[str, float] = field(default_factory=dict)


def channel_factory_for(cfg: AgentConfig) -> ChannelFactory:
    if cfg.tls is None:
        return insecure_channel
    tls = cfg.tls

    def read(path: str | None) -> bytes | None:
        return None if path is None else Path(cfg.resolve_path(path)).read_bytes()

    credentials = grpc.ssl_channel_credentials(read(tls.ca), read(tls.key), read(tls.cert))
    options = [("grpc.ssl_target_name_override", tls.server_name)] if tls.server_name else []

    def make(endpoint: str) -> grpc.aio.Channel:
        return grpc.aio.secure_channel(endpoint, credentials, options=options)

    return make


class Agent:
    def __init__(self, cfg: AgentConfig, channel_factory: ChannelFactory | None = None) -> None:
        self.cfg = cfg
        self.agent_id = cfg.identity()
        self.thresholds = Thresholds(rise=cfg.rise, fall=cfg.fall)
        self.state = State(healthy=cfg.initial == "healthy")
        self.report_interval = cfg.interval_seconds
        self.readings = Readings(
            {"capacity": cfg.capacity, "load": cfg.load, **{f"geo_load.{g}": r for g, r in cfg.geo_load.items()}}
        )
        self.sequencer = Sequencer()
        self.snapshot: ProbeRound | None = None
        self.rounds = 0
        self._probe_ok: dict[str, bool] = {}
        self._reading_errors: dict[str, str] = {}
        self._first_round = asyncio.Event()
        metadata: list[tuple[str, str]] = []
        if cfg.token_file:
            token = cfg.resolve_path(cfg.token_file).read_text().strip()
            metadata.append(("authorization", f"Bearer {token}"))
        self.stream = ReportStream(
            cfg.controllers,
            site=cfg.site,
            policy=cfg.backoff,
            connect_timeout=cfg.connect_timeout_seconds,
            ack_timeout=lambda: cfg.effective_ack_timeout(self.report_interval),
            failback=cfg.failback_seconds,
            channel_factory=channel_factory or channel_factory_for(cfg),
            metadata=metadata,
            on_interval=self._set_report_interval,
        )
        self.log = log.bind(site=cfg.site, region=cfg.region, agent_id=self.agent_id, role=cfg.role)

    # ------------------------------------------------------------ running

    async def run(self, stop: asyncio.Event) -> None:
        self.log.info("agent starting", kind=self.cfg.kind, controllers=list(self.cfg.controllers),
                      probes=[p.name for p in self.cfg.probes], interval=self.cfg.interval_seconds)
        tasks = [
            asyncio.create_task(self._prober(stop), name="prober"),
            asyncio.create_task(self._reporter(stop), name="reporter"),
            asyncio.create_task(self.stream.run(stop), name="stream"),
        ]
        try:
            await stop.wait()
        finally:
            # The stream half-closes by itself on stop; give it a moment, then cut.
            await asyncio.wait(tasks, timeout=1.5)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self.log.info("agent stopped", reports_sent=self.stream.sent, rounds=self.rounds)

    async def _prober(self, stop: asyncio.Event) -> None:
        next_at = time.monotonic()
        while not stop.is_set():
            await self.probe_round()
            next_at = max(next_at + self.cfg.interval_seconds, time.monotonic())
            await _sleep_until(stop, next_at)

    async def _reporter(self, stop: asyncio.Event) -> None:
        # Nothing to say before the first round has finished.
        waiters = [asyncio.create_task(self._first_round.wait()), asyncio.create_task(stop.wait())]
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in waiters:
                task.cancel()
        next_at = time.monotonic()
        while not stop.is_set():
            self.stream.offer(self.build_report())
            next_at = max(next_at + self.report_interval, time.monotonic())
            await _sleep_until(stop, next_at)

    def _set_report_interval(self, seconds: float) -> None:
        if seconds != self.report_interval:
            self.log.info("report interval changed by controller", seconds=seconds, was=self.report_interval)
            self.report_interval = seconds

    # ------------------------------------------------------------ one round

    async def probe_round(self) -> ProbeRound:
        results, reading_errors = await asyncio.gather(
            asyncio.gather(*(self._guarded(p) for p in self.cfg.probes)),
            self.readings.refresh(),
        )
        self._note_readings(reading_errors)
        ok = all(r.ok for r in results if r.critical)
        before = self.state.healthy
        self.state = self.state.step(ok, self.thresholds)
        if self.state.healthy != before or self.rounds == 0:
            failing = {r.name: r.detail for r in results if not r.ok}
            (self.log.info if self.state.healthy else self.log.warning)(
                "site status", status="healthy" if self.state.healthy else "unhealthy", failing=failing
            )
        metrics.HEALTHY.labels(self.cfg.site).set(1 if self.state.healthy else 0)
        r = self.readings
        self.snapshot = ProbeRound(
            healthy=self.state.healthy,
            checks=tuple(results),
            capacity=r.get("capacity") or 0.0,
            load=r.get("load") or 0.0,
            geo_load={g: v for g in self.cfg.geo_load if (v := r.get(f"geo_load.{g}")) is not None},
        )
        self.rounds += 1
        self._first_round.set()
        return self.snapshot

    async def _guarded(self, probe: Probe) -> ProbeResult:
        # run_probe honours its timeout; this outer deadline is the backstop
        # for a probe that does not, so one bad probe cannot hold the round.
        limit = probe.timeout_seconds + PROBE_GRACE_SECONDS
        started = time.monotonic()
        try:
            result = await asyncio.wait_for(run_probe(probe), limit)
        except TimeoutError:
            result = ProbeResult(probe.name, probe.kind, False, timeout_detail(limit),
                                 time.monotonic() - started, probe.critical)
        labels = (self.cfg.site, probe.name)
        metrics.PROBES.labels(*labels).inc()
        metrics.PROBE_SECONDS.labels(*labels).observe(result.latency_seconds)
        if not result.ok:
            metrics.PROBE_FAILURES.labels(*labels).inc()
        if self._probe_ok.get(probe.name) != result.ok:
            # Log transitions only: a probe failing every second is one line, not 3600 an hour.
            (self.log.info if result.ok else self.log.warning)(
                "probe " + ("ok" if result.ok else "failing"), probe=probe.name, kind=probe.kind, detail=result.detail
            )
            self._probe_ok[probe.name] = result.ok
        return result

    def _note_readings(self, errors: dict[str, str]) -> None:
        for name, error in errors.items():
            metrics.READING_FAILURES.labels(self.cfg.site, name).inc()
            if self._reading_errors.get(name) != error:
                self.log.warning("reading failed; keeping the last value", reading=name, error=error,
                                 last=self.readings.get(name))
        for name in set(self._reading_errors) - set(errors):
            self.log.info("reading recovered", reading=name, value=self.readings.get(name))
        self._reading_errors = dict(errors)

    # ------------------------------------------------------------ the report

    def build_report(self) -> steering_pb2.HealthReport:
        snap = self.snapshot
        assert snap is not None, "no probe round has completed yet"
        now = Timestamp()
        now.GetCurrentTime()
        return steering_pb2.HealthReport(
            site=self.cfg.site,
            region=self.cfg.region,
            kind=steering_pb2.SITE_KIND_REGION if self.cfg.kind == "region" else steering_pb2.SITE_KIND_CACHE,
            status=steering_pb2.HEALTH_STATUS_HEALTHY if snap.healthy else steering_pb2.HEALTH_STATUS_UNHEALTHY,
            checks=[
                # A detail can quote a server's error text: cut it to what the controller takes.
                steering_pb2.CheckResult(name=c.name, kind=c.kind, ok=c.ok,
                                         detail=c.detail[:limits.MAX_CHECK_DETAIL],
                                         latency_seconds=c.latency_seconds)
                for c in snap.checks
            ],
            capacity=snap.capacity,
            load=snap.load,
            geo_load=snap.geo_load,
            sequence=self.sequencer.next(),
            agent_time=now,
            agent_id=self.agent_id,
            role=steering_pb2.AGENT_ROLE_OBSERVER if self.cfg.role == "observer" else steering_pb2.AGENT_ROLE_LOCAL,
            geos=self.cfg.geos,
        )


async def _sleep_until(stop: asyncio.Event, when: float) -> None:
    delay = when - time.monotonic()
    if delay <= 0:
        return
    try:
        await asyncio.wait_for(stop.wait(), delay)
    except TimeoutError:
        pass
