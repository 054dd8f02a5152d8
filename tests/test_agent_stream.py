"""The agent against real grpc.aio controllers on loopback: reports, reconnects, failover, rejects."""

from __future__ import annotations

import asyncio
import itertools
import json
import random
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import pytest
from hypothesis import given
from hypothesis import strategies as st
from structlog.testing import capture_logs

from agents import backoff
from agents import stream as stream_module
from agents.agent import Agent, Sequencer
from agents.config import Backoff, parse_agent_config
from agents.stream import MAX_INTERVAL, ReportStream
from steering.v1 import steering_pb2
from tests.support import eventually, free_port
from tests.support.agent_targets import FakeController, HttpTarget, TcpTarget

FAST_BACKOFF = {"initial_seconds": 0.05, "max_seconds": 0.4, "multiplier": 2}


@pytest.fixture
def web() -> Iterator[HttpTarget]:
    t = HttpTarget()
    t.set("/healthz", body="ok")
    t.set("/stats", body=json.dumps({"cap": {"rps": 8000}, "load": 1200}), ctype="application/json")
    try:
        yield t
    finally:
        t.close()


@pytest.fixture
def tcp() -> Iterator[TcpTarget]:
    t = TcpTarget()
    try:
        yield t
    finally:
        t.close()


@pytest.fixture
async def controller() -> AsyncIterator[FakeController]:
    c = await FakeController("c1").start()
    try:
        yield c
    finally:
        await c.stop()


def agent_config(web: HttpTarget, tcp: TcpTarget, controllers: list[str], **over: Any) -> Any:
    data: dict[str, Any] = {
        "site": "us-east-1",
        "region": "us-east-1",
        "agent_id": "test-agent",
        "controllers": controllers,
        "interval_seconds": 0.1,
        "rise": 2,
        "fall": 3,
        "probes": [
            {"name": "web", "kind": "http", "url": web.url("/healthz"), "body_contains": "ok", "timeout_seconds": 1},
            {"name": "db", "kind": "tcp", "address": tcp.address, "timeout_seconds": 1},
        ],
        "capacity": {"url": web.url("/stats"), "json_path": "cap.rps"},
        "load": {"url": web.url("/stats"), "json_path": "load"},
        "backoff": FAST_BACKOFF,
        "connect_timeout_seconds": 1,
    }
    data.update(over)
    return parse_agent_config(data)


class Running:
    """An Agent running as a task in the test's loop; stopped (and awaited) on exit."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.stop = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Agent:
        self.task = asyncio.create_task(self.agent.run(self.stop))
        return self.agent

    async def __aexit__(self, *exc: object) -> None:
        self.stop.set()
        assert self.task is not None
        await asyncio.wait_for(self.task, 5)


def sequences(reports: list[steering_pb2.HealthReport]) -> list[int]:
    return [r.sequence for r in reports]


def strictly_increasing(values: list[int]) -> bool:
    return all(a < b for a, b in itertools.pairwise(values))


# ---------------------------------------------------------------- pure parts


@given(st.integers(0, 200), st.floats(0.01, 5), st.floats(1, 10))
def test_backoff_is_bounded_and_grows(attempt: int, initial: float, multiplier: float) -> None:
    maximum = initial * 100
    rng = random.Random(attempt)
    d = backoff.delay(attempt, initial, maximum, multiplier, rng)
    cap = min(maximum, initial * multiplier ** min(attempt, 64))
    assert cap / 2 <= d <= cap
    assert d >= initial / 2  # never faster than half the first delay: no flooding


def test_sequencer_is_strictly_increasing_and_restart_safe() -> None:
    clock = [1_000.0]
    seq = Sequencer(lambda: clock[0])
    first = [seq.next() for _ in range(100)]
    assert strictly_increasing(first)
    # A restarted agent (new Sequencer) later on starts above the old numbers.
    assert first[-1] == 1_000_000 + 99
    clock[0] += 1.0
    assert Sequencer(lambda: clock[0]).next() == 1_001_000
    clock[0] -= 5  # the clock steps back: numbers still climb
    assert seq.next() == first[-1] + 1


async def test_mailbox_keeps_only_the_newest() -> None:
    """Reports offered before the stream is up: only the newest goes out (and only once)."""
    controller = await FakeController().start()
    stream = ReportStream([controller.endpoint], site="s", policy=Backoff())
    for n in (1, 2, 3):
        stream.offer(steering_pb2.HealthReport(sequence=n))
    stop = asyncio.Event()
    runner = asyncio.create_task(stream.run(stop))
    try:
        await eventually(lambda: stream.acks >= 1, what="the first ack")
        assert [r.sequence for r in controller.reports] == [3] and stream.sent == 1
    finally:
        stop.set()
        await asyncio.wait_for(runner, 10)
        await controller.stop()


class _StuckClose:
    """A real channel whose close never returns (as grpc's was seen to hang once in CI)."""

    def __init__(self, endpoint: str) -> None:
        self.inner = grpc.aio.insecure_channel(endpoint)
        self.closed = asyncio.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def close(self, grace: float | None = None) -> None:
        await self.closed.wait()  # never set


async def test_a_session_that_cannot_close_does_not_hold_the_agent() -> None:
    """A session's end waits at most CLOSE_SECONDS for its channel: the agent stops (and would go on to the next
    controller) and says so."""
    controller = await FakeController().start()
    channels: list[_StuckClose] = []

    def factory(endpoint: str) -> grpc.aio.Channel:
        channels.append(_StuckClose(endpoint))
        return channels[-1]  # type: ignore[return-value]

    stream = ReportStream([controller.endpoint], site="s", policy=Backoff(), channel_factory=factory)
    stream.offer(steering_pb2.HealthReport(sequence=1))
    stop = asyncio.Event()
    with capture_logs() as logs:
        runner = asyncio.create_task(stream.run(stop))
        try:
            await eventually(lambda: stream.acks >= 1, what="the first ack")
        finally:
            stop.set()
            await asyncio.wait_for(runner, stream_module.CLOSE_SECONDS + 10)
            for ch in channels:
                await ch.inner.close()
            await controller.stop()
    assert any(e["event"] == "controller stream slow to close" and e["pending"] == 1 for e in logs)


# ---------------------------------------------------------------- end to end


async def test_reports_carry_identity_checks_capacity(web: HttpTarget, tcp: TcpTarget,
                                                      controller: FakeController) -> None:
    cfg = agent_config(web, tcp, [controller.endpoint])
    async with Running(Agent(cfg)) as agent:
        await eventually(lambda: any(r.status == steering_pb2.HEALTH_STATUS_HEALTHY for r in controller.reports),
                         what="a healthy report")
        await eventually(lambda: agent.stream.acks >= 3, what="acks")
    reports = controller.reports
    first = reports[0]
    # initial: unhealthy, rise 2: the first report cannot claim health yet.
    assert first.status == steering_pb2.HEALTH_STATUS_UNHEALTHY
    last = reports[-1]
    assert (last.site, last.region, last.kind, last.agent_id) == (
        "us-east-1", "us-east-1", steering_pb2.SITE_KIND_REGION, "test-agent")
    assert {c.name: (c.kind, c.ok, c.detail) for c in last.checks} == {
        "web": ("http", True, "status 200"), "db": ("tcp", True, "connected")}
    assert last.capacity == 8000 and last.load == 1200
    assert last.agent_time.seconds > 0
    assert strictly_increasing(sequences(reports))


async def test_target_going_bad_after_fall_and_back_after_rise(web: HttpTarget, tcp: TcpTarget,
                                                               controller: FakeController) -> None:
    cfg = agent_config(web, tcp, [controller.endpoint], initial="healthy")
    healthy, unhealthy = steering_pb2.HEALTH_STATUS_HEALTHY, steering_pb2.HEALTH_STATUS_UNHEALTHY
    async with Running(Agent(cfg)) as agent:
        await eventually(lambda: len(controller.reports) >= 2, what="reports")
        web.set("/healthz", status=503, body="down")
        await eventually(lambda: controller.reports[-1].status == unhealthy, what="unhealthy")
        bad = next(r for r in reversed(controller.reports) if r.status == unhealthy)
        assert {c.name: c.detail for c in bad.checks if not c.ok} == {"web": "status 503, expected 200"}
        assert agent.state.healthy is False
        web.set("/healthz", body="ok")
        await eventually(lambda: controller.reports[-1].status == healthy, what="healthy again")
    # Status is driven by whole rounds: between the flips, the failing rounds numbered at least `fall`.
    statuses = [r.status for r in controller.reports]
    assert statuses.index(unhealthy) > 0


async def test_probe_rounds_apply_fall_and_rise(web: HttpTarget, tcp: TcpTarget) -> None:
    # Rounds driven one by one (no loop, no controller): the status follows rise/fall exactly.
    agent = Agent(agent_config(web, tcp, ["127.0.0.1:1"], initial="healthy", fall=3, rise=2))
    web.set("/healthz", status=500)
    assert [(await agent.probe_round()).healthy for _ in range(3)] == [True, True, False]
    web.set("/healthz", body="ok")
    assert [(await agent.probe_round()).healthy for _ in range(2)] == [False, True]
    # A non-critical probe failing never changes the status.
    tcp.close()
    agent = Agent(agent_config(web, tcp, ["127.0.0.1:1"], initial="healthy", fall=1, probes=[
        {"name": "web", "kind": "http", "url": web.url("/healthz")},
        {"name": "db", "kind": "tcp", "address": tcp.address, "critical": False},
    ]))
    snap = await agent.probe_round()
    assert snap.healthy and [c.ok for c in snap.checks] == [True, False]


async def test_hanging_probe_does_not_stall_reports(web: HttpTarget, tcp: TcpTarget,
                                                    controller: FakeController) -> None:
    cfg = agent_config(web, tcp, [controller.endpoint], probes=[
        {"name": "web", "kind": "http", "url": web.url("/healthz"), "timeout_seconds": 5},
        {"name": "db", "kind": "tcp", "address": tcp.address},
    ])
    async with Running(Agent(cfg)) as agent:
        await eventually(lambda: len(controller.reports) >= 2, what="first reports")
        web.hang = True
        rounds_before = agent.rounds
        count = len(controller.reports)
        await eventually(lambda: len(controller.reports) >= count + 10, timeout=4.5, what="reports during the hang")
        # At most the round already in flight finished: a round is stuck on the
        # hanging target, and reports kept flowing meanwhile.
        assert agent.rounds <= rounds_before + 1
        web.release()
    assert strictly_increasing(sequences(controller.reports))


async def test_reconnects_with_backoff_and_sequence_keeps_increasing(web: HttpTarget, tcp: TcpTarget) -> None:
    controller = await FakeController("c1").start()
    try:
        cfg = agent_config(web, tcp, [controller.endpoint])
        async with Running(Agent(cfg)) as agent:
            await eventually(lambda: agent.stream.acks >= 3, what="acks")
            await controller.stop()
            before = len(controller.reports)
            await eventually(lambda: len(agent.stream.pauses) >= 4, what="retries while down")
            # While the controller is down, each retry waits at least half of a
            # doubling delay: never a busy loop.
            policy = cfg.backoff
            for i, pause in enumerate(agent.stream.pauses[1:4], start=1):
                assert pause >= min(policy.max_seconds, policy.initial_seconds * policy.multiplier ** i) / 2
            await controller.start()
            await eventually(lambda: len(controller.reports) >= before + 3, what="reports after restart")
            assert controller.service.streams >= 2
    finally:
        await controller.stop()
    assert strictly_increasing(sequences(controller.reports))


async def test_failover_to_the_second_endpoint(web: HttpTarget, tcp: TcpTarget) -> None:
    first = FakeController("c1")  # not started: its port refuses
    second = await FakeController("c2").start()
    try:
        cfg = agent_config(web, tcp, [first.endpoint, second.endpoint])
        async with Running(Agent(cfg)) as agent:
            await eventually(lambda: len(second.reports) >= 3, what="reports at the second controller")
            assert agent.stream.last_ack is not None and agent.stream.last_ack.controller_id == "c2"
            # And back: the second dies, the first comes up.
            await first.start()
            await second.stop()
            await eventually(lambda: len(first.reports) >= 3, what="reports at the first controller")
    finally:
        await first.stop()
        await second.stop()
    assert strictly_increasing(sequences(second.reports + first.reports))


async def test_moves_back_to_the_first_controller_once_it_accepts(web: HttpTarget, tcp: TcpTarget) -> None:
    # The list is an order of preference (a region's own controllers first): an agent that started before its
    # own controller must not report across regions for good (a cut link would then silence a healthy region).
    first = FakeController("c1")  # not started: its port refuses
    second = await FakeController("c2").start()
    try:
        cfg = agent_config(web, tcp, [first.endpoint, second.endpoint], failback_seconds=0.3)
        with capture_logs() as logs:
            async with Running(Agent(cfg)) as agent:
                await eventually(lambda: len(second.reports) >= 3, what="reports at the second controller")
                await first.start()  # the second stays up: only the preference moves the agent
                await eventually(lambda: len(first.reports) >= 3, what="reports back at the first controller")
                assert agent.stream.last_ack is not None and agent.stream.last_ack.controller_id == "c1"
                assert agent.stream.failbacks == 1 and second.service.half_closed == 1  # left cleanly, once
                at_second = len(second.reports)
                await eventually(lambda: len(first.reports) >= 10, what="more reports at the first")
                assert len(second.reports) == at_second  # and stays with the first
        moves = [e for e in logs if e["event"] == "controller stream failback"]
        assert [(m["left"], m["to"]) for m in moves] == [(second.endpoint, first.endpoint)]
    finally:
        await first.stop()
        await second.stop()
    assert strictly_increasing(sequences(second.reports + first.reports))


async def test_failback_off_keeps_the_stream_where_it_is(web: HttpTarget, tcp: TcpTarget) -> None:
    first = FakeController("c1")
    second = await FakeController("c2").start()
    try:
        cfg = agent_config(web, tcp, [first.endpoint, second.endpoint], failback_seconds=0)
        async with Running(Agent(cfg)) as agent:
            await eventually(lambda: len(second.reports) >= 2, what="reports at the second controller")
            await first.start()
            at_start = len(second.reports)
            # 20 more reports at 0.1 s: two seconds, many failback periods of the test above
            await eventually(lambda: len(second.reports) >= at_start + 20, what="reports still at the second")
            assert first.reports == [] and agent.stream.failbacks == 0
    finally:
        await first.stop()
        await second.stop()


async def test_a_failback_without_acks_waits_longer_each_time(web: HttpTarget, tcp: TcpTarget) -> None:
    # The first accepts connections but never acks (hung): each move back costs an ack timeout, so the wait
    # before the next doubles, and the reports keep reaching the second in between.
    hung = await FakeController("hung").start()
    hung.service.silent = True
    good = await FakeController("good").start()
    try:
        cfg = agent_config(web, tcp, [hung.endpoint, good.endpoint], ack_timeout_seconds=0.3, failback_seconds=0.1)
        async with Running(Agent(cfg)) as agent:
            await eventually(lambda: agent.stream.failbacks >= 3, timeout=20, what="three moves back")
            assert agent.stream._failback_factor >= 4
            before = len(good.reports)
            await eventually(lambda: len(good.reports) >= before + 5, what="reports at the good controller")
    finally:
        await hung.stop()
        await good.stop()


async def test_hung_controller_is_left_after_ack_timeout(web: HttpTarget, tcp: TcpTarget) -> None:
    hung = await FakeController("hung").start()
    hung.service.silent = True
    good = await FakeController("good").start()
    try:
        cfg = agent_config(web, tcp, [hung.endpoint, good.endpoint], ack_timeout_seconds=0.5)
        with capture_logs() as logs:
            async with Running(Agent(cfg)) as agent:
                await eventually(lambda: len(good.reports) >= 2, what="reports at the good controller")
        assert len(hung.reports) >= 1  # it was tried first, and took reports without acking
        assert agent.stream.last_ack is not None and agent.stream.last_ack.controller_id == "good"
        retries = [e for e in logs if e["event"] == "controller stream retry"]
        assert retries[0]["failed"] == hung.endpoint and retries[0]["next"] == good.endpoint
        assert retries[0]["error"] == f"{hung.endpoint}: no ack for 0.5s"
    finally:
        await hung.stop()
        await good.stop()


async def test_a_refused_credential_is_reported_with_its_status(controller: FakeController) -> None:
    # The refusal comes before any report is read (the controller's auth interceptor) while the agent has
    # reports to write at once. An agent that wrote before the stream's headers raced the refusal, and grpc.aio
    # then ended most sessions INTERNAL ("Failed execute_batch"), hiding the UNAUTHENTICATED an operator must see.
    controller.service.refuse = grpc.StatusCode.UNAUTHENTICATED
    stream = ReportStream([controller.endpoint], site="us-east-1", rng=random.Random(1),
                          policy=Backoff(initial_seconds=0.01, max_seconds=0.02, multiplier=2))
    stop = asyncio.Event()

    async def feed() -> None:
        for seq in itertools.count(1):
            stream.offer(steering_pb2.HealthReport(site="us-east-1", region="us-east-1", sequence=seq))
            await asyncio.sleep(0.001)

    with capture_logs() as logs:
        feeder = asyncio.create_task(feed())
        runner = asyncio.create_task(stream.run(stop))
        try:
            await eventually(lambda: len(stream.pauses) >= 12, timeout=20, what="12 refused sessions")
        finally:
            stop.set()
            feeder.cancel()
            await asyncio.gather(runner, feeder, return_exceptions=True)
    errors = [e["error"] for e in logs if e["event"] == "controller stream retry"]
    assert len(errors) >= 12
    assert all(e == f"{controller.endpoint}: UNAUTHENTICATED: refused by test" for e in errors), errors
    assert len([e for e in logs if e["event"] == "controller rejected report"]) >= 12
    assert stream.sent == 0 and controller.reports == []


async def test_a_controller_that_sends_headers_late_still_gets_reports(
        web: HttpTarget, tcp: TcpTarget, controller: FakeController, monkeypatch: pytest.MonkeyPatch) -> None:
    controller.service.early_headers = False  # a controller from before agents waited for the headers
    monkeypatch.setattr(stream_module, "ACCEPT_SECONDS", 0.2)
    async with Running(Agent(agent_config(web, tcp, [controller.endpoint]))) as agent:
        await eventually(lambda: agent.stream.acks >= 2, what="acks from a late-headers controller")
    assert len(controller.reports) >= 2


async def test_invalid_argument_is_logged_and_backed_off(web: HttpTarget, tcp: TcpTarget,
                                                         controller: FakeController) -> None:
    controller.service.reject = "region"
    cfg = agent_config(web, tcp, [controller.endpoint],
                       backoff={"initial_seconds": 0.05, "max_seconds": 1, "multiplier": 2})
    with capture_logs() as logs:
        async with Running(Agent(cfg)) as agent:
            await eventually(lambda: len(agent.stream.pauses) >= 4, timeout=10, what="retries after rejection")
    rejected = [e for e in logs if e["event"] == "controller rejected report"]
    assert rejected and rejected[0]["message"] == "region: rejected by test"
    assert rejected[0]["log_level"] == "error" and rejected[0]["site"] == "us-east-1"
    # The delay keeps doubling: a rejecting controller is not hammered.
    for i, pause in enumerate(agent.stream.pauses[:4]):
        assert pause >= 0.05 * 2 ** i / 2
    assert agent.stream.acks == 0


async def test_controller_can_change_the_report_interval(web: HttpTarget, tcp: TcpTarget,
                                                         controller: FakeController) -> None:
    controller.service.report_interval = 0.25
    cfg = agent_config(web, tcp, [controller.endpoint])
    async with Running(Agent(cfg)) as agent:
        await eventually(lambda: agent.report_interval == 0.25, what="interval from ack")
        controller.service.report_interval = 1e9  # insane: clamped
        await eventually(lambda: agent.report_interval == MAX_INTERVAL, what="clamped interval")


async def test_cache_site_and_geo_load(web: HttpTarget, tcp: TcpTarget, controller: FakeController) -> None:
    cfg = agent_config(web, tcp, [controller.endpoint], site="oc-nyc-1", kind="cache",
                       capacity=4000, load=10, geo_load={"na-east": 7, "world": {"url": web.url("/stats"),
                                                                                  "json_path": "load"}})
    async with Running(Agent(cfg)):
        await eventually(lambda: len(controller.reports) >= 1, what="a report")
    r = controller.reports[0]
    assert (r.site, r.region, r.kind) == ("oc-nyc-1", "us-east-1", steering_pb2.SITE_KIND_CACHE)
    assert (r.capacity, r.load, dict(r.geo_load)) == (4000, 10, {"na-east": 7, "world": 1200})


async def test_unreachable_controllers_do_not_stop_probing(web: HttpTarget, tcp: TcpTarget) -> None:
    cfg = agent_config(web, tcp, [f"127.0.0.1:{free_port()}"])
    async with Running(Agent(cfg)) as agent:
        await eventually(lambda: agent.rounds >= 5 and agent.stream.attempts >= 2, what="rounds while alone")
        assert agent.state.healthy
        assert agent.stream.sent == 0


async def test_stop_while_connecting_to_a_black_hole_is_prompt(web: HttpTarget, tcp: TcpTarget) -> None:
    from tests.support.agent_targets import BlackHoleTarget

    hole = BlackHoleTarget()
    try:
        cfg = agent_config(web, tcp, [hole.address], connect_timeout_seconds=30)
        runner = Running(Agent(cfg))
        agent = await runner.__aenter__()
        await eventually(lambda: agent.stream.attempts >= 1 and agent.rounds >= 1, what="connecting")
        stop_task = asyncio.create_task(runner.__aexit__())
        # Well inside the 30 s connect timeout and the 1.5 s cancel backstop of Agent.run.
        await eventually(stop_task.done, timeout=1.3, what="stop while connecting")
        await stop_task
    finally:
        hole.close()
