"""``steering dns --config FILE [--listen ADDR ...] [--metrics-addr ADDR] [--workers N] [--no-etcd]``.

One worker (``--workers 1``, or ``dns.workers: 1``, or one CPU available)
runs in this process, as it always did: nothing between the kernel and the
server, and the single-CPU benchmark measures what it always measured. More
run under ``supervisor.py``, one process each, sharing the addresses.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Iterator
from typing import NoReturn

import click
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from dnsserver.metrics import Stats
from steering import logs
from steering.config import Config, ConfigError, load_config
from steering.geoip import GeoIpError, GeoIpMap


def _single_process_collector(stats: Stats) -> Collector:
    """The supervisor's own families, in the single-process mode: the same queries work on both."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    class SingleProcess(Collector):
        def describe(self) -> list[Metric]:
            return []

        def collect(self) -> Iterator[Metric]:
            yield GaugeMetricFamily("steering_dns_workers", "Worker processes running", value=1)
            restarts = CounterMetricFamily("steering_dns_worker_restarts",
                                           "Worker processes started again after one ended", labels=["worker"])
            restarts.add_metric(["0"], 0)
            yield restarts
            queries = CounterMetricFamily("steering_dns_worker_queries",
                                          "Queries answered by each worker (all its processes: restarts included)",
                                          labels=["worker"])
            queries.add_metric(["0"], stats.total_queries())
            yield queries

    return SingleProcess()


async def _run(cfg: Config, listen: tuple[str, ...], metrics_addr: str | None, no_etcd: bool,
               geoip: GeoIpMap | None = None) -> None:
    from prometheus_client import REGISTRY

    from dnsserver.persist import load_table
    from dnsserver.server import DnsServer
    from dnsserver.workerproc import collectors, serve, state_path
    from steering import metrics

    log = logs.get("dnsserver")
    state_file = state_path(cfg)
    table = load_table(state_file) if state_file else None
    if table is not None:
        log.info("dns.state.loaded", path=state_file, version=table.version)
    server = DnsServer(cfg, table, state_file=state_file, geoip=geoip, tune_interpreter=True)
    for collector in collectors(server):
        REGISTRY.register(collector)
    REGISTRY.register(_single_process_collector(server.stats))
    metrics.serve(metrics_addr)
    await server.start(list(listen) or list(cfg.dns.listen))

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, server.request_key_reload)  # DNSSEC key files (docs/dnssec.md)
    await serve(cfg, server, no_etcd, stop)


def _fail(code: int, message: str) -> NoReturn:
    click.echo(message, err=True)
    sys.exit(code)


@click.command(name="dns")
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False),
              help="steering YAML configuration")
@click.option("--listen", multiple=True, help="HOST:PORT for UDP and TCP (repeatable; default: dns.listen)")
@click.option("--metrics-addr", default=None, help="HOST:PORT for Prometheus /metrics")
@click.option("--workers", type=click.IntRange(1, 64), default=None,
              help="worker processes sharing the addresses (default: dns.workers, else the CPUs available)")
@click.option("--no-etcd", is_flag=True, help="serve the persisted table only; do not watch etcd")
def command(config_path: str, listen: tuple[str, ...], metrics_addr: str | None, workers: int | None,
            no_etcd: bool) -> None:
    """Run the authoritative DNS server."""
    from dnsserver.supervisor import supervise, worker_count
    from dnsserver.workerproc import whole_lines
    from dnsserver.zones import ZoneError, load_zones

    logs.setup(component="dns")
    # SIGHUP reloads (DNSSEC key files): until the handler is in place it must not end the server
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    from steering.geoipwatch import load_for

    try:
        cfg = load_config(config_path)
        load_zones(cfg)  # a bad zone file fails here, once, not in every worker
        geoip = load_for(cfg)  # and so does an unusable GeoIP database (workers compile their own)
    except ConfigError as exc:
        _fail(2, str(exc))
    except ZoneError as exc:
        _fail(2, f"steering dns: {exc}")
    except GeoIpError as exc:
        _fail(2, f"{config_path}: {exc}")
    count = worker_count(cfg, workers)
    state_file = cfg.dns.state_file
    whole_lines()
    try:
        if count > 1:
            if state_file:  # set a broken state file aside once, before the workers read it
                from dnsserver.persist import load_table
                from dnsserver.workerproc import state_path

                load_table(state_path(cfg) or state_file)
            geoip = None  # the workers' own: not kept here
            sys.exit(supervise(config_path, cfg, list(listen) or list(cfg.dns.listen), count, metrics_addr,
                               no_etcd))
        # one process: no STEERING_DNS_WORKER (NSID is the host name alone), a cookie secret of its own
        import uvloop

        uvloop.run(_run(cfg, listen, metrics_addr, no_etcd, geoip))
    except ConfigError as exc:
        _fail(2, str(exc))
    except GeoIpError as exc:
        _fail(2, f"{config_path}: {exc}")
    except ZoneError as exc:
        _fail(2, f"steering dns: {exc}")
    except OSError as exc:
        _fail(1, f"steering dns: {exc}")
