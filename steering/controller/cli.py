"""``steering controller --config FILE [--listen ADDR] [--http-addr ADDR] [--ingest-addr ADDR]
[--metrics-addr ADDR] [--id NAME] [--insecure]``."""

from __future__ import annotations

import asyncio
import signal
import sys

import click

from steering import logs
from steering.addr import is_loopback, parse_hostport
from steering.config import Config, ConfigError, load_config
from steering.geoip import GeoIpMap


@click.command(name="controller")
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False),
              help="the deployment's steering.yaml")
@click.option("--listen", default=None, help="gRPC address (default: controller.listen of the config)")
@click.option("--http-addr", default=None,
              help="serve the REST API (docs/rest-api.md) on HOST:PORT, with the same auth and tls as gRPC "
                   "(default: controller.http_listen of the config; none when neither is set)")
@click.option("--ingest-addr", default=None,
              help="take agents' reports on HOST:PORT too, gRPC over HTTP/2 without grpc core (a fraction of the "
                   "CPU per report), with the same auth and tls (default: controller.ingest_listen of the config; "
                   "none when neither is set)")
@click.option("--metrics-addr", default=None, help="serve Prometheus metrics on HOST:PORT")
@click.option("--id", "replica", default=None, help="replica identity (default: hostname-based)")
@click.option("--insecure", is_flag=True,
              help="allow listening beyond loopback without auth, or with auth but without tls")
def command(config_path: str, listen: str | None, http_addr: str | None, ingest_addr: str | None,
            metrics_addr: str | None, replica: str | None, insecure: bool) -> None:
    """Run a controller replica."""
    logs.setup(component="controller")
    log = logs.get("steering.controller")
    from steering.geoip import GeoIpError
    from steering.geoipwatch import load_for

    try:
        config = load_config(config_path)
        geoip = load_for(config)  # an unusable GeoIP database stops the start here (docs/geoip.md)
    except ConfigError as exc:
        for line in str(exc).splitlines():
            click.echo(f"steering controller: {line}", err=True)
        sys.exit(2)
    except GeoIpError as exc:
        click.echo(f"steering controller: {config_path}: {exc}", err=True)
        sys.exit(2)
    from steering import auth

    try:  # fail fast on a bad tokens file or TLS files; Controller.start loads them again
        auth.server_interceptors(config)
        auth.server_credentials(config)
    except ConfigError as exc:
        for line in str(exc).splitlines():
            click.echo(f"steering controller: {line}", err=True)
        sys.exit(2)
    address = listen or config.controller.listen
    http_address = http_addr or config.controller.http_listen
    try:
        host, _ = parse_hostport(address)
    except ValueError as exc:
        click.echo(f"steering controller: --listen: {exc}", err=True)
        sys.exit(2)
    http_host = _host_of(http_address, "--http-addr" if http_addr else "controller.http_listen")
    ingest_address = ingest_addr or config.controller.ingest_listen
    ingest_host = _host_of(ingest_address, "--ingest-addr" if ingest_addr else "controller.ingest_listen")
    # Client certificates (tls.client_ca) authenticate callers too, and bind agents to their sites.
    authenticated = config.auth is not None or (config.tls is not None and config.tls.client_ca is not None)
    if http_host is not None and http_address is not None:
        _refuse_exposed("the REST API", http_address, http_host, config, authenticated, insecure)
    if ingest_host is not None and ingest_address is not None:
        _refuse_exposed("agents' reports", ingest_address, ingest_host, config, authenticated, insecure)
    if not is_loopback(host) and not authenticated:
        if not insecure:
            click.echo(f"steering controller: refusing to listen on {address} without an auth section "
                       "or client certificates (tls.client_ca); configure one or pass --insecure", err=True)
            sys.exit(2)
        log.warning("listening beyond loopback WITHOUT authentication (--insecure): anyone who can connect "
                    "may report any site and call every method", listen=address)
    elif not authenticated:
        log.info("no authentication configured: listening on loopback only; local clients may report "
                 "any site and call every method", listen=address)
    if not is_loopback(host) and config.auth is not None and config.tls is None:
        # Bearer tokens in plaintext on the network: anyone on the path can replay an operator's token.
        if not insecure:
            click.echo(f"steering controller: refusing to listen on {address} with auth but without tls: "
                       "bearer tokens would cross the network in clear text; configure tls or pass --insecure",
                       err=True)
            sys.exit(2)
        log.warning("listening beyond loopback with auth but WITHOUT TLS (--insecure): tokens travel in clear "
                    "text", listen=address)
    from steering import metrics
    from steering.controller.server import default_replica_id

    try:
        metrics.serve(metrics_addr)
    except (OSError, ValueError) as exc:
        click.echo(f"steering controller: --metrics-addr {metrics_addr}: {exc}", err=True)
        sys.exit(2)
    import uvloop

    sys.exit(uvloop.run(_run(config, address, replica or default_replica_id(), geoip, http_address,
                             ingest_address)))


def _host_of(address: str | None, where: str) -> str | None:
    """The host of an optional listener's HOST:PORT (exit 2 naming ``where`` when it is not one)."""
    if not address:
        return None
    try:
        return parse_hostport(address)[0]
    except ValueError as exc:
        click.echo(f"steering controller: {where}: {exc}", err=True)
        sys.exit(2)


def _refuse_exposed(what: str, address: str, host: str, config: Config, authenticated: bool,
                    insecure: bool) -> None:
    """Another listener beyond loopback takes the rules of the gRPC address: authentication, and tls with
    tokens."""
    log = logs.get("steering.controller")
    if is_loopback(host):
        return
    problem = ("without an auth section or client certificates (tls.client_ca)" if not authenticated else
               "with auth but without tls: bearer tokens would cross the network in clear text"
               if config.auth is not None and config.tls is None else "")
    if not problem:
        return
    if not insecure:
        click.echo(f"steering controller: refusing to serve {what} on {address} {problem}; configure it "
                   "or pass --insecure", err=True)
        sys.exit(2)
    log.warning(f"{what} beyond loopback {problem} (--insecure)", listen=address)


async def _run(config: Config, address: str, replica: str, geoip: GeoIpMap | None = None,
               http_address: str | None = None, ingest_address: str | None = None) -> int:
    from prometheus_client import REGISTRY

    from steering.controller import gcpolicy
    from steering.controller.server import Controller
    from steering.geoipwatch import GeoIpCollector

    log = logs.get("steering.controller")
    ctl = Controller(config, replica, address, geoip, http_listen=http_address, ingest_listen=ingest_address)
    if config.geoip is not None:
        REGISTRY.register(GeoIpCollector(ctl.placement.state))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await ctl.start()
    except Exception as exc:
        log.error("cannot start", replica=replica, error=str(exc))
        return 1
    gcpolicy.settle_after_start()  # only in the daemon: tests' controllers share a process with pytest
    await stop.wait()
    await ctl.stop()
    return 0
