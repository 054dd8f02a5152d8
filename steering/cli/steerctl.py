"""``steerctl``: the operator's command line.

Exit codes: 0 done; 1 refused by a safety rule or failed on the server;
2 usage or bad input; 3 cannot reach any server or not authorized. Errors are
one line naming the problem.
"""

from __future__ import annotations

import importlib
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:  # imported where used: `steerctl --help` and the remote commands do not pay for them
    from steering.config import ConfigError
    from steering.table import RoutingTable

EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3

# The commands in other modules, imported only when run (or asked for --help): `steerctl --help` and
# `steerctl status` do not import the planner, GeoIP or boto3. name -> (module, attribute, the one-line
# help `steerctl --help` shows, which tests/test_steerctl_cli.py keeps equal to the command's own).
COMMANDS: dict[str, tuple[str, str, str]] = {
    "status": ("steering.cli.ops", "status",
               "Regions' health, load and evacuations; where each geo's traffic goes; the leader and table."),
    "evacuate": ("steering.cli.ops", "evacuate",
                 "Move traffic off REGION: preview, confirm, submit, follow until the table reflects it."),
    "restore": ("steering.cli.ops", "restore", "Return traffic to an evacuated REGION."),
    "pin": ("steering.cli.ops", "pin", "Pin SERVICE's weights for GEO: WEIGHTS as TARGET=N ..."),
    "unpin": ("steering.cli.ops", "unpin", "Remove the pinned weights of SERVICE for GEO: preview, confirm, submit."),
    "history": ("steering.cli.ops", "history", "Operator actions, newest first."),
    "watch": ("steering.cli.ops", "watch", "Print each routing table as it changes (Ctrl-C to stop)."),
    "events": ("steering.cli.events_cmd", "events",
               "Automatic changes, oldest first: health, service, spills, fail-open, leaders, Route 53."),
    "explain": ("steering.cli.explain_cmd", "explain",
                "Why CLIENT_IP gets its answer for SERVICE: geo, weights, pick, records, TTL, ECS scope."),
    "route53": ("steering.cli.route53_cmd", "route53", "Route 53: see what a sync would change."),
    "dnssec": ("steering.cli.dnssec_cmd", "dnssec",
               "DNSSEC keys: generate them, print the DS for the registrar, show signing status."),
    "drill": ("steering.cli.drill_cmd", "drill",
              "Chaos drills: practice evacuating a region, with guards that abort and a report."),
}


class LazyGroup(click.Group):
    """A group whose commands in ``COMMANDS`` are imported when first looked up, not at start."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*COMMANDS, *self.commands})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.commands:
            return self.commands[name]
        if name not in COMMANDS:
            return None
        module, attribute, _ = COMMANDS[name]
        cmd: click.Command = getattr(importlib.import_module(module), attribute)
        self.add_command(cmd, name)
        return cmd

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        limit = formatter.width - 6 - max(len(n) for n in self.list_commands(ctx))
        rows = [(name, COMMANDS[name][2] if name in COMMANDS else self.commands[name].get_short_help_str(limit))
                for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


def fail(message: str, code: int) -> None:
    click.echo(f"steerctl: {message}", err=True)
    sys.exit(code)


def report_config_error(exc: ConfigError) -> None:
    for line in str(exc).splitlines():
        click.echo(f"steerctl: {line}", err=True)
    sys.exit(EXIT_USAGE)


def read_table_file(path: str) -> RoutingTable:
    """A routing table from a JSON file; a bad file is one line and exit 2."""
    from steering.table import RoutingTable

    try:
        return RoutingTable.from_json(Path(path).read_bytes())
    except OSError as exc:
        fail(f"{path}: cannot read: {exc.strerror or exc}", EXIT_USAGE)
    except ValueError as exc:
        fail(f"{path}: {exc}", EXIT_USAGE)
    raise AssertionError("unreachable")


@click.group(cls=LazyGroup)
@click.version_option(package_name="steering", prog_name="steerctl", message="%(prog)s %(version)s")
@click.option("--server", "servers", multiple=True, help="controller HOST:PORT for every command (repeatable)")
@click.option("--token", default=None, help="bearer token for every command")
@click.option("--ca", default=None, help="CA certificate: use TLS")
@click.option("--cert", default=None, help="client certificate for TLS")
@click.option("--key", default=None, help="client key for TLS")
def cli(servers: tuple[str, ...], token: str | None, ca: str | None, cert: str | None, key: str | None) -> None:
    """Operate the steering control plane.

    Connection options work before the command (steerctl --server H:P status) or after it.
    """
    # Given before the command, they become the environment defaults each command reads.
    import os

    for name, value in (("STEERCTL_SERVER", ",".join(servers)), ("STEERCTL_TOKEN", token), ("STEERCTL_CA", ca),
                        ("STEERCTL_CERT", cert), ("STEERCTL_KEY", key)):
        if value:
            os.environ[name] = value


@cli.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="steering.yaml (offline plan)")
@click.option("--state", "state_path", type=click.Path(dir_okay=False), help="observed state (see README)")
@click.option("--previous", "previous_path", type=click.Path(dir_okay=False), help="previous table (JSON)")
@click.option("--now", "now", type=float, default=None, help="planning time (unix seconds); default: now")
@click.option("--json", "as_json", is_flag=True, help="print the table as JSON")
@click.option("--live", is_flag=True, help="what-if on the live state of a controller (see steerctl status)")
@click.option("--evacuate", "what_evacuate", multiple=True, help="with --live: what if REGION were evacuated")
@click.option("--restore", "what_restore", multiple=True, help="with --live: what if REGION were restored")
@click.option("--unhealthy", "what_unhealthy", multiple=True, help="with --live: what if SITE were unhealthy")
@click.option("--server", "servers", multiple=True, envvar="STEERCTL_SERVER", help="with --live: controller(s)")
@click.option("--token", envvar="STEERCTL_TOKEN", default=None, help="with --live: bearer token")
@click.option("--ca", envvar="STEERCTL_CA", default=None, help="with --live: CA certificate (TLS)")
@click.option("--cert", envvar="STEERCTL_CERT", default=None, help="with --live: client certificate")
@click.option("--key", envvar="STEERCTL_KEY", default=None, help="with --live: client key")
@click.option("--timeout", type=float, default=5.0, help="with --live: seconds per call")
def plan(config_path: str | None, state_path: str | None, previous_path: str | None, now: float | None,
         as_json: bool, live: bool, what_evacuate: tuple[str, ...], what_restore: tuple[str, ...],
         what_unhealthy: tuple[str, ...], servers: tuple[str, ...], token: str | None, ca: str | None,
         cert: str | None, key: str | None, timeout: float) -> None:
    """Compute one routing table offline (--config), or a what-if on the live state (--live)."""
    if live:
        import grpc

        from steering.cli import ops, remote

        r = remote.Remote.from_options(servers, token, ca, cert, key, timeout)
        try:
            ops.plan_live(r, what_evacuate, what_restore, what_unhealthy, as_json)
        except remote.Unreachable as exc:
            fail(str(exc), EXIT_UNREACHABLE)
        except grpc.RpcError as err:
            fail(remote.describe(err), remote.exit_code(err))
        finally:
            r.close()
        return
    if config_path is None:
        fail("plan: give --config FILE (offline) or --live (what-if on a controller)", EXIT_USAGE)
        return
    if what_evacuate or what_restore or what_unhealthy:
        fail("plan: --evacuate, --restore and --unhealthy need --live (offline, put them in --state)", EXIT_USAGE)
    from steering.config import ConfigError, load_config
    from steering.model import Observed, Overrides
    from steering.planner import plan as run_plan
    from steering.statefile import load_state

    try:
        config = load_config(config_path)
        observed, overrides = (load_state(state_path, config) if state_path else (Observed(), Overrides()))
    except ConfigError as exc:
        report_config_error(exc)
        return
    previous = read_table_file(previous_path) if previous_path else None
    table = run_plan(config, observed, overrides, previous, time.time() if now is None else now)
    if as_json:
        click.echo(json.dumps(table.to_dict(), indent=2, sort_keys=True))
    else:
        from steering.cli.render import print_table

        print_table(table)


def main() -> None:
    """Run steerctl; usage errors are one line (exit 2), like every other error."""
    try:
        cli.main(prog_name="steerctl", standalone_mode=False)
    except click.UsageError as exc:
        # the whole command path: 'steerctl dnssec keygen --help', not 'steerctl keygen --help'
        hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx and exc.ctx.parent else ""
        fail(exc.format_message() + hint, EXIT_USAGE)
    except click.ClickException as exc:
        fail(exc.format_message(), EXIT_USAGE)
    except click.Abort:
        fail("aborted", EXIT_USAGE)
    except KeyboardInterrupt:
        sys.exit(130)
