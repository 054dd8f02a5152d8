"""Sockets: UDP and TCP listeners around the fast and slow paths, and the table swap.

``DnsServer`` owns the current ``RenderedAnswers``. ``apply_table`` renders a new one
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
import dataclasses
import gc
import os
import socket
import struct
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import cast

from dnsserver.clientkeys import ClientKeys
from dnsserver.dnssec import ClockError, KeyError_, Signing
from dnsserver.fastpath import FastPath
from dnsserver.geo import GeoMap
from dnsserver.keyreload import key_stamps, read_zone_keys, same_keys, tags
from dnsserver.metrics import Stats
from dnsserver.persist import save_table
from dnsserver.render import RenderedAnswers, build_snapshot
from dnsserver.rrl import RateLimiter
from dnsserver.slowpath import SlowPath, slow_path_for
from dnsserver.udpbatch import BatchUdpWorker, batch_available
from dnsserver.udpthread import UdpWorker, bind_udp
from dnsserver.zones import ZoneError, load_zones
from steering import logs
from steering.addr import parse_hostport
from steering.config import Config
from steering.geoip import GeoIpMap
from steering.geoipwatch import GeoIpReloader, GeoIpState, load_for
from steering.retire import retire_and_trim
from steering.table import RoutingTable

log = logs.get(__name__)

# How often the daemon (tune_interpreter: the collector off) collects what it has not frozen.
GC_SECONDS = 30.0
# The daemon's switch interval (tune_interpreter): how long a UDP thread waits for a busy interpreter before it
# asks for it. At 1 ms a swap's decode and render cost ~1% of the batches a wait over 1 ms and the gaps' p99
# 1.1 ms; at 0.25 ms 0.003% and 0.4 ms, the decode a third slower (docs/benchmarks.md, 2026-12-04 late).
SWITCH_SECONDS = 0.00025

_SERVFAIL = 2


def _never() -> bool:
    return False


class DnsServer:
    def __init__(self, cfg: Config, table: RoutingTable | None = None, state_file: str | None = None,
                 stats: Stats | None = None, udp_threads: bool = True, udp_batch: bool = True,
                 geoip: GeoIpMap | None = None, clock: Callable[[], float] = time.time,
                 tune_interpreter: bool = False) -> None:
        self.cfg = cfg
        self.tune_interpreter = tune_interpreter  # the daemon's: see _render_and_install and _settle
        self._install_lock = asyncio.Lock()
        self.clock = clock  # DNSSEC's signing windows (tests inject one)
        self.udp_threads = udp_threads
        self.udp_batch = udp_batch
        self.state_file = state_file
        self.stats = stats or Stats()
        self.zones = load_zones(cfg)
        self.zone_keys = [z.keys for z in self.zones if z.keys is not None]
        try:
            # DNSSEC (docs/dnssec.md): one signing epoch for every signed zone; follow_signing starts the next
            self.signing = (Signing.create(self.zone_keys, clock(), self.stats.dnssec_signatures)
                            if self.zone_keys else None)
        except ClockError as exc:
            raise ZoneError(f"dnssec: {exc}") from None
        self._publish_keys()
        self._resign_task: asyncio.Task[None] | None = None
        # the key files as read at the start: a change (or SIGHUP) reads them again (reload_keys)
        self._key_stamps = key_stamps(cfg) if self.zone_keys else {}
        self.key_check_seconds = 30.0  # how often the re-signing timer looks at the key files' stamps
        self._key_lock = asyncio.Lock()
        self._reloads: set[asyncio.Task[bool]] = set()
        # geoip: the configured database compiled here unless given (GeoIpError when it cannot be)
        geoip = geoip if geoip is not None else load_for(cfg)
        self.geomap = GeoMap(cfg.geos, cfg.default_geo.id, geoip)
        self.geoip = GeoIpState(geoip.summary() if geoip is not None else None)  # the GeoMap holds the prefixes
        self.slow: SlowPath = slow_path_for(cfg, self.geomap, self.stats)  # EDNS options: dns.nsid, dns.cookies
        self.cookies = self.slow.cookies  # None when dns.cookies.enabled is false
        self.control_plane_reachable = True  # until the feed says otherwise (see set_control_plane_reachable)
        self.snapshot: RenderedAnswers = self._render(table)
        if tune_interpreter:
            gc.collect()  # before answering: what start-up left behind, once, then _settle keeps it small
            gc.freeze()
            # The collector runs when this process says (collect_garbage), never in the middle of decoding a
            # table: set off by allocation, a collection there walked the 100,000 objects a table decoded
            # from etcd is made of, holding every UDP thread for 20-26 ms, several times per table.
            gc.disable()
            # A UDP thread gives the interpreter up at every recvmmsg and asks for it again after; while a
            # table decodes or renders, each ask waited up to the switch interval (5 ms by default), several
            # times per query (the convoy effect): 15-35 ms answers under a swap at 10,000 sites.
            sys.setswitchinterval(SWITCH_SECONDS)
        self._gc_task: asyncio.Task[None] | None = None
        # True while a table is being decoded for this server (the store's watch, in a thread): set by whoever
        # feeds it tables (dnsserver.workerproc: the store's ``decoding``); collect_garbage then waits
        self.table_arriving: Callable[[], bool] = _never
        self.rrl = self._rate_limiter()  # UDP only; None when dns.rrl.enabled is false
        # the fast path counts its own UDP replies against the limit (answer_udp): one pass over the reply
        self.fast = FastPath(self.geomap, self.snapshot, self.slow.routed, self.rrl)
        self._note(self.snapshot)
        self._udp: list[asyncio.DatagramTransport] = []
        self._workers: list[UdpWorker] = []
        self._tcp: list[asyncio.AbstractServer] = []
        self._conns: set[_Tcp] = set()
        self.addresses: list[tuple[str, int]] = []

    # ---- tables

    def _render(self, table: RoutingTable | None) -> RenderedAnswers:
        # the answers served until now: what the new table did not change is taken from them (render.Reuse)
        previous = getattr(self, "snapshot", None)  # none yet when __init__ renders the first
        return build_snapshot(self.cfg, self.zones, self.geomap, table, self.stats, self.signing, previous)

    def _publish_keys(self) -> None:
        """The apex DNSKEY, CDS and CDNSKEY as the keys' timeline has them at the epoch's start (a ZSK
        pre-published, a retired one removed): each RRset replaced by one assignment."""
        if self.signing is None:
            return
        self.stats.dnssec_resign_at = self.signing.resign_at
        self.stats.dnssec_expires_at = float(min(s.expiration for s in self.signing.signers.values()))
        for zone in self.zones:
            if zone.keys is not None:
                zone.nodes[zone.origin].update(zone.keys.apex_rrsets(self.signing.started))

    async def follow_signing(self, check_seconds: float = 600.0) -> None:
        """Start a new DNSSEC signing epoch when the current one is due (half its validity left) and swap in
        answers signed in it, until cancelled: signatures never expire under a running server. Each wake
        also looks at the key files' stamps: a replaced file is read again (``reload_keys``)."""
        while True:
            signing = self.signing
            if signing is None:
                return
            await asyncio.sleep(max(0.05, min(check_seconds, self.key_check_seconds,
                                              signing.resign_at - self.clock())))
            if await asyncio.to_thread(key_stamps, self.cfg) != self._key_stamps:
                await self.reload_keys("key_files_changed")
            await self.resign_if_due()

    async def resign_if_due(self) -> bool:
        """Re-sign (a new epoch, answers re-rendered off the loop) if the current epoch is due."""
        signing = self.signing
        now = self.clock()
        if signing is None or not signing.due(now):
            return False
        async with self._key_lock:  # not while a key reload re-signs: the last render installed must be the newest
            if self.signing is not signing:
                return False  # a key reload started a new epoch meanwhile
            return await self._resign(now)

    async def _resign(self, now: float) -> bool:
        try:
            self.signing = Signing.create(self.zone_keys, now, self.stats.dnssec_signatures)
        except ClockError as exc:
            self.stats.errors[0] += 1  # the old signatures stay until the clock (or the key timeline) is right
            log.error("dns.dnssec.clock_refused", error=str(exc))
            return False
        self._publish_keys()
        await self._render_and_install(self.snapshot.table)
        log.info("dns.dnssec.resigned", zones=[str(k.origin) for k in self.zone_keys],
                 resign_at=round(self.signing.resign_at), signatures=self.signing.signatures_made())
        return True

    # ---- DNSSEC key files read again (docs/dnssec.md, "Replacing key files")

    def request_key_reload(self, reason: str = "sighup") -> None:
        """SIGHUP's handler: read the key files again in a task (the loop goes on answering)."""
        task = asyncio.get_running_loop().create_task(self.reload_keys(reason), name="dnssec-key-reload")
        self._reloads.add(task)
        task.add_done_callback(self._reloads.discard)

    async def reload_keys(self, reason: str) -> bool:
        """Read every signed zone's key files again; all usable: sign with them from a new epoch started now
        (answers re-rendered off the loop, swapped in at once). One not usable (missing, unreadable, not a
        key, not the zone's algorithm): the keys in use stay, and one line and a counter say which file
        and why. True when the files were read (changed or not)."""
        if self.signing is None:
            log.info("dns.dnssec.key_reload_skipped", reason=reason, why="no zone is signed")
            return False
        async with self._key_lock:  # SIGHUP and the timer may ask at once: one reload at a time
            # stamps first: a file replaced while it is read is seen as changed at the next look
            self._key_stamps = await asyncio.to_thread(key_stamps, self.cfg)
            try:
                fresh = await asyncio.to_thread(read_zone_keys, self.cfg)
            except KeyError_ as exc:
                return self._key_reload_failed(reason, exc.field_name, exc.path, str(exc))
            except Exception as exc:  # a file no check foresaw (a PEM of an unsupported type): named by type only
                return self._key_reload_failed(reason, "", "", f"a key file cannot be used: {type(exc).__name__}")
            self.stats.dnssec_key_reloads[0] += 1
            if same_keys(self.zone_keys, fresh):
                log.info("dns.dnssec.keys_unchanged", reason=reason, keys=tags(fresh))
                return True
            old_zones, old_keys, old_signing = self.zones, self.zone_keys, self.signing
            by_origin = {k.origin: k for k in fresh}
            # new zone objects with their own apex: the answers served until the swap keep the old DNSKEY
            self.zones = [z if z.keys is None else dataclasses.replace(
                z, keys=by_origin[z.origin], nodes={**z.nodes, z.origin: dict(z.nodes[z.origin])})
                for z in self.zones]
            self.zone_keys = [z.keys for z in self.zones if z.keys is not None]
            try:
                resigned = await self._resign(self.clock())
            except Exception as exc:  # the answers in use stay; so must the keys they were signed with
                resigned = False
                log.error("dns.dnssec.resign_failed", error=f"{type(exc).__name__}: {exc}")
            if not resigned:
                self.zones, self.zone_keys, self.signing = old_zones, old_keys, old_signing
                self._publish_keys()  # the metrics' epoch figures back to the one in use
                return False
            log.info("dns.dnssec.keys_reloaded", reason=reason, previous=tags(old_keys), keys=tags(fresh))
            return True

    def _key_reload_failed(self, reason: str, field: str, path: str, error: str) -> bool:
        self.stats.dnssec_key_reload_errors[0] += 1
        log.error("dns.dnssec.key_reload_failed", reason=reason, field=field, file=path, error=error,
                  kept=tags(self.zone_keys))
        return False

    def _note(self, snap: RenderedAnswers) -> None:
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

    def install(self, snap: RenderedAnswers, fast_installed: bool = False) -> None:
        """Serve ``snap``; ``fast_installed``: the fast path has it already (``_render_for_install``)."""
        self.snapshot = snap
        if not fast_installed:
            self.fast.install(snap)
        self._note(snap)
        self._update_stale()
        log.info("dns.table.applied", version=self.stats.table_version, entries=len(snap.entries))
        self._settle()

    async def _render_and_install(self, table: RoutingTable | None) -> None:
        """Render off the loop and swap in. The fast path's tables are built in the render's thread too (its
        ``install`` ends in one reference swap, safe from any thread): half a second of CPU at 10,000 sites,
        which on the loop held TCP answers back. With ``tune_interpreter`` the cyclic collector is off (the
        render and those tables allocate hundreds of thousands of objects, and each collection they would set
        off walks all of them, holding the interpreter: 30-400 ms pauses in bench/dns_swap.py; ``_settle``
        freezes them with the rest, ``collect_garbage`` collects what is not frozen between swaps), and the
        interpreter switches threads every ``SWITCH_SECONDS`` instead of 5 ms (see ``__init__``)."""
        async with self._install_lock:  # one at a time: the fast path and the rest swap in the same order
            snap = await asyncio.to_thread(self._render_for_install, table)
            old = [self.snapshot]
            self.install(snap, fast_installed=True)
        # The answers and the table just replaced, freed a piece at a time off the loop (dropped whole, a
        # table decoded from etcd alone is a 6-11 ms cascade at 10,000 sites that no UDP thread can answer in),
        # then malloc's free pages given back: the next table may have been rendering meanwhile, three alive at
        # once, and that high-water mark stayed resident otherwise (docs/benchmarks.md, "Memory")
        await asyncio.to_thread(retire_and_trim, old)

    def _render_for_install(self, table: RoutingTable | None) -> RenderedAnswers:
        snap = self._render(table)
        old = self.fast.tables
        self.fast.install(snap)
        _release(old)
        return snap

    def _settle(self) -> None:
        """With ``tune_interpreter``, move what is alive now (the answers just installed, the config's records:
        a million objects at 10,000 sites) out of the cyclic collector's reach. A full collection walks every tracked
        object while holding the interpreter, so without this one came every table or two and stopped the UDP
        threads for 0.3-0.9 s (bench/dns_swap.py). The answers hold no reference cycles: when the next swap
        drops them, reference counting frees them, frozen or not. Cyclic garbage alive at a freeze would stay
        (the bench counts it: none at all in its runs), hence only in the daemon, not in tests' servers."""
        if self.tune_interpreter:
            gc.freeze()

    def set_table(self, table: RoutingTable, persist: bool = True) -> None:
        """Render and swap in synchronously (tests, start-up); ``apply_table`` is the daemon's way."""
        self.install(self._render(table))
        if persist and self.state_file:
            save_table(self.state_file, table)

    async def apply_table(self, table: RoutingTable) -> None:
        # only the version: a reference to the table served until now, held across the swap, would keep
        # retire from taking it apart, and it would go in one cascade on the loop when this returns
        current = self.snapshot.table.version if self.snapshot.table is not None else None
        if current is not None and table.version < current:
            log.warning("dns.table.version_backwards", version=table.version, previous=current)
        await self._render_and_install(table)
        if self.state_file:
            try:
                await asyncio.to_thread(save_table, self.state_file, table)
            except OSError as exc:
                log.error("dns.state.write_failed", path=self.state_file, error=str(exc), version=table.version)

    # ---- the GeoIP database (docs/geoip.md)

    async def follow_geoip(self) -> None:
        """Reload the GeoIP database when its file changes, until cancelled (nothing without ``geoip``).
        The map and its block index are built in a thread; the swap is reference assignments on the loop,
        so a query sees the old map or the new one (``FastPath.set_geomap``)."""
        if self.cfg.geoip is None:
            return
        await GeoIpReloader.for_config(self.cfg, self.geoip, self._prepare_geomap, self.install_geomap,
                                       "dns").run()

    def _prepare_geomap(self, geoip: GeoIpMap) -> tuple[GeoMap, ClientKeys]:
        geomap = GeoMap(self.cfg.geos, self.cfg.default_geo.id, geoip)
        return geomap, ClientKeys(geomap)

    def install_geomap(self, prepared: tuple[GeoMap, ClientKeys]) -> None:
        """Answer with another geo map (the same geos: the rendered answers stay as they are)."""
        geomap, keys = prepared
        self.geomap = geomap
        self.slow.geomap = geomap
        self.fast.set_geomap(geomap, keys)

    # ---- stale answers (EDE 3)

    def set_control_plane_reachable(self, reachable: bool) -> None:
        """The feed's word on etcd, given after every probe; staleness is re-judged each time, so it also
        begins when the table grows older than dns.stale_answer_seconds while etcd stays away."""
        self.control_plane_reachable = reachable
        self.stats.control_plane_reachable[0] = int(reachable)
        self._update_stale()

    def _update_stale(self) -> None:
        table = self.snapshot.table
        age = float("inf") if table is None else time.time() - table.generated_at
        stale = not self.control_plane_reachable and age > self.cfg.dns.stale_answer_seconds
        if stale == self.slow.stale:
            return
        self.slow.stale = stale
        self.fast.set_stale(stale)
        self.stats.stale[0] = int(stale)
        log.warning("dns.answers.stale" if stale else "dns.answers.fresh", version=self.stats.table_version,
                    table_age_seconds=None if table is None else round(age, 1),
                    control_plane_reachable=self.control_plane_reachable)

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

    async def start(self, listen: Sequence[str] = (),
                    bound: Sequence[tuple[socket.socket, socket.socket]] = ()) -> list[tuple[str, int]]:
        """Listen on each HOST:PORT for UDP and TCP (port 0: a free port, the same for both).

        ``bound``: (UDP, TCP) socket pairs already bound to one address each (a supervisor's,
        shared with other workers through SO_REUSEPORT); the TCP socket is put to listening here,
        so the kernel hands this process connections only once it can accept them.
        """
        loop = asyncio.get_running_loop()
        if self.signing is not None and self._resign_task is None:
            self._resign_task = asyncio.create_task(self.follow_signing(), name="dnssec-resign")
        if self.tune_interpreter and self._gc_task is None:
            self._gc_task = asyncio.create_task(self.collect_garbage(), name="dns-gc")
        for udp_sock, tcp_sock in bound:
            udp_sock.setblocking(True)
            tcp_srv = await loop.create_server(lambda: _Tcp(self), sock=tcp_sock)
            self._tcp.append(tcp_srv)
            await self._serve_udp(udp_sock)
            host, bound_port = udp_sock.getsockname()[:2]
            self.addresses.append((host, bound_port))
            log.info("dns.listening", host=host, port=bound_port)
        for addr in listen:
            host, port = parse_hostport(addr)
            for _ in range(50):
                sock = bind_udp(host, port)
                udp_port = sock.getsockname()[1]
                try:
                    tcp = await loop.create_server(lambda: _Tcp(self), host, udp_port, reuse_address=True)
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
            self.addresses.append((host, udp_port))
            log.info("dns.listening", host=host, port=udp_port)
        return self.addresses

    def _rate_limiter(self) -> RateLimiter | None:
        rrl = self.cfg.dns.rrl
        if not rrl.enabled:
            return None
        zones = [z.origin.to_digestable() for z in self.zones]  # lower-case wire form
        return RateLimiter(rrl, zones, self.stats, self._has_server_cookie)

    def _has_server_cookie(self, wire: bytes, host: str) -> bool:
        """Rate limiting's exemption for clients that proved their address (asked only about a reply over the
        limit). ``self.cookies`` is read per call: None (dns.cookies.enabled false) exempts nobody."""
        cookies = self.cookies
        return cookies is not None and cookies.query_has_valid_server_cookie(wire, host)

    @property
    def udp_mode(self) -> str:
        """How UDP is served: ``batch`` (a thread per socket, recvmmsg/sendmmsg), ``thread`` (a thread per
        socket, a datagram per call: asked for, or batches unavailable here) or ``loop`` (the event loop)."""
        if not self.udp_threads:
            return "loop"
        return "batch" if self.udp_batch and batch_available() else "thread"

    async def _serve_udp(self, sock: socket.socket) -> None:
        self.stats.udp_inodes.append(os.fstat(sock.fileno()).st_ino)  # its kernel drop count, read on scrape
        if self.udp_threads:
            worker: UdpWorker
            if self.udp_mode == "batch":
                worker = BatchUdpWorker(sock, self.fast.answer_udp, self.handle_slow, self.rrl, self.stats)
            else:
                worker = UdpWorker(sock, self.fast.answer_udp, self.handle_slow, self.rrl)
            worker.start()
            self._workers.append(worker)
        else:
            sock.setblocking(False)
            udp, _proto = await asyncio.get_running_loop().create_datagram_endpoint(lambda: _Udp(self), sock=sock)
            self._udp.append(udp)

    async def collect_garbage(self, every: float = GC_SECONDS) -> None:
        """With ``tune_interpreter`` (the collector off): every ``every`` seconds, collect what is not frozen,
        unless a table is being decoded or swapped in (its objects are about to be frozen, and walking them,
        one call that no thread switch interrupts, is the stall this avoids: 9-11 ms gaps in
        bench/dns_swap.py when a collection met a decode). What is not frozen is what this process made since
        the last swap: a short walk."""
        while True:
            await asyncio.sleep(every)
            if self._install_lock.locked() or self.table_arriving():
                continue
            t0 = time.perf_counter()
            found = gc.collect()
            log.debug("dns.gc.collected", unreachable=found, seconds=round(time.perf_counter() - t0, 4))

    async def close(self) -> None:
        if self._gc_task is not None:
            self._gc_task.cancel()
            await asyncio.gather(self._gc_task, return_exceptions=True)
            self._gc_task = None
        if self._resign_task is not None:
            self._resign_task.cancel()
            await asyncio.gather(self._resign_task, return_exceptions=True)
            self._resign_task = None
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
            conn.shutdown()
        for srv in self._tcp:
            await srv.wait_closed()
        self._udp.clear()
        self._tcp.clear()


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, server: DnsServer) -> None:
        self.server = server
        self.fast = server.fast.answer_udp  # limited already (b"": drop); the slow path's replies are limited here
        self.rrl = server.rrl

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.sendto = cast(asyncio.DatagramTransport, transport).sendto

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        rrl = self.rrl
        now = int(time.monotonic())
        if rrl is not None:
            rrl.tick(now)
        try:
            resp = self.fast(data, addr[0], 0)
        except Exception:
            resp = None
        if resp is None:
            resp = self.server.handle_slow(data, addr[0], 0)
            if resp is None:
                return
            if rrl is not None:
                try:
                    resp = rrl.check(data, resp, addr[0], now)
                except Exception:
                    pass  # a limiter bug lets the reply go
                if resp is None:
                    return
        if not resp:
            return  # the fast path's rate limit dropped it
        try:
            self.sendto(resp, addr)
        except OSError:
            pass

    def error_received(self, exc: Exception) -> None:
        pass  # ICMP errors from earlier sends: nothing to do


def _release(tables: object) -> None:
    """Free the fast path's previous tables one entry at a time. Dropped whole, their objects (a million at
    10,000 sites, signed) are freed in one cascade of deallocations that no thread switch interrupts: 25-35 ms
    unsigned, 60-140 ms signed, with no UDP thread answering. Entry by entry, the interpreter switches threads
    between them. A query that took the old tables just before the swap and finds its entry gone goes to the
    slow path, which answers it from the snapshot."""
    memo = getattr(tables, "memo", None)
    # folded shares entries' values; the memo (its shards), the sources and the slot tables hold what they held
    for table in [getattr(tables, "folded", None), getattr(tables, "entries", None),
                  *(memo if isinstance(memo, list) else ()), getattr(tables, "sources", None),
                  getattr(tables, "slot_tables", None)]:
        if isinstance(table, dict):
            while table:
                table.popitem()


class _Tcp(asyncio.Protocol):
    """RFC 7766: length-framed messages, pipelined, closed when idle, after a query limit, or over the cap.

    Works with any loop's transports (uvloop's are not ``asyncio.Transport``
    subclasses, only the same shape). Every callback catches its own
    exceptions: one log line and a counter, the connection aborted, never a
    traceback from the loop. Closes we start after answering (query limit,
    bad framing) are graceful: the FIN goes after the answers already
    written (``write_eof``), and what still arrives is read and dropped until
    the peer closes or the idle time passes, so the kernel never answers
    unread input with a reset that could lose those answers.
    """

    def __init__(self, server: DnsServer) -> None:
        self.server = server
        self.stats = server.stats
        self.idle = server.cfg.dns.tcp_idle_seconds
        self.left = server.cfg.dns.tcp_max_queries_per_connection
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.last = 0.0
        self.timer: asyncio.TimerHandle | None = None
        self.host = ""
        self.ending: str | None = None  # why we are closing, once we started to

    # ---- callbacks: each catches everything (a connection must never disturb the loop)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        stream = cast(asyncio.Transport, transport)  # a TCP server's connection: asyncio gives a Transport
        try:
            self._open(stream)
        except Exception as exc:
            self._fail("connection_made", exc)
            if self.transport is None:
                stream.abort()

    def data_received(self, data: bytes) -> None:
        try:
            self._read(data)
        except Exception as exc:
            self._fail("data_received", exc)

    def eof_received(self) -> bool | None:
        try:
            if self.buf and self.ending is None:  # a frame cut short: the peer stopped mid-message
                self.stats.tcp_errors["framing"][0] += 1
                self.buf.clear()
        except Exception as exc:
            self._fail("eof_received", exc)
        return None  # close our side too, after what is already written

    def pause_writing(self) -> None:
        try:
            if self.transport is not None and not self.transport.is_closing():
                self.transport.pause_reading()  # a client that does not read gets no more answers queued
        except Exception as exc:
            self._fail("pause_writing", exc)

    def resume_writing(self) -> None:
        try:
            if self.transport is not None and not self.transport.is_closing():
                self.transport.resume_reading()
        except Exception as exc:
            self._fail("resume_writing", exc)

    def connection_lost(self, exc: Exception | None) -> None:
        try:
            self._lost(exc)
        except Exception as err:
            self.transport = None
            self._fail("connection_lost", err)

    # ---- the work

    def _open(self, transport: asyncio.Transport) -> None:
        stats = self.stats
        if stats.tcp_open[0] >= self.server.cfg.dns.tcp_max_connections:
            stats.tcp_refused[0] += 1
            transport.abort()
            return
        stats.tcp_accepted[0] += 1
        stats.tcp_open[0] += 1
        self.transport = transport  # from here on, connection_lost accounts for this connection
        self.server._conns.add(self)
        peer = transport.get_extra_info("peername")
        self.host = peer[0] if peer else "127.0.0.1"
        self.loop = asyncio.get_running_loop()
        self.last = self.loop.time()
        self.timer = self.loop.call_later(self.idle, self._on_idle)

    def _read(self, data: bytes) -> None:
        t = self.transport
        if t is None or self.ending is not None or self.loop is None:
            return  # closing: input is read and dropped (see the class comment)
        self.last = self.loop.time()
        buf = self.buf
        buf += data
        out: list[bytes] = []
        start = 0
        have = len(buf)
        while have - start >= 2:
            size = (buf[start] << 8) | buf[start + 1]
            if size < 12:  # shorter than a DNS header: the client is broken or out of step
                self.stats.tcp_errors["framing"][0] += 1
                self.ending = "framing"
                break
            end = start + 2 + size
            if end > have:
                break
            resp = self.server.handle(bytes(buf[start + 2:end]), self.host, 1)
            start = end
            if resp is not None:
                out.append(len(resp).to_bytes(2, "big"))
                out.append(resp)
            self.left -= 1
            if self.left <= 0:
                self.ending = "query_limit"
                break
        if self.ending is None:
            del buf[:start]
        else:
            buf.clear()
        if out and not t.is_closing():
            t.write(b"".join(out))  # one write (one system call) for all the answers this read produced
        if self.ending is not None:
            self._finish()

    def _finish(self) -> None:
        """Half-close after the answers written; the idle timer bounds how long we wait for the peer."""
        t = self.transport
        if t is None or t.is_closing():
            return
        if t.can_write_eof():
            t.write_eof()
        else:
            t.close()

    def _on_idle(self) -> None:
        try:
            t, loop = self.transport, self.loop
            if t is None or loop is None:
                return
            left = self.last + self.idle - loop.time()
            if left > 0:
                self.timer = loop.call_later(left, self._on_idle)
                return
            self.ending = self.ending or "idle"
            if t.get_write_buffer_size():
                t.abort()  # the client stopped reading: close() would wait for it forever
            else:
                t.close()
        except Exception as exc:
            self._fail("idle", exc)

    def shutdown(self) -> None:
        """Server stop: drop the connection now."""
        if self.transport is not None:
            self.ending = self.ending or "shutdown"
            self.transport.abort()

    def _fail(self, where: str, exc: BaseException) -> None:
        self.stats.tcp_errors["exception"][0] += 1
        log.error("dns.tcp.error", where=where, error=f"{type(exc).__name__}: {exc}", client=self.host or None)
        t = self.transport
        if t is not None:
            self.ending = "exception"
            try:
                t.abort()
            except Exception:  # nothing more to do for this connection; the counter and the line above say it
                pass

    def _lost(self, exc: Exception | None) -> None:
        if self.transport is None:
            return  # refused at the cap, or already accounted
        reason = self.ending or ("reset" if exc is not None else "peer")
        self.transport = None
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        stats = self.stats
        stats.tcp_open[0] -= 1
        stats.tcp_closed[reason][0] += 1
        self.server._conns.discard(self)
