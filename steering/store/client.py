"""The connection to etcd: one ``etcd3aio`` client, TLS and auth from the config, and our retry rule.

etcd3aio 0.3.0 is young (one maintainer, 0.x), so everything the rest of the
store needs from it goes through this module: unary calls through
``Conn.call`` (retries with backoff for a bounded time, maps every failure,
including raw ``grpc.aio.AioRpcError``, to ``StoreError``/``StoreUnavailable``),
streams through the raw stubs on the same channel (our own watch and lease
keepalive loops: see watch.py and lease.py for why).

Recovery after an outage is bounded: gRPC's reconnect backoff (which grows
to 120 s by default) is capped at ``etcd.reconnect_max_seconds``, and so is
every retry loop of the store (``Conn.backoff``); a loop waiting out its
backoff is woken the moment the channel reconnects. ``Conn`` also tracks
since when etcd has not answered (``unreachable_since``), so callers can
answer from what they know instead of waiting on a dead etcd.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import random
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import grpc
import grpc.aio
from etcd3aio import (
    Etcd3Client,
    EtcdConnectionError,
    EtcdError,
    EtcdPermissionDeniedError,
    EtcdTransientError,
    EtcdUnauthenticatedError,
)
from etcd3aio._protobuf import LeaseStub, WatchStub

from steering import logs
from steering.addr import parse_hostport
from steering.config import Etcd

log = logs.get(__name__)
T = TypeVar("T")

_TRANSIENT_CODES = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNKNOWN,
                    grpc.StatusCode.CANCELLED, grpc.StatusCode.RESOURCE_EXHAUSTED}
TOKEN_REFRESH_SECONDS = 240.0  # etcd's simple tokens live 300 s by default
KEEPALIVE_TIMEOUT_SECONDS = 5.0  # an unanswered ping drops the connection after this
INITIAL_RECONNECT_MS = 100  # gRPC's floor; its default is 1 s
MIN_CONNECT_TIMEOUT_MS = 1000


class StoreError(Exception):
    """etcd refused or failed a request for a reason retrying will not fix."""


class StoreUnavailable(StoreError):
    """etcd could not be reached (or had no quorum) within the deadline."""


class LeaseNotFound(StoreError):
    """The lease a request named has expired or was revoked."""


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, (EtcdConnectionError, EtcdTransientError, TimeoutError, asyncio.TimeoutError)):
        return True
    if isinstance(exc, grpc.aio.AioRpcError):
        return exc.code() in _TRANSIENT_CODES
    return False


def describe(exc: BaseException) -> str:
    if isinstance(exc, grpc.aio.AioRpcError):
        return f"{exc.code().name}: {exc.details()}"
    return f"{type(exc).__name__}: {exc}"


def channel_options(cfg: Etcd) -> list[tuple[str, int]]:
    """gRPC channel arguments for etcd: bounded reconnects, and pings that find a peer gone silent.

    gRPC's defaults reconnect after 1 s, then 1.6x more each time up to 120 s: after a minute of etcd
    down, a process noticed its return up to a minute and a half late (issue 11)."""
    cap_ms = max(INITIAL_RECONNECT_MS, int(cfg.reconnect_max_seconds * 1000))
    return [
        ("grpc.initial_reconnect_backoff_ms", INITIAL_RECONNECT_MS),
        ("grpc.max_reconnect_backoff_ms", cap_ms),
        # Also the timeout of one connection attempt (default 20 s): an attempt on a member that accepts
        # TCP but never answers (stopped, overloaded) gives up and tries again instead of hanging that long.
        ("grpc.min_reconnect_backoff_ms", max(MIN_CONNECT_TIMEOUT_MS, cap_ms)),
        ("grpc.keepalive_time_ms", int(cfg.keepalive_seconds * 1000)),
        ("grpc.keepalive_timeout_ms", int(KEEPALIVE_TIMEOUT_SECONDS * 1000)),
        # Ping only while calls or streams are open: etcd answers pings on an idle connection with GOAWAY
        # (its enforcement policy does not permit them without streams).
        ("grpc.keepalive_permit_without_calls", 0),
        # Keep pinging under a quiet watch: by default the client stops after two pings without data, and
        # a hung member behind an idle watch went unnoticed.
        ("grpc.http2.max_pings_without_data", 0),
        # The ack of *every* ping is awaited this long, not only keepalive's. gRPC skips a keepalive ping while
        # another ping (its flow-control BDP probe) is in flight, and that one waits 60 s by default: on a
        # member whose packets vanished, a stream sat silent for a minute or more (docs/lab.md, Findings).
        ("grpc.http2.ping_timeout_ms", int(KEEPALIVE_TIMEOUT_SECONDS * 1000)),
    ]


class Backoff:
    """Exponential backoff with full jitter, so replicas that lost etcd together do not return in lockstep.

    With a ``conn``, a sleep ends early when the channel reconnects (and the next sleep after a reconnect
    it did not witness is skipped): the wait is for etcd to come back, so try as soon as it has.
    """

    def __init__(self, first: float = 0.05, cap: float = 2.0, conn: Conn | None = None) -> None:
        self.first, self.cap = first, max(first, cap)
        self._next = first
        self._conn = conn
        self._seen = conn.reconnects if conn is not None else 0

    def reset(self) -> None:
        self._next = self.first

    async def sleep(self) -> None:
        delay = random.uniform(self._next / 2, self._next)
        self._next = min(self.cap, self._next * 2)
        conn = self._conn
        if conn is None:
            await asyncio.sleep(delay)
            return
        if conn.reconnects != self._seen:  # reconnected since our last attempt: try again now
            self._seen = conn.reconnects
            await asyncio.sleep(0)
            return
        await conn.wait_reconnect(delay)
        self._seen = conn.reconnects


class Conn:
    """An open etcd client with the project's retry and error rules."""

    def __init__(self, cfg: Etcd, base_dir: str | Path = ".") -> None:
        self.cfg = cfg
        self.base_dir = Path(base_dir)
        self.client: Etcd3Client | None = None
        self._token: str | None = None
        self._auth_task: asyncio.Task[None] | None = None
        self._auth_lock = asyncio.Lock()
        self._state_task: asyncio.Task[None] | None = None
        self.reconnects = 0  # times the channel became READY after not being so
        self._reconnected = asyncio.Event()
        # Wall-clock time of the first failure to reach etcd since it last answered; None while it answers.
        self.unreachable_since: float | None = None

    # ---- lifecycle
    def _read(self, path: str | None) -> bytes | None:
        if path is None:
            return None
        p = Path(path)
        p = p if p.is_absolute() else self.base_dir / p
        try:
            return p.read_bytes()
        except OSError as exc:
            raise StoreError(f"etcd.tls: cannot read {p}: {exc.strerror or exc}") from None

    async def open(self) -> None:
        tls: dict[str, Any] = {}
        server_name = None
        if self.cfg.tls is not None:
            if self.cfg.tls.ca is None:
                raise StoreError("etcd.tls.ca: required when etcd.tls is set")
            if (self.cfg.tls.cert is None) != (self.cfg.tls.key is None):
                raise StoreError("etcd.tls: give both cert and key for client certificates, or neither")
            tls = {"ca_cert": self._read(self.cfg.tls.ca), "cert_chain": self._read(self.cfg.tls.cert),
                   "cert_key": self._read(self.cfg.tls.key)}
            # The ipv4: multi-address target has no host name to verify; use the first endpoint's host.
            server_name = self.cfg.endpoints[0].rsplit(":", 1)[0]
        # One attempt per call inside the library: the retry policy is ours (Conn.call), with a deadline.
        self.client = Etcd3Client(list(self.cfg.endpoints), rpc_max_attempts=1, tls_server_name=server_name, **tls)
        _set_channel_options(self.client, channel_options(self.cfg))
        _set_target(self.client, await resolve_target(self.cfg.endpoints))
        await self.client.connect()
        _require_leader(self.client)
        self._state_task = asyncio.create_task(self._follow_channel(), name="etcd-channel-state")
        if self.cfg.username:
            await self.call("Auth.Authenticate", self._authenticate)
            self._auth_task = asyncio.create_task(self._refresh_token(), name="etcd-token-refresh")

    async def close(self) -> None:
        for task in (self._auth_task, self._state_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._auth_task = self._state_task = None
        if self.client is not None:
            client, self.client = self.client, None
            await client.close()

    async def _authenticate(self, timeout: float | None = None) -> None:
        assert self.client is not None and self.client.auth is not None
        async with self._auth_lock:
            resp = await self.client.auth.authenticate(self.cfg.username or "", self.cfg.password or "",
                                                       timeout=timeout or self.cfg.timeout_seconds)
            self._token = resp.token
            self.client.set_token(resp.token)
            _require_leader(self.client)  # set_token replaced the services' metadata

    async def _refresh_token(self) -> None:
        while True:
            await asyncio.sleep(TOKEN_REFRESH_SECONDS)
            try:
                await self.call("Auth.Authenticate", self._authenticate)
            except StoreError as exc:
                log.warning("etcd_token_refresh_failed", error=str(exc))

    @property
    def closed(self) -> bool:
        return self.client is None

    # ---- reachability
    def backoff(self, first: float = 0.05) -> Backoff:
        """A backoff capped at ``etcd.reconnect_max_seconds`` that wakes when the channel reconnects."""
        return Backoff(first, self.cfg.reconnect_max_seconds, self)

    async def wait_reconnect(self, timeout: float) -> None:
        """Sleep up to ``timeout`` seconds; return early if the channel becomes READY meanwhile."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._reconnected.wait()

    def answered(self) -> None:
        """etcd answered a call or a stream: it is reachable."""
        if self.unreachable_since is not None:
            log.info("etcd_reachable_again", down_seconds=round(time.time() - self.unreachable_since, 3))
            self.unreachable_since = None

    def failed(self, exc: BaseException | None = None) -> None:
        """A call or stream could not reach etcd (not a refusal: those prove it is there)."""
        if self.unreachable_since is None:
            self.unreachable_since = time.time()
            log.warning("etcd_unreachable", error=describe(exc) if exc is not None else "")

    async def _follow_channel(self) -> None:
        """Count reconnections (READY after anything else) and wake the loops waiting for one."""
        channel = self._channel()
        state = channel.get_state(try_to_connect=False)
        while True:
            await channel.wait_for_state_change(state)
            new = channel.get_state(try_to_connect=False)
            log.debug("etcd_channel_state", state=new.name)
            if new == grpc.ChannelConnectivity.READY and state != grpc.ChannelConnectivity.READY:
                self.reconnects += 1
                self._reconnected.set()
                self._reconnected = asyncio.Event()  # for the next reconnection; current waiters are woken
            elif new == grpc.ChannelConnectivity.TRANSIENT_FAILURE:
                self.failed()
            state = new

    # ---- raw access for streams
    @property
    def kv(self) -> Any:
        if self.client is None or self.client.kv is None:
            raise StoreError("etcd store is not open")
        return self.client.kv

    @property
    def lease(self) -> Any:
        if self.client is None or self.client.lease is None:
            raise StoreError("etcd store is not open")
        return self.client.lease

    def _channel(self) -> grpc.aio.Channel:
        # etcd3aio does not expose its channel; the streams share it (pinned 0.3.0, checked in tests).
        channel: grpc.aio.Channel | None = getattr(self.client, "_channel", None)
        if channel is None:
            raise StoreError("etcd store is not open")
        return channel

    def watch_stub(self) -> Any:
        return WatchStub(self._channel())

    def lease_stub(self) -> Any:
        return LeaseStub(self._channel())

    def metadata(self, require_leader: bool = False) -> tuple[tuple[str, str], ...] | None:
        md: list[tuple[str, str]] = []
        if self._token:
            md.append(("token", self._token))
        if require_leader:
            # etcd cancels such a stream when its member loses the raft leader, instead of letting it
            # hang silently on a partitioned member: we then reconnect to a healthy one.
            md.append(("hasleader", "true"))
        return tuple(md) or None

    # ---- unary calls with retry
    async def call(self, op: str, fn: Callable[..., Awaitable[T]], *args: Any,
                   deadline: float | None = None, **kwargs: Any) -> T:
        """Run ``fn(*args, timeout=..., **kwargs)`` retrying transient failures until ``deadline`` seconds pass.

        ``fn`` must be safe to repeat (puts, reads, txns guarded by a compare).
        """
        budget = self.cfg.timeout_seconds if deadline is None else deadline
        end = time.monotonic() + budget
        backoff = self.backoff()
        reauthed = False
        last: BaseException | None = None
        while True:
            remaining = end - time.monotonic()
            if remaining <= 0:
                raise StoreUnavailable(f"etcd {op}: unavailable for {budget:g}s ({describe(last) if last else 'timeout'})")
            try:
                # One attempt may not eat the whole budget: a hung member must leave time to try another. A
                # third each: round robin may hand the retry to the same silent member again (it stays READY
                # until its pings time out), and three tries make that three times less likely than two.
                attempt = min(remaining, max(1.0, budget / 3))
                async with asyncio.timeout(attempt):
                    result = await fn(*args, timeout=attempt, **kwargs)
                self.answered()
                return result
            except EtcdUnauthenticatedError as exc:
                if self.cfg.username and not reauthed:
                    reauthed = True  # an expired token: log in again once, then retry
                    last = exc
                    with contextlib.suppress(EtcdError, grpc.aio.AioRpcError, TimeoutError):
                        await self._authenticate()
                    continue
                raise StoreError(f"etcd {op}: not authenticated ({exc})") from exc
            except EtcdPermissionDeniedError as exc:
                self.answered()
                raise StoreError(f"etcd {op}: permission denied ({exc})") from exc
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.NOT_FOUND and "lease" in (exc.details() or ""):
                    self.answered()
                    raise LeaseNotFound(f"etcd {op}: {exc.details()}") from exc
                if not is_transient(exc):
                    raise StoreError(f"etcd {op}: {describe(exc)}") from exc
                last = exc
                self.failed(exc)
            except (EtcdError, TimeoutError) as exc:
                if not is_transient(exc):
                    raise StoreError(f"etcd {op}: {describe(exc)}") from exc
                last = exc
                self.failed(exc)
            if end - time.monotonic() <= 0:
                continue
            log.debug("etcd_retry", op=op, error=describe(last) if last else "")
            await backoff.sleep()


def _set_channel_options(client: Etcd3Client, options: list[tuple[str, int]]) -> None:
    """Give etcd3aio's channel our options before it is built.

    etcd3aio 0.3.0 takes no channel options: its ``ConnectionManager`` keeps a list (round robin, its own
    keepalive) that ``connect()`` passes to the channel. Ours replace same-named entries and join the rest.
    The pinned version is checked by tests/test_store_recovery.py; a newer one without it fails loudly here.
    """
    manager = getattr(client, "_manager", None)
    current = getattr(manager, "grpc_options", None)
    if not isinstance(current, list):
        raise StoreError("etcd3aio: cannot set the channel options (ConnectionManager.grpc_options is gone)")
    names = {name for name, _ in options}
    # etcd3aio 0.3.0 declares the manager Optional and no public setter: checked present just above
    manager.grpc_options = [o for o in current if o[0] not in names] + list(options)  # type: ignore[union-attr]


def _require_leader(client: Etcd3Client) -> None:
    """Send ``hasleader: true`` with every KV and lease call (as etcd's Go client's WithRequireLeader does).

    A member cut off from its peers but still reachable by us has no raft leader: without the header it
    accepts a request and answers "request timed out" only after its own deadline (7-11 s seen in the lab,
    docs/failure-modes.md), so round robin made one call in three slow. With it the member refuses at
    once ("etcdserver: no leader", UNAVAILABLE: transient) and the retry goes to another member.
    etcd3aio 0.3.0 keeps each service's metadata in ``_metadata`` (set by ``set_token``): checked here.
    """
    for service in (client.kv, client.lease):
        current = getattr(service, "_metadata", None)
        if not isinstance(current, tuple):
            raise StoreError("etcd3aio: cannot require a leader (the services' _metadata is gone)")
        if ("hasleader", "true") not in current:
            service._metadata = (*current, ("hasleader", "true"))  # type: ignore[union-attr]


def _set_target(client: Etcd3Client, target: str) -> None:
    """etcd3aio 0.3.0 builds an ``ipv4:`` target of the endpoints as given, which gRPC refuses for a host name
    or an IPv6 address ("the target uri is not valid"): give it ours (``resolve_target``)."""
    manager = getattr(client, "_manager", None)
    if not isinstance(getattr(manager, "target", None), str):
        raise StoreError("etcd3aio: cannot set the channel target (ConnectionManager.target is gone)")
    manager.target = target  # type: ignore[union-attr]


def literal_target(endpoints: Sequence[str]) -> str | None:
    """The gRPC target for endpoints that are all IP addresses of one family (pure), else None.

    ``ipv4:10.0.0.1:2379,10.0.0.2:2379`` or ``ipv6:[fd00::1]:2379,...``: one channel balancing over the
    members.
    """
    v4: list[str] = []
    v6: list[str] = []
    for ep in endpoints:
        host, port = parse_hostport(ep)
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            return None
        (v4 if ip.version == 4 else v6).append(f"{ip}:{port}" if ip.version == 4 else f"[{ip}]:{port}")
    if v4 and v6:
        return None
    return "ipv4:" + ",".join(v4) if v4 else "ipv6:" + ",".join(v6)


async def resolve_target(endpoints: Sequence[str]) -> str:
    """The gRPC target for ``etcd.endpoints``: addresses as given; one host name as ``dns:///name:port`` (gRPC
    resolves it again on reconnects: a headless service naming every member works); several names, or
    addresses of both families, resolved now to the addresses of one family (a changed name needs a restart).
    StoreError when a name does not resolve, or the members have no family in common."""
    literal = literal_target(endpoints)
    if literal is not None:
        return literal
    if len(endpoints) == 1:
        host, port = parse_hostport(endpoints[0])
        return f"dns:///{host}:{port}"
    loop = asyncio.get_running_loop()
    per_member: list[tuple[list[str], list[str]]] = []
    for ep in endpoints:
        host, port = parse_hostport(ep)
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise StoreError(f"etcd.endpoints: {ep}: cannot resolve {host!r}: {exc}") from None
        v4 = [f"{i[4][0]}:{port}" for i in infos if i[0] == socket.AF_INET]
        v6 = [f"[{i[4][0]}]:{port}" for i in infos if i[0] == socket.AF_INET6]
        per_member.append((v4, v6))
    if all(v4 for v4, _ in per_member):
        return "ipv4:" + ",".join(dict.fromkeys(a for v4, _ in per_member for a in v4))
    if all(v6 for _, v6 in per_member):
        return "ipv6:" + ",".join(dict.fromkeys(a for _, v6 in per_member for a in v6))
    raise StoreError("etcd.endpoints: some members have only IPv4 addresses and others only IPv6; one channel "
                     "balances over one family: give addresses of one family")
