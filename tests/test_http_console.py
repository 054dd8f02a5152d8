"""The console's server side through real HTTP against ``steering controller --http-addr`` and a real etcd:
the page and its files (with their security headers), the live status stream, the configured topology and
the utilization history. The page itself is driven in a real browser by tests/browser/."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from steering.etcdproc import EtcdCluster
from steering.http.console import DIRECTORY
from tests.support.controller import API
from tests.support.http_api import Client, serving
from tests.support.pki import AGENT, OPERATOR, VIEWER, tokens_file
from tests.support.wait import eventually

V1 = "/api/v1"


async def _events(c: Client, token: str | None = None) -> AsyncGenerator[tuple[str, Any], None]:
    """(event, JSON data) of ``/api/v1/stream`` as they come; comments (pings) and ``retry:`` skipped."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with c.session.get(c.base + f"{V1}/stream", headers=headers,
                             timeout=aiohttp.ClientTimeout(total=None, sock_read=60)) as resp:
        assert resp.status == 200, await resp.text()
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        event, data = "message", list[str]()
        async for raw in resp.content:
            line = raw.decode().rstrip("\n")
            if not line:
                if data:
                    yield event, json.loads("\n".join(data))
                event, data = "message", list[str]()
            elif line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                data.append(line[6:])


async def test_the_page_and_its_files_are_served_with_a_strict_policy(etcd: EtcdCluster, tmp_path: Path) -> None:
    async with serving(tmp_path, etcd, agents=False) as s:
        c = s.client
        page = await c.get("/")
        assert page.status == 200 and page.headers["Content-Type"].startswith("text/html")
        assert page.body == (DIRECTORY / "index.html").read_text()
        csp = page.headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
        assert page.headers["X-Content-Type-Options"] == "nosniff"
        for f in DIRECTORY.iterdir():  # every file of the directory, with its type
            if f.name != "index.html":
                got = await c.get(f"/console/{f.name}")
                assert got.status == 200, f.name
                if f.suffix == ".js":
                    assert got.headers["Content-Type"].startswith("text/javascript")
        for bad in ("/console/nope.js", "/console/..%2Fapp.py", "/console/.hidden", "/console/index.html",
                    "/console/a/b.js", "/favicon-not-here"):
            assert (await c.get(bad)).status == 404, bad


async def test_the_stream_sends_the_status_at_once_and_each_change(etcd: EtcdCluster, tmp_path: Path) -> None:
    async with serving(tmp_path, etcd) as s:
        c = s.client
        stream = _events(c)
        kind, first = await anext(stream)
        assert kind == "status" and first["table"]["version"] >= 1
        assert {r["region"] for r in first["regions"]} == {"us-east-1", "us-west-2", "eu-west-1"}
        act = await c.call("POST", f"{V1}/evacuations", json={"region": "eu-west-1", "reason": "console test",
                                                             "mode": "now"})
        assert act.status == 201, act

        async def evacuated() -> dict[str, Any] | None:
            kind, status = await anext(stream)
            assert kind == "status"
            eu = next(r for r in status["regions"] if r["region"] == "eu-west-1")
            return status if eu["evacuation"] and "eu-west-1" not in status["geos"][API]["europe"] else None

        status = await eventually(evacuated, timeout=30, what="the evacuation in the streamed status")
        assert status["table"]["version"] > first["table"]["version"]
        await stream.aclose()

        # the stream takes no parameters; Host rules as every route
        assert (await c.get(f"{V1}/stream", params={"x": "1"})).status == 400
        rebound = await c.get(f"{V1}/stream", headers={"Host": "evil.example"})
        assert rebound.status == 403 and rebound.error["field"] == "Host"


async def test_the_stream_and_the_console_reads_take_tokens(etcd: EtcdCluster, tmp_path: Path) -> None:
    extra = {"auth": {"tokens_file": str(tokens_file(tmp_path / "tokens.yaml"))}}
    async with serving(tmp_path, etcd, extra=extra, agents=False, token=VIEWER) as s:
        c = s.client
        assert (await c.get("/", token=None)).status == 200  # the page asks for a token itself
        missing = await c.get(f"{V1}/stream", token=None)
        assert missing.status == 401 and missing.headers["WWW-Authenticate"].startswith("Bearer")
        assert (await c.get(f"{V1}/stream", token=AGENT)).status == 403
        assert (await c.get(f"{V1}/topology", token=None)).status == 401
        kind, status = await anext(_events(c, VIEWER))
        assert kind == "status" and status["replica"] == "c1"
        topo = await c.get(f"{V1}/topology", token=OPERATOR)
        assert topo.status == 200 and topo.body["auth"] is True


async def test_topology_and_utilization(etcd: EtcdCluster, tmp_path: Path) -> None:
    async with serving(tmp_path, etcd, watermark=0.7) as s:
        c = s.client
        topo = await c.get(f"{V1}/topology")
        assert topo.status == 200 and topo.body["auth"] is False and topo.body["replica"] == "c1"
        assert [r["name"] for r in topo.body["regions"]] == ["us-east-1", "us-west-2", "eu-west-1"]
        assert topo.body["policy"]["watermark"] == 0.7
        api = next(svc for svc in topo.body["services"] if svc["name"] == API)
        assert api["targets_kind"] == "regions" and set(api["targets"]) == {"us-east-1", "us-west-2", "eu-west-1"}
        assert "europe" in api["geos"]

        table = await c.table()

        async def sampled() -> dict[str, Any] | None:
            u = await c.get(f"{V1}/utilization")
            assert u.status == 200
            return u.body if any(x["version"] >= table.version for x in u.body["samples"]) else None

        body = await eventually(sampled, timeout=20, what="a sample of the current table")
        sample = next(x for x in body["samples"] if x["version"] == table.version)
        for region, state in table.regions.items():
            assert sample["utilization"][region] == pytest.approx(state.utilization), region
        assert body["every_seconds"] == 10.0 and body["window_seconds"] == 3600.0
        for bad in ("0", "3601", "x", "nan"):
            assert (await c.get(f"{V1}/utilization", params={"seconds": bad})).status in (400, 422), bad
