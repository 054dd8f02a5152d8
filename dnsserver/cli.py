"""``steering dns --config FILE [--listen ADDR ...] [--metrics-addr ADDR]``."""

from __future__ import annotations

import asyncio
import signal
import sys

import click

from steering import logs
from steering.config import ConfigError, load_config


async def _run(config_path: str, listen: tuple[str, ...], metrics_addr: str | None, no_etcd: bool) -> None:
    from dnsserver.feed import follow
    from dnsserver.metrics import StatsCollector
    from dnsserver.persist import load_table
    from dnsserver.server import DnsServer
    from steering import metrics
    from prometheus_client import REGISTRY

    log = logs.get("dnsserver")
    cfg = load_config(config_path)
    state_file = str(cfg.resolve_path(cfg.dns.state_file)) if cfg.dns.state_file else None
    table = load_table(state_file) if state_file else None
    if table is not None:
        log.info("dns.state.loaded", path=state_file, version=table.version)
    server = DnsServer(cfg, table, state_file=state_file)
    REGISTRY.register(StatsCollector(server.stats))
    metrics.serve(metrics_addr)
    await server.start(list(listen) or list(cfg.dns.listen))

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    feed_task = None
    store = None
    if not no_etcd:
        from steering.store import Store

        store = Store(cfg.etcd, base_dir=cfg.base_dir)
        feed_task = asyncio.create_task(_feed(store, server, follow))
    await stop.wait()
    log.info("dns.stopping")
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


async def _feed(store, server, follow) -> None:  # type: ignore[no-untyped-def]
    log = logs.get("dnsserver")
    delay = 0.2
    while True:  # etcd may be down at start: keep serving, keep trying
        try:
            await store.open()
            break
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("dns.etcd.unavailable", error=f"{type(exc).__name__}: {exc}", retry_in=delay)
            await asyncio.sleep(delay)
            delay = min(5.0, delay * 2)
    await follow(store, server)


@click.command(name="dns")
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False),
              help="steering YAML configuration")
@click.option("--listen", multiple=True, help="HOST:PORT for UDP and TCP (repeatable; default: dns.listen)")
@click.option("--metrics-addr", default=None, help="HOST:PORT for Prometheus /metrics")
@click.option("--no-etcd", is_flag=True, help="serve the persisted table only; do not watch etcd")
def command(config_path: str, listen: tuple[str, ...], metrics_addr: str | None, no_etcd: bool) -> None:
    """Run the authoritative DNS server."""
    logs.setup(component="dns")
    try:
        cfg = load_config(config_path)
        del cfg
    except ConfigError as exc:
        click.echo(str(exc), err=True)
        sys.exit(2)
    try:
        import uvloop

        uvloop.run(_run(config_path, listen, metrics_addr, no_etcd))
    except ConfigError as exc:
        click.echo(str(exc), err=True)
        sys.exit(2)
    except OSError as exc:
        click.echo(f"steering dns: {exc}", err=True)
        sys.exit(1)
