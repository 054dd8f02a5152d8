"""``steering dns --workers N``: N worker processes behind one address, kept running.

The supervisor binds, for every worker and every listen address, one UDP and
one TCP socket with SO_REUSEPORT (the first bind picks the port when it is
0), starts the worker (``python -m dnsserver.workerproc``) with those sockets
inherited, and closes its own copies: the kernel balances datagrams and
connections over the workers' sockets only. TCP sockets are bound here but
put to listening by the worker, so no connection waits in a backlog nobody
accepts from while a worker starts.

It serves the one /metrics (``statsmerge``: counters summed, gauges per
worker), restarts a worker that exits (new sockets on the same port; a
worker that keeps dying young is restarted later and later, up to
``MAX_BACKOFF``), and on SIGTERM/SIGINT stops the workers (TERM, wait, KILL)
and exits 0. A worker's death shows as EOF on its control socket, which
nothing else holds; the supervisor's shows to the workers the same way, and
through PR_SET_PDEATHSIG.

Errors it can see before starting workers (the configuration, the zone files,
an address in use, the metrics port) end it with one line and 2 or 1, as in
the single-process mode; a worker that exits before it is ready ends the
start the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client.core import Metric
from prometheus_client.registry import Collector

import dnsserver
from dnsserver.statsmerge import Family, Merger, gauge, to_metrics
from dnsserver.workerproc import CONTROL_LINE_LIMIT
from steering import logs
from steering.addr import parse_hostport
from steering.config import Config

log = logs.get("dnsserver.supervisor")

STABLE_SECONDS = 10.0  # a worker that ran this long is restarted at once when it dies
MAX_BACKOFF = 30.0
READY_SECONDS = 60.0  # the first start of every worker (render, bind) must finish within this
STOP_SECONDS = 8.0  # TERM to KILL; below systemd's TimeoutStopSec, so the supervisor still exits 0
STATS_SECONDS = 5.0  # a worker slower than this to report is shown with its last samples

Pair = tuple[socket.socket, socket.socket]  # (UDP, TCP) on one address


# ---- pure parts


def worker_count(cfg: Config, override: int | None) -> int:
    """``--workers``, else ``dns.workers``, else the CPUs this process may run on (at most 64)."""
    if override is not None:
        return override
    if cfg.dns.workers is not None:
        return cfg.dns.workers
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return max(1, min(64, cpus))


def backoff(quick_failures: int) -> float:
    """Seconds before restarting a worker that died young ``quick_failures`` times in a row."""
    if quick_failures <= 0:
        return 0.0
    return min(MAX_BACKOFF, 0.5 * 2.0 ** min(quick_failures - 1, 16))


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit code {returncode}"


def worker_env(cfg: Config, secret: str) -> dict[str, str]:
    """Variables every worker gets besides its index: the DNS cookie secret shared by all of them
    (none when ``dns.cookies.secret_file`` names where secrets come from)."""
    return {} if cfg.dns.cookies.secret_file else {"STEERING_DNS_COOKIE_SECRET": secret}


def new_secret() -> str:
    return secrets.token_hex(16)  # 32 hex characters, one per supervisor start


# ---- sockets


def _bind(host: str, port: int, kind: int, reuseport: bool) -> socket.socket:
    family, _, proto, _, addr = socket.getaddrinfo(host, port, type=kind,
                                                   flags=socket.AI_PASSIVE | socket.AI_NUMERICHOST)[0]
    sock = socket.socket(family, kind, proto)
    try:
        if reuseport:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if kind == socket.SOCK_STREAM:
            # as the single-process mode (asyncio's create_server): restarts bind past TIME_WAIT,
            # and an IPv6 TCP address is IPv6 only
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(addr)
    except OSError:
        sock.close()
        raise
    return sock


_SO_ATTACH_REUSEPORT_CBPF = 51  # Linux 4.5+
_SKF_AD_RANDOM = 0xFFFFF000 + 56  # classic BPF ancillary load: a random u32
_spread_warned = [False]


def spread_datagrams(sock: socket.socket, workers: int) -> bool:
    """Have the kernel hand each datagram of ``sock``'s SO_REUSEPORT group to a random member.

    Without it the group picks by a hash of the source address and port, so a few busy
    resolvers (a few flows) can load one worker far more than another (seen: 72 % / 28 % with 32
    flows). DNS over UDP keeps no state per flow, so any worker may answer any datagram. The
    program belongs to the group and is replaced by the same one each time a socket is bound, so
    a restarted worker's socket (which joins last) is covered. While a worker is missing, an index
    past the group falls back to the hash. Returns False where the kernel does not support it.
    """
    import ctypes

    code = ((0x20, 0, 0, _SKF_AD_RANDOM),  # A = random
            (0x94, 0, 0, workers),  # A %= workers
            (0x16, 0, 0, 0))  # return A: the index in the group
    program = ctypes.create_string_buffer(b"".join(struct.pack("HBBI", *op) for op in code))
    fprog = struct.pack("HL", len(code), ctypes.addressof(program))  # struct sock_fprog
    try:
        sock.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_REUSEPORT_CBPF, fprog)
    except OSError as exc:
        if not _spread_warned[0]:
            _spread_warned[0] = True
            log.warning("dns.workers.spread_unavailable", error=str(exc), balancing="source hash")
        return False
    return True


def bind_pair(host: str, port: int, workers: int = 1) -> Pair:
    """UDP and TCP on HOST:PORT with SO_REUSEPORT (a worker's share of the address); with more than one
    worker, datagrams are spread over the group at random (``spread_datagrams``)."""
    udp = _bind(host, port, socket.SOCK_DGRAM, True)
    if workers > 1 and sys.platform.startswith("linux"):
        spread_datagrams(udp, workers)
    try:
        tcp = _bind(host, port, socket.SOCK_STREAM, True)
    except OSError:
        udp.close()
        raise
    return udp, tcp


def close_pairs(pairs: list[Pair]) -> None:
    for udp, tcp in pairs:
        udp.close()
        tcp.close()


def bind_address(addr: str, workers: int) -> tuple[str, int, list[list[Pair]]]:
    """Bind ``workers`` pairs on ADDR; returns (host, port, pairs per worker).

    The port is first taken without SO_REUSEPORT, for UDP and TCP, and released: so an address
    already in use (by anything, another ``steering dns`` included, which would otherwise join
    our group unnoticed) fails here, and port 0 finds a port free for both.
    """
    host, port = parse_hostport(addr)
    for _ in range(50):  # port 0: a UDP port may be taken for TCP; try another
        probe = _bind(host, port, socket.SOCK_DGRAM, False)
        chosen = probe.getsockname()[1]
        try:
            _bind(host, chosen, socket.SOCK_STREAM, False).close()
        except OSError:
            probe.close()
            if port:
                raise
            continue
        probe.close()
        pairs: list[Pair] = []
        try:
            for _ in range(workers):
                pairs.append(bind_pair(host, chosen, workers))
        except OSError:
            close_pairs(pairs)
            if port:
                raise
            continue  # someone took the port between the probe and our binds
        return host, chosen, [[pair] for pair in pairs]
    raise OSError(f"{addr}: no port free for both UDP and TCP")


# ---- one worker


class Channel:
    """The supervisor's end of a worker's control socket: requests out, replies and EOF in."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.ready = asyncio.Event()
        self.closed = asyncio.Event()
        self._writer: asyncio.StreamWriter | None = None
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._next = 0
        self._task: asyncio.Task[None] | None = None

    async def open(self) -> None:
        reader, self._writer = await asyncio.open_unix_connection(sock=self.sock, limit=CONTROL_LINE_LIMIT)
        self._task = asyncio.create_task(self._read(reader))

    async def _read(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                line = await reader.readline()
                if not line:
                    break
                try:
                    msg = json.loads(line)
                except (ValueError, RecursionError):
                    continue
                if not isinstance(msg, dict):
                    continue
                if msg.get("ready"):
                    self.ready.set()
                fut = self._pending.pop(msg["id"], None) if isinstance(msg.get("id"), int) else None
                if fut is not None and not fut.done():
                    fut.set_result(msg)
        except (OSError, ValueError, asyncio.LimitOverrunError):
            pass  # a broken channel is a dead worker for us: the process is reaped below
        finally:
            self.closed.set()
            for fut in self._pending.values():
                if not fut.done():
                    fut.cancel()
            self._pending.clear()

    async def request(self, op: str, timeout: float) -> dict[str, Any] | None:
        if self._writer is None or self.closed.is_set():
            return None
        self._next += 1
        rid = self._next
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[rid] = fut
        try:
            self._writer.write(json.dumps({"op": op, "id": rid}).encode() + b"\n")
            return await asyncio.wait_for(fut, timeout)
        except (TimeoutError, OSError, asyncio.CancelledError):
            return None
        finally:
            self._pending.pop(rid, None)

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        else:
            self.sock.close()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


@dataclass
class Slot:
    index: int
    proc: subprocess.Popen[bytes] | None = None
    channel: Channel | None = None
    key: int = 0  # unique per process started, for the stats merger
    started: float = 0.0
    quick_failures: int = 0
    restarts: int = 0


@dataclass
class Supervisor:
    config_path: str
    cfg: Config
    addresses: list[tuple[str, int]]
    workers: int
    no_etcd: bool
    env: Mapping[str, str]
    slots: list[Slot] = field(default_factory=list)
    merger: Merger = field(default_factory=Merger)
    stop: asyncio.Event | None = None
    _keys: int = 0

    def __post_init__(self) -> None:
        self.slots = [Slot(i) for i in range(self.workers)]

    # -- processes

    async def launch(self, slot: Slot, pairs: list[Pair]) -> None:
        """Start the worker for ``slot`` on ``pairs`` (closed here: the worker holds them now)."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        channel = Channel(ours)
        try:
            await channel.open()  # before the process: a worker is never running without its channel
            spec = {"config": self.config_path, "index": slot.index, "writer": slot.index == 0,
                    "no_etcd": self.no_etcd, "parent": os.getpid(), "control": theirs.fileno(),
                    "sockets": [[udp.fileno(), tcp.fileno()] for udp, tcp in pairs]}
            root = str(Path(dnsserver.__file__).resolve().parent.parent)
            path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
            env = {**os.environ, **self.env, "STEERING_DNS_WORKER": str(slot.index), "PYTHONPATH": path}
            if "STEERING_DNS_COOKIE_SECRET" not in self.env:
                env.pop("STEERING_DNS_COOKIE_SECRET", None)  # secrets come from dns.cookies.secret_file
            # a plain fork+exec from the loop's (main) thread: nothing of this process runs in the
            # child before exec, and PR_SET_PDEATHSIG follows the thread that started it
            proc = subprocess.Popen([sys.executable, "-m", "dnsserver.workerproc", json.dumps(spec)],
                                    pass_fds=[theirs.fileno(), *(s.fileno() for p in pairs for s in p)],
                                    env=env, stdin=subprocess.DEVNULL)
        except BaseException:
            await channel.close()
            raise
        finally:
            theirs.close()
            close_pairs(pairs)
        self._keys += 1
        slot.key = self._keys
        slot.proc = proc
        slot.started = time.monotonic()
        slot.channel = channel
        log.info("dns.worker.started", worker=slot.index, pid=proc.pid)

    async def _reap(self, proc: subprocess.Popen[bytes]) -> int:
        """The exit status of a process whose control socket closed (it is exiting, or will be made to)."""
        deadline = time.monotonic() + STOP_SECONDS
        while proc.poll() is None:
            if time.monotonic() > deadline:
                proc.kill()  # alive without its channel: of no use, and unobservable
                return await asyncio.to_thread(proc.wait)
            await asyncio.sleep(0.02)
        return proc.returncode

    async def watch(self, slot: Slot) -> None:
        """Restart ``slot``'s worker whenever it ends, until cancelled."""
        while True:
            assert slot.channel is not None and slot.proc is not None
            await slot.channel.closed.wait()
            rc = await self._reap(slot.proc)
            await slot.channel.close()
            self.merger.retire(slot.key)
            if rc in (0, -signal.SIGTERM) and self.stop is not None:
                # a clean stop: someone signals the whole group (systemd's default), and our own
                # SIGTERM may be a moment behind the worker's exit
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self.stop.wait(), 1.0)
            if self.stop is not None and self.stop.is_set():
                return  # stopping: no restart, no alarm
            uptime = time.monotonic() - slot.started
            slot.quick_failures = 0 if uptime >= STABLE_SECONDS else slot.quick_failures + 1
            delay = backoff(slot.quick_failures)
            log.error("dns.worker.exited", worker=slot.index, pid=slot.proc.pid, status=describe_exit(rc),
                      uptime_seconds=round(uptime, 1), restart_in=delay)
            slot.proc = None
            while True:  # bounded by cancellation (stop); each try waits its backoff first
                await asyncio.sleep(delay)
                try:
                    pairs = [bind_pair(host, port, self.workers) for host, port in self.addresses]
                except OSError as exc:
                    slot.quick_failures += 1
                    delay = backoff(slot.quick_failures)
                    log.error("dns.worker.bind_failed", worker=slot.index, error=str(exc), retry_in=delay)
                    continue
                try:
                    await self.launch(slot, pairs)
                except OSError as exc:
                    slot.quick_failures += 1
                    delay = backoff(slot.quick_failures)
                    log.error("dns.worker.start_failed", worker=slot.index, error=str(exc), retry_in=delay)
                    continue
                break
            slot.restarts += 1

    async def stop_all(self) -> None:
        """TERM every worker, wait up to STOP_SECONDS, KILL what is left; reap all."""
        procs = [s.proc for s in self.slots if s.proc is not None and s.proc.poll() is None]
        for proc in procs:
            try:
                proc.terminate()
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + STOP_SECONDS
        while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        for proc in procs:
            if proc.poll() is None:
                log.warning("dns.worker.killed", pid=proc.pid, after_seconds=STOP_SECONDS)
                proc.kill()
                await asyncio.to_thread(proc.wait)
        for slot in self.slots:
            if slot.channel is not None:
                await slot.channel.close()

    def pass_reload(self) -> None:
        """SIGHUP: every running worker reads its DNSSEC key files again (docs/dnssec.md); each logs and
        counts the outcome itself."""
        pids = [s.proc.pid for s in self.slots if s.proc is not None and s.proc.poll() is None]
        log.info("dns.supervisor.reload", workers=pids)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGHUP)
            except ProcessLookupError:
                pass  # ended meanwhile: its successor reads the files at its start

    # -- metrics

    async def metrics(self) -> list[Family]:
        live = [(s.index, s.key, s.channel) for s in self.slots
                if s.channel is not None and s.channel.ready.is_set() and not s.channel.closed.is_set()]
        replies = await asyncio.gather(*(ch.request("stats", STATS_SECONDS) for _, _, ch in live))
        for (index, key, _), reply in zip(live, replies, strict=True):
            if reply is not None:  # keyed by the process asked: a late reply from a dead one is dropped
                self.merger.update(key, index, reply.get("families"))
        fams = self.merger.merged(s.index for s in self.slots)
        running = sum(1 for s in self.slots if s.proc is not None and s.proc.poll() is None)
        fams.append(gauge("steering_dns_workers", "Worker processes running", running))
        fams.append({"name": "steering_dns_worker_restarts", "type": "counter",
                     "help": "Worker processes started again after one ended",
                     "samples": [["steering_dns_worker_restarts_total", {"worker": str(s.index)}, s.restarts]
                                 for s in self.slots]})
        return fams

    # -- the whole life

    async def run(self, initial: list[list[Pair]]) -> int:
        loop = asyncio.get_running_loop()
        stop = self.stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGHUP, self.pass_reload)
        from prometheus_client import REGISTRY

        collector = _Collector(self, loop)
        REGISTRY.register(collector)
        try:
            for slot, pairs in zip(self.slots, initial, strict=True):
                await self.launch(slot, pairs)
            failed = await self._first_start(stop)
            if failed is not None:
                await self.stop_all()
                sys.stderr.write(f"steering dns: {failed[1]}\n")  # one write: one line, whole
                sys.stderr.flush()
                return failed[0]
            log.info("dns.supervisor.ready", workers=self.workers,
                     addresses=[f"{h}:{p}" for h, p in self.addresses])
            watchers = [asyncio.create_task(self.watch(slot)) for slot in self.slots]
            await stop.wait()
            log.info("dns.supervisor.stopping", workers=self.workers)
            for task in watchers:
                task.cancel()
            await asyncio.gather(*watchers, return_exceptions=True)
            await self.stop_all()
            return 0
        finally:
            REGISTRY.unregister(collector)

    async def _first_start(self, stop: asyncio.Event) -> tuple[int, str] | None:
        """Wait until every worker is ready; an exit status and a line when one ended first (2 when
        the worker said its configuration is bad, as the single-process mode would)."""
        deadline = time.monotonic() + READY_SECONDS
        for slot in self.slots:
            assert slot.channel is not None and slot.proc is not None
            waits = {asyncio.create_task(slot.channel.ready.wait()), asyncio.create_task(slot.channel.closed.wait()),
                     asyncio.create_task(stop.wait())}
            done, pending = await asyncio.wait(waits, timeout=max(0.0, deadline - time.monotonic()),
                                               return_when=asyncio.FIRST_COMPLETED)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            if stop.is_set():
                return None  # stopping during the start: run() goes on to the stop
            if slot.channel.closed.is_set() and not slot.channel.ready.is_set():
                rc = await self._reap(slot.proc)
                return (2 if rc == 2 else 1,
                        f"worker {slot.index} ended before it was ready ({describe_exit(rc)}); see its log above")
            if not done:
                log.warning("dns.worker.slow_start", worker=slot.index, waited_seconds=READY_SECONDS)
        return None


class _Collector(Collector):
    """The supervisor's /metrics: asks the loop for every worker's samples at each scrape."""

    def __init__(self, sup: Supervisor, loop: asyncio.AbstractEventLoop) -> None:
        self.sup = sup
        self.loop = loop

    def describe(self) -> list[Metric]:
        return []  # names vary with the workers' families; nothing to check at registration

    def collect(self) -> Iterator[Metric]:
        fut = None
        try:
            fut = asyncio.run_coroutine_threadsafe(self.sup.metrics(), self.loop)
            fams = fut.result(STATS_SECONDS * 2)
        except Exception as exc:  # a scrape must not take anything down (the loop may be closing, too)
            if fut is not None:
                fut.cancel()
            log.warning("dns.metrics.unavailable", error=f"{type(exc).__name__}: {exc}")
            return
        yield from to_metrics(fams)


def supervise(config_path: str, cfg: Config, listen: list[str], workers: int, metrics_addr: str | None,
              no_etcd: bool) -> int:
    """Bind, serve metrics, start the workers and keep them running; the exit status.

    Raises OSError (an address in use, the metrics port) before any worker starts.
    """
    from steering import metrics

    bound: list[tuple[str, int, list[list[Pair]]]] = []
    try:
        for addr in listen:
            try:
                bound.append(bind_address(addr, workers))
            except OSError as exc:
                raise OSError(exc.errno, f"{addr}: {exc.strerror or exc}") from None
        metrics.serve(metrics_addr)
    except BaseException:
        for _, _, per_worker in bound:
            for pairs in per_worker:
                close_pairs(pairs)
        raise
    initial = [[pair for _, _, per_worker in bound for pair in per_worker[i]] for i in range(workers)]
    sup = Supervisor(config_path, cfg, [(h, p) for h, p, _ in bound], workers, no_etcd,
                     worker_env(cfg, new_secret()))
    log.info("dns.supervisor.starting", workers=workers, addresses=[f"{h}:{p}" for h, p, _ in bound],
             pid=os.getpid())
    return asyncio.run(sup.run(initial))
