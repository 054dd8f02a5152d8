"""One DNS worker process: the server on sockets its supervisor bound, until told or orphaned.

    python -m dnsserver.workerproc SPEC_JSON

The supervisor (``supervisor.py``) starts it with its listening sockets and
one end of a control socket pair inherited as file descriptors (``SPEC``
names them). The worker runs the whole server (UDP threads, TCP on its
uvloop, its own etcd watch through ``feed.py``) and answers on the control
socket: a ``{"ready": true}`` line once it listens, then one reply line per
``{"op": "stats", "id": N}`` request with its collectors' samples
(``statsmerge.dump``).

It stops (cleanly, exit 0) on SIGTERM, and when the supervisor is gone: the
kernel sends SIGTERM when the parent dies (PR_SET_PDEATHSIG), and the
control socket reads EOF. SIGINT is ignored: a Ctrl-C in a terminal reaches
every process of the group, and stopping the workers is the supervisor's job.
SIGHUP (passed on by the supervisor) reads the DNSSEC key files again.

``serve`` (follow etcd, wait for the stop, shut down in order) is shared with
the single-process mode of ``cli.py``.
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import os
import signal
import socket
import sys
from collections.abc import MutableMapping
from typing import Any

from prometheus_client.registry import Collector

from dnsserver.metrics import StatsCollector
from dnsserver.persist import load_table
from dnsserver.server import DnsServer
from dnsserver.statsmerge import dump
from steering import logs
from steering.config import Config, ConfigError, load_config
from steering.geoip import GeoIpError
from steering.geoipwatch import GeoIpCollector

log = logs.get("dnsserver")

_PR_SET_PDEATHSIG = 1
CONTROL_LINE_LIMIT = 64 * 1024 * 1024  # a stats reply for a large configuration is megabytes


def collectors(server: DnsServer) -> list[Collector]:
    """What a worker exports: every family here reaches the supervisor's /metrics (statsmerge)."""
    return [StatsCollector(server.stats), GeoIpCollector(server.geoip)]


def whole_lines() -> None:
    """One write(2) per log line: the supervisor and its workers share stderr, and ``print`` writes
    the line and its newline separately (stderr is write-through), so two processes' lines could
    end up glued together on one line."""
    import structlog

    structlog.configure(logger_factory=structlog.WriteLoggerFactory(file=sys.stderr))


def tag_logs(worker: int) -> None:
    """Every log line of this process carries ``worker=N`` (UDP threads' lines too: not a contextvar)."""
    import structlog

    def add_worker(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        event.setdefault("worker", worker)
        return event

    processors = list(structlog.get_config()["processors"])
    structlog.configure(processors=[add_worker, *processors])
    whole_lines()


def die_with_parent(parent: int) -> None:
    """Ask the kernel for SIGTERM when the supervisor dies; exit now if it already has."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    except (OSError, AttributeError):
        pass  # not Linux: the control socket's EOF stops the worker instead
    if os.getppid() != parent:
        log.warning("dns.worker.orphaned", parent=parent)
        sys.exit(0)


def state_path(cfg: Config) -> str | None:
    return str(cfg.resolve_path(cfg.dns.state_file)) if cfg.dns.state_file else None


async def serve(cfg: Config, server: DnsServer, no_etcd: bool, stop: asyncio.Event) -> None:
    """Follow the table in etcd (unless ``no_etcd``) until ``stop``; then stop following and close."""
    from dnsserver.feed import follow

    feed_task = None
    store = None
    geoip_task = asyncio.create_task(server.follow_geoip(), name="geoip")
    if not no_etcd:
        from steering.store import Store

        # the sites' states of each table are left unparsed: no answer depends on them, and at 10,000 sites
        # they were 58 % of the decode, in the thread next to the ones answering (docs/benchmarks.md)
        store = Store(cfg.etcd, base_dir=cfg.base_dir, serving_only=True)
        server.table_arriving = store.decoding
        feed_task = asyncio.create_task(_feed(store, server, follow))
    await stop.wait()
    log.info("dns.stopping")
    geoip_task.cancel()
    await asyncio.gather(geoip_task, return_exceptions=True)
    if feed_task is not None:
        feed_task.cancel()
        try:
            await feed_task
        except (asyncio.CancelledError, Exception):
            pass
    if store is not None:
        try:
            await asyncio.wait_for(store.close(), 5)
        except Exception:
            pass
    await server.close()


async def _feed(store: Any, server: DnsServer, follow: Any) -> None:
    delay = 0.2
    while True:  # etcd may be down at start: keep serving, keep trying
        try:
            await store.open()
            break
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            server.set_control_plane_reachable(False)  # answers from an old table say so (EDE 3) meanwhile
            log.warning("dns.etcd.unavailable", error=f"{type(exc).__name__}: {exc}", retry_in=delay)
            await asyncio.sleep(delay)
            delay = min(store.cfg.reconnect_max_seconds, delay * 2)  # bounded: back within seconds of etcd
    await follow(store, server)


async def _control(sock: socket.socket, server: DnsServer, stop: asyncio.Event) -> None:
    """Answer the supervisor; its EOF (it died, or closed us) stops the worker."""
    try:
        reader, writer = await asyncio.open_unix_connection(sock=sock, limit=CONTROL_LINE_LIMIT)
        writer.write(b'{"ready": true}\n')
        mine = collectors(server)
        while True:
            line = await reader.readline()
            if not line:
                log.info("dns.worker.control_closed")
                break
            try:
                msg = json.loads(line)
            except (ValueError, RecursionError):
                continue
            if isinstance(msg, dict) and msg.get("op") == "stats":
                reply = {"id": msg.get("id"), "families": dump(mine)}
                writer.write(json.dumps(reply, separators=(",", ":")).encode() + b"\n")
                await writer.drain()
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # without the channel the supervisor cannot see us: stop, it starts another
        log.error("dns.worker.control_error", error=f"{type(exc).__name__}: {exc}")
    stop.set()


async def _run_worker(spec: dict[str, Any]) -> None:
    cfg = load_config(spec["config"])
    writer = bool(spec["writer"])
    state_file = state_path(cfg)
    table = load_table(state_file, set_aside=writer) if state_file else None
    if table is not None:
        log.info("dns.state.loaded", path=state_file, version=table.version)
    # only the writer persists: one process renames over the file, the others read it at their start
    server = DnsServer(cfg, table, state_file=state_file if writer else None, tune_interpreter=True)
    pairs = [(socket.socket(fileno=int(u)), socket.socket(fileno=int(t))) for u, t in spec["sockets"]]
    await server.start(bound=pairs)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGHUP, server.request_key_reload)  # the supervisor passes SIGHUP on
    control = asyncio.create_task(_control(socket.socket(fileno=int(spec["control"])), server, stop))
    try:
        await serve(cfg, server, bool(spec["no_etcd"]), stop)
    finally:
        control.cancel()
        await asyncio.gather(control, return_exceptions=True)


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    spec = json.loads(args[0])
    index = int(spec["index"])
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # a reload, not a stop, even before the handler is in place
    logs.setup(component="dns")
    tag_logs(index)
    die_with_parent(int(spec["parent"]))
    from dnsserver.zones import ZoneError

    try:
        import uvloop

        uvloop.run(_run_worker(spec))
    except (ConfigError, ZoneError, GeoIpError) as exc:  # the supervisor checked them; the files changed since
        log.error("dns.worker.config_error", error=str(exc).replace("\n", "; "))
        sys.exit(2)
    except OSError as exc:
        log.error("dns.worker.os_error", error=f"{type(exc).__name__}: {exc}")
        sys.exit(1)
    except Exception as exc:  # one line, not a traceback; the supervisor logs the exit and starts another
        log.error("dns.worker.failed", error=f"{type(exc).__name__}: {exc}")
        sys.exit(1)
    sys.exit(0)


if __name__ == "__main__":
    main()
