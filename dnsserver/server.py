"""Sockets: UDP and TCP listeners around the fast and slow paths, and the table swap.

``DnsServer`` owns the current ``Snapshot``. ``apply_table`` renders a new one
off the event loop, swaps it in with one assignment, then persists the table,
so queries never wait for a render and never see half of one.

UDP is served by one blocking thread per socket (``udpthread``: cheaper per
query than the event loop; ``udpbatch``: many datagrams per system call where
Linux allows), TCP by the event loop. Both call the same answer
functions, which read the tables through one reference, so a swap on the loop
thread is safe for the UDP threads. ``udp_threads=False`` serves UDP on the
event loop instead.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from collections import defaultdict
from collections.abc import Sequence

from dnsserver.fastpath import FastPath
from dnsserver.geo import GeoMap
from dnsserver.metrics import Stats
from dnsserver.persist import save_table
from dnsserver.render import Snapshot, build_snapshot
from dnsserver.slowpath import SlowPath
from dnsserver.udpbatch import BatchUdpWorker, batch_available
from dnsserver.udpthread import UdpWorker, bind_udp
from dnsserver.zones import load_zones
from steering import logs
from steering.addr import parse_hostport
from steering.config import Config
from steering.table import RoutingTable

log = logs.get(__name__)

_SERVFAIL = 2


class DnsServer:
    def __init__(self, cfg: Config, table: RoutingTable | None = None, state_file: str | None = None,
                 stats: Stats | None = None, udp_threads: bool = True, udp_batch: bool = True) -> None:
        self.cfg = cfg
        self.udp_threads = udp_threads
        self.udp_batch = udp_batch
        self.state_file = state_file
        self.stats = stats or Stats()
        self.zones = load_zones(cfg)
        self.geomap = GeoMap(cfg.geos, cfg.default_geo.id)
        self.slow = SlowPath(self.geomap, self.stats)
        self.snapshot: Snapshot = self._render(table)
        self.fast = FastPath(self.geomap, self.snapshot)
        self._note(self.snapshot)
        self._udp: list[asyncio.DatagramTransport] = []
        self._workers: list[UdpWorker] = []
        self._tcp: list[asyncio.base_events.Server] = []
        self._conns: set[asyncio.Transport] = set()
        self.addresses: list[tuple[str, int]] = []

    # ---- tables

    def _render(self, table: RoutingTable | None) -> Snapshot:
        return build_snapshot(self.cfg, self.zones, self.geomap, table, self.stats)

    def _note(self, snap: Snapshot) -> None:
        table = snap.table
        self.stats.table_version = -1 if table is None else table.version
        self.stats.table_generated_at = 0.0 if table is None else table.generated_at
        self.stats.table_applied_at = time.time()
        if table is not None and table.topology and table.topology != self.cfg.fingerprint():
            log.warning("dns.table.topology_mismatch", version=table.version, table_topology=table.topology,
                        config_topology=self.cfg.fingerprint())
        grouped: dict[tuple[str, str], list[str]] = defaultdict(list)
        for fb in snap.fallbacks:
            grouped[(fb.service, fb.reason)].append(fb.geo)
            self.stats.fallback_event(fb.reason)
        for (service, reason), geos in grouped.items():
            log.warning("dns.fallback.fail_open", service=service, reason=reason, geos=geos[:20],
                        geo_count=len(geos), version=self.stats.table_version)

    def install(self, snap: Snapshot) -> None:
        self.snapshot = snap
        self.fast.install(snap)
        self._note(snap)
        log.info("dns.table.applied", version=self.stats.table_version, entries=len(snap.entries))

    def set_table(self, table: RoutingTable, persist: bool = True) -> None:
        """Render and swap in synchronously (tests, start-up); ``apply_table`` is the daemon's way."""
        self.install(self._render(table))
        if persist and self.state_file:
            save_table(self.state_file, table)

    async def apply_table(self, table: RoutingTable) -> None:
        current = self.snapshot.table
        if current is not None and table.version < current.version:
            log.warning("dns.table.version_backwards", version=table.version, previous=current.version)
        snap = await asyncio.to_thread(self._render, table)
        self.install(snap)
        if self.state_file:
            try:
                await asyncio.to_thread(save_table, self.state_file, table)
            except OSError as exc:
                log.error("dns.state.write_failed", path=self.state_file, error=str(exc), version=table.version)

    # ---- answering

    def handle(self, wire: bytes, host: str, tcp: int) -> bytes | None:
        try:
            resp = self.fast.answer(wire, host, tcp)
        except Exception:
            resp = None
        return resp if resp is not None else self.handle_slow(wire, host, tcp)

    def handle_slow(self, wire: bytes, host: str, tcp: int) -> bytes | None:
        try:
            return self.slow.answer(self.snapshot, wire, host, tcp)
        except Exception as exc:  # a packet must never take the server down
            self.stats.errors[0] += 1
            log.error("dns.answer.error", error=f"{type(exc).__name__}: {exc}", client=host)
            if len(wire) < 12 or wire[2] & 0x80:
                return None
            flags = 0x8000 | (((wire[2] >> 3) & 0x0F) << 11) | ((wire[2] & 0x01) << 8) | _SERVFAIL
            return wire[:2] + struct.pack("!HHHHH", flags, 0, 0, 0, 0)

    # ---- sockets

    async def start(self, listen: Sequence[str]) -> list[tuple[str, int]]:
        """Listen on each HOST:PORT for UDP and TCP (port 0: a free port, the same for both)."""
        loop = asyncio.get_running_loop()
        for addr in listen:
            host, port = parse_hostport(addr)
            for _ in range(50):
                sock = bind_udp(host, port)
                bound = sock.getsockname()[1]
                try:
                    tcp = await loop.create_server(lambda: _Tcp(self), host, bound, reuse_address=True)
                except OSError:
                    sock.close()
                    if port:
                        raise
                    continue
                break
            else:
                raise OSError(f"{addr}: no port free for both UDP and TCP")
            self._tcp.append(tcp)
            await self._serve_udp(sock)
            self.addresses.append((host, bound))
            log.info("dns.listening", host=host, port=bound)
        return self.addresses

    async def _serve_udp(self, sock: socket.socket) -> None:
        if self.udp_threads:
            kind = BatchUdpWorker if self.udp_batch and batch_available() else UdpWorker
            worker = kind(sock, self.fast.answer, self.handle_slow)
            worker.start()
            self._workers.append(worker)
        else:
            sock.setblocking(False)
            udp, _proto = await asyncio.get_running_loop().create_datagram_endpoint(lambda: _Udp(self), sock=sock)
            self._udp.append(udp)

    async def close(self) -> None:
        workers, self._workers = self._workers, []
        for worker in workers:
            worker.request_stop()  # all flags first, so the threads wind down together
        for worker in workers:
            await asyncio.to_thread(worker.stop)
        for udp in self._udp:
            udp.close()
        for srv in self._tcp:
            srv.close()
        for conn in list(self._conns):
            conn.abort()
        for srv in self._tcp:
            await srv.wait_closed()
        self._udp.clear()
        self._tcp.clear()


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, server: DnsServer) -> None:
        self.server = server
        self.fast = server.fast.answer

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.sendto = transport.sendto  # type: ignore[attr-defined]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:  # type: ignore[override]
        try:
            resp = self.fast(data, addr[0], 0)
        except Exception:
            resp = None
        if resp is None:
            resp = self.server.handle_slow(data, addr[0], 0)
            if resp is None:
                return
        try:
            self.sendto(resp, addr)
        except OSError:
            pass

    def error_received(self, exc: Exception) -> None:
        pass  # ICMP errors from earlier sends: nothing to do


class _Tcp(asyncio.Protocol):
    """RFC 7766: length-framed messages, several per connection, closed when idle."""

    def __init__(self, server: DnsServer) -> None:
        self.server = server
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.last = 0.0
        self.timer: asyncio.TimerHandle | None = None
        self.host = ""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        stats = self.server.stats
        if stats.tcp_open[0] >= self.server.cfg.dns.tcp_max_connections:
            stats.tcp_refused[0] += 1
            transport.abort()
            return
        self.transport = transport
        self.server._conns.add(transport)
        stats.tcp_accepted[0] += 1
        stats.tcp_open[0] += 1
        peer = transport.get_extra_info("peername")
        self.host = peer[0] if peer else "127.0.0.1"
        loop = asyncio.get_running_loop()
        self.last = loop.time()
        self.timer = loop.call_later(self.server.cfg.dns.tcp_idle_seconds, self._idle)

    def _idle(self) -> None:
        if self.transport is None:
            return
        loop = asyncio.get_running_loop()
        idle = self.server.cfg.dns.tcp_idle_seconds
        left = self.last + idle - loop.time()
        if left <= 0:
            self.transport.close()
        else:
            self.timer = loop.call_later(left, self._idle)

    def data_received(self, data: bytes) -> None:
        if self.transport is None:
            return
        self.last = asyncio.get_running_loop().time()
        buf = self.buf
        buf += data
        while len(buf) >= 2:
            size = (buf[0] << 8) | buf[1]
            if len(buf) < 2 + size:
                break
            msg = bytes(buf[2:2 + size])
            del buf[:2 + size]
            resp = self.server.handle(msg, self.host, 1)
            if resp is not None and not self.transport.is_closing():
                self.transport.write(len(resp).to_bytes(2, "big") + resp)

    def pause_writing(self) -> None:
        if self.transport is not None:
            self.transport.pause_reading()  # a client that does not read gets no more answers queued

    def resume_writing(self) -> None:
        if self.transport is not None:
            self.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is None:
            return
        self.server.stats.tcp_open[0] -= 1
        self.server._conns.discard(self.transport)
        self.transport = None
        if self.timer is not None:
            self.timer.cancel()
