"""``steerctl route53 plan``: the changes a Route 53 sync would make now, without applying them.

It runs where steerctl runs, with boto3's standard credential chain: the
routing table comes from a controller (``Status``) or a file (``--table``),
the record model from the configuration's ``route53`` section.
"""

from __future__ import annotations

import sys

import click

from steering.cli.remote import EXIT_REFUSED, EXIT_USAGE, Remote, connection_options, die
from steering.config import ConfigError, load_config


@click.group(name="route53")
def route53() -> None:
    """Route 53: see what a sync would change."""


@route53.command(name="plan")
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False),
              help="steering.yaml with a route53 section")
@click.option("--table", "table_path", type=click.Path(dir_okay=False), default=None,
              help="plan against this table (JSON) instead of the live one")
@click.option("--json", "as_json", is_flag=True, help="print the plan as JSON (counts, batches, notes)")
@connection_options
def plan(remote: Remote, config_path: str, table_path: str | None, as_json: bool) -> None:
    """Print the creates, upserts and deletes a sync would send; change nothing."""
    from steering.route53 import Route53Sink, render_plan_json, render_plan_text
    from steering.table import RoutingTable

    try:
        config = load_config(config_path)
    except ConfigError as exc:
        for line in str(exc).splitlines():
            click.echo(f"steerctl: {line}", err=True)
        sys.exit(EXIT_USAGE)
    if config.route53 is None:
        die(f"{config_path}: no route53 section; nothing to plan", EXIT_USAGE)
    if table_path:
        from steering.cli.steerctl import read_table_file

        table = read_table_file(table_path)
    else:
        from steering.v1 import steering_pb2 as pb

        resp = remote.call("OperatorService", "Status", pb.StatusRequest())
        if not resp.table.json:
            die("the controller has no routing table yet", EXIT_REFUSED)
        table = RoutingTable.from_json(resp.table.json)
    try:
        change_plan = Route53Sink(config).plan(table)
    except Exception as exc:  # boto3/botocore: credentials, endpoint, access denied, ...
        die(f"route53: {type(exc).__name__}: {exc}", EXIT_REFUSED)
    click.echo(render_plan_json(change_plan) if as_json else render_plan_text(change_plan))
