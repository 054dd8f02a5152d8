"""The controller's REST API for tests: ``steering controller --http-addr`` as a subprocess on a real etcd,
a small aiohttp client for it, and what operator actions write in etcd (to show that a refusal wrote nothing).
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from multidict import CIMultiDict

from steering.etcdproc import EtcdCluster
from steering.store import Store
from steering.store.keys import range_end
from steering.table import RoutingTable
from tests.support.controller import ControllerProcess, make_config, write_config
from tests.support.ports import free_port
from tests.support.reporters import REGIONS, FakeAgent, start_agents
from tests.support.wait import eventually

_UNSET: Any = object()
# What an operator action writes (docs/architecture.md §4); the leader's own keys (health, routing, events,
# election, status) change by themselves.
ACTION_PREFIXES = ("overrides/", "requests/", "audit/", "oplog/")


@dataclass(frozen=True)
class Answer:
    status: int
    headers: Mapping[str, str]  # case-insensitive
    body: Any  # the JSON, or the text when it is not JSON

    @property
    def error(self) -> dict[str, Any]:
        assert isinstance(self.body, dict) and "error" in self.body, f"not an error: {self.status} {self.body!r}"
        err: dict[str, Any] = self.body["error"]
        return err


class Client:
    """Calls ``base`` + path; ``token`` as a bearer token; ``ca`` for HTTPS."""

    def __init__(self, session: aiohttp.ClientSession, base: str, token: str | None = None) -> None:
        self.session, self.base, self.token = session, base, token

    async def call(self, method: str, path: str, json: Any = _UNSET, *, data: bytes | str | None = None,
                   headers: Mapping[str, str] | None = None, params: Mapping[str, str] | None = None,
                   token: str | None = _UNSET) -> Answer:
        h = dict(headers or {})
        tok = self.token if token is _UNSET else token
        if tok is not None:
            h["Authorization"] = f"Bearer {tok}"
        kw: dict[str, Any] = {"headers": h, "params": params}
        if json is not _UNSET:
            kw["json"] = json
        elif data is not None:
            kw["data"] = data
        async with self.session.request(method, self.base + path, **kw) as resp:
            text = await resp.text()
            try:
                body: Any = await resp.json(content_type=None) if text else None
            except ValueError:
                body = text
            return Answer(resp.status, CIMultiDict(resp.headers), body)

    async def get(self, path: str, **kw: Any) -> Answer:
        return await self.call("GET", path, **kw)

    async def table(self) -> RoutingTable:
        a = await self.get("/api/v1/table")
        assert a.status == 200, a
        return RoutingTable.from_dict(a.body)


@dataclass
class Served:
    """A controller process serving the REST API, its agents (if any) and a client."""

    proc: ControllerProcess
    base: str
    client: Client
    agents: dict[str, FakeAgent]
    config_path: Path


@asynccontextmanager
async def serving(tmp_path: Path, etcd: EtcdCluster, *, extra: dict[str, Any] | None = None, agents: bool = True,
                  token: str | None = None, ca: Path | None = None, args: Sequence[str] = (),
                  **policy: Any) -> AsyncIterator[Served]:
    """``steering controller --http-addr`` on free loopback ports; with ``agents``, a ``FakeAgent`` per site (so
    every region is healthy and the safety rules bite); ready once the API answers with a table."""
    http_port = free_port()
    config = write_config(tmp_path / "steering.yaml", etcd.endpoints, extra, **policy)
    proc = ControllerProcess(tmp_path, config, extra=["--http-addr", f"127.0.0.1:{http_port}", *args])
    scheme = "https" if ca is not None else "http"
    ctx = ssl.create_default_context(cafile=str(ca)) if ca is not None else None
    fakes: dict[str, FakeAgent] = {}
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx if ctx is not None else False)) as s:
            client = Client(s, f"{scheme}://127.0.0.1:{http_port}", token)

            async def has_table() -> bool:
                if proc.proc.poll() is not None:
                    raise AssertionError(f"controller exited {proc.proc.returncode}: "
                                         f"{proc.log_path.read_text()[-2000:]}")
                try:
                    return (await client.get("/api/v1/table")).status == 200
                except aiohttp.ClientError:
                    return False

            await eventually(has_table, timeout=30, what="the REST API to serve a table")
            if agents:
                fakes = await start_agents(proc.port)

                async def healthy() -> bool:
                    t = await client.table()
                    return all(t.regions[r].health == "healthy" for r in REGIONS)

                await eventually(healthy, timeout=30, what="every region healthy in the table")
            yield Served(proc, client.base, client, fakes, config)
    finally:
        for a in fakes.values():
            await a.stop()
        proc.stop()


@asynccontextmanager
async def action_keys(etcd: EtcdCluster) -> AsyncIterator[Any]:
    """A function returning the keys operator actions write (``ACTION_PREFIXES``) with their values."""
    config = make_config(etcd.endpoints)
    store = Store(config.etcd)
    await store.open()

    async def written() -> dict[bytes, bytes]:
        out = {}
        for p in ACTION_PREFIXES:
            key = f"{store.keys.prefix}/{p}".encode()
            resp = await store.kv.get(key, range_end(key))
            out.update({kv.key: kv.value for kv in resp.kvs})
        return out

    try:
        yield written
    finally:
        await store.close()
