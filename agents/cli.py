"""``steering agent --config agent.yaml [--metrics-addr HOST:PORT]``.

Exit codes: 0 after a clean stop (SIGTERM/SIGINT), 2 for a configuration
that cannot be used (one line per problem, naming the field), 1 for a
runtime failure such as a metrics port already taken.
"""

from __future__ import annotations

import asyncio
import signal
import sys

import click

from agents.config import AgentConfig, load_agent_config
from steering import logs
from steering import metrics as metrics_http
from steering.config import ConfigError


async def _main(cfg: AgentConfig) -> None:
    from agents.agent import Agent

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await Agent(cfg).run(stop)


@click.command(name="agent")
@click.option("--config", "config_path", required=True, metavar="FILE", help="agent.yaml")
@click.option("--metrics-addr", default=None, metavar="HOST:PORT", help="serve Prometheus metrics here")
def command(config_path: str, metrics_addr: str | None) -> None:
    """Run a health agent for one region or cache site."""
    logs.setup(component="agent")
    try:
        cfg = load_agent_config(config_path)
    except ConfigError as exc:
        for problem in exc.problems:
            click.echo(f"{exc.source}: {problem}", err=True)
        sys.exit(2)
    try:
        metrics_http.serve(metrics_addr)
    except (OSError, ValueError) as exc:
        click.echo(f"--metrics-addr {metrics_addr}: {exc}", err=True)
        sys.exit(1 if isinstance(exc, OSError) else 2)
    import uvloop

    uvloop.run(_main(cfg))
    sys.exit(0)
