"""Each probe kind against a real target: pass, fail, and timeout."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from agents.config import GrpcProbe, HttpProbe, TcpProbe
from agents.probes import run_probe
from tests.support import free_port
from tests.support.agent_targets import BlackHoleTarget, GrpcHealthTarget, HttpTarget, TcpTarget


@pytest.fixture
def web() -> Iterator[HttpTarget]:
    t = HttpTarget()
    try:
        yield t
    finally:
        t.close()


@pytest.fixture
async def grpc_target() -> AsyncIterator[GrpcHealthTarget]:
    t = await GrpcHealthTarget().start()
    try:
        yield t
    finally:
        await t.stop()


def http(url: str, **kw: object) -> HttpProbe:
    return HttpProbe.model_validate({"name": "web", "kind": "http", "url": url, **kw})


async def test_http_pass(web: HttpTarget) -> None:
    web.set("/healthz", body="all ok here")
    r = await run_probe(http(web.url("/healthz"), body_contains="ok here"))
    assert (r.ok, r.detail, r.kind, r.name) == (True, "status 200", "http", "web")
    assert r.latency_seconds > 0


async def test_http_wrong_status(web: HttpTarget) -> None:
    web.set("/healthz", status=503, body="down")
    r = await run_probe(http(web.url("/healthz")))
    assert not r.ok and r.detail == "status 503, expected 200"
    r = await run_probe(http(web.url("/healthz"), expect_status=[200, 503]))
    assert r.ok


async def test_http_body_mismatch(web: HttpTarget) -> None:
    web.set("/healthz", body="degraded")
    r = await run_probe(http(web.url("/healthz"), body_contains="ok"))
    assert not r.ok and r.detail == "status 200, body lacks 'ok'"


async def test_http_refused() -> None:
    r = await run_probe(http(f"http://127.0.0.1:{free_port()}/"))
    assert not r.ok and "connect 127.0.0.1" in r.detail


async def test_http_timeout(web: HttpTarget) -> None:
    web.hang = True
    r = await run_probe(http(web.url("/"), timeout_seconds=0.2))
    assert not r.ok and r.detail == "timeout after 0.2s"
    assert r.latency_seconds < 5  # bounded by the probe's timeout, not by the target


async def test_tcp_pass_and_fail() -> None:
    target = TcpTarget()
    probe = TcpProbe(name="db", kind="tcp", address=target.address, timeout_seconds=1)
    r = await run_probe(probe)
    assert r.ok and r.detail == "connected"
    target.close()
    r = await run_probe(probe)
    assert not r.ok and r.detail.startswith(f"connect {target.address}")


async def test_tcp_timeout() -> None:
    hole = BlackHoleTarget()
    try:
        r = await run_probe(TcpProbe(name="db", kind="tcp", address=hole.address, timeout_seconds=0.2))
    finally:
        hole.close()
    assert not r.ok and r.detail == "timeout after 0.2s"


async def test_grpc_serving_and_not(grpc_target: GrpcHealthTarget) -> None:
    await grpc_target.set("", serving=True)
    await grpc_target.set("steering.Api", serving=False)
    whole = GrpcProbe(name="api", kind="grpc", address=grpc_target.address, timeout_seconds=2)
    r = await run_probe(whole)
    assert r.ok and r.detail == "SERVING"
    r = await run_probe(whole.model_copy(update={"service": "steering.Api"}))
    assert not r.ok and r.detail == "NOT_SERVING"
    r = await run_probe(whole.model_copy(update={"service": "unknown.Service"}))
    assert not r.ok and r.detail.startswith("NOT_FOUND")


async def test_grpc_down() -> None:
    r = await run_probe(GrpcProbe(name="api", kind="grpc", address=f"127.0.0.1:{free_port()}", timeout_seconds=2))
    assert not r.ok and r.detail.startswith("UNAVAILABLE")


async def test_grpc_timeout() -> None:
    # A TCP listener that never speaks HTTP/2: the check cannot complete.
    target = TcpTarget()
    try:
        r = await run_probe(GrpcProbe(name="api", kind="grpc", address=target.address, timeout_seconds=0.3))
        assert not r.ok and r.detail == "timeout after 0.3s"
    finally:
        target.close()
