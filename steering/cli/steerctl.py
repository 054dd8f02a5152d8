"""``steerctl``: the operator's command line.

Exit codes: 0 done; 1 refused by a safety rule or failed on the server;
2 usage or bad input; 3 cannot reach any server or not authorized. Errors are
one line naming the problem.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click

from steering.config import ConfigError, load_config

EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3


def fail(message: str, code: int) -> None:
    click.echo(f"steerctl: {message}", err=True)
    sys.exit(code)


def report_config_error(exc: ConfigError) -> None:
    for line in str(exc).splitlines():
        click.echo(f"steerctl: {line}", err=True)
    sys.exit(EXIT_USAGE)


@click.group()
def cli() -> None:
    """Operate the steering control plane."""


@cli.command()
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False), help="steering.yaml")
@click.option("--state", "state_path", type=click.Path(dir_okay=False), help="observed state (see README)")
@click.option("--previous", "previous_path", type=click.Path(dir_okay=False), help="previous table (JSON)")
@click.option("--now", "now", type=float, default=None, help="planning time (unix seconds); default: now")
@click.option("--json", "as_json", is_flag=True, help="print the table as JSON")
def plan(config_path: str, state_path: str | None, previous_path: str | None, now: float | None,
         as_json: bool) -> None:
    """Compute one routing table offline, without any server."""
    from steering.model import Observed, Overrides
    from steering.planner import plan as run_plan
    from steering.statefile import load_state
    from steering.table import RoutingTable

    try:
        config = load_config(config_path)
        observed, overrides = (load_state(state_path, config) if state_path else (Observed(), Overrides()))
    except ConfigError as exc:
        report_config_error(exc)
        return
    previous = None
    if previous_path:
        try:
            previous = RoutingTable.from_json(Path(previous_path).read_bytes())
        except OSError as exc:
            fail(f"{previous_path}: cannot read: {exc.strerror or exc}", EXIT_USAGE)
        except ValueError as exc:
            fail(f"{previous_path}: {exc}", EXIT_USAGE)
    table = run_plan(config, observed, overrides, previous, time.time() if now is None else now)
    if as_json:
        click.echo(json.dumps(table.to_dict(), indent=2, sort_keys=True))
    else:
        from steering.cli.render import print_table

        print_table(table)


def main() -> None:
    cli.main(prog_name="steerctl")
