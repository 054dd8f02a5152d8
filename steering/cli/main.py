"""``steering``: one entry point for the daemons.

Subcommands are imported only when run, so ``steering dns`` does not pay for
boto3 and ``steering agent`` does not pay for the planner. Each lives beside
its code and exposes a click command named ``command``.
"""

from __future__ import annotations

import importlib
import sys

import click

SUBCOMMANDS = {
    "controller": ("steering.controller.cli", "run the controller (a replica; one is elected leader)"),
    "dns": ("dnsserver.cli", "run the authoritative DNS server"),
    "agent": ("agents.cli", "run a health agent for one region or cache site"),
    "config": ("steering.cli.configcheck", "check configuration files (steering config check)"),
    "demo": ("steering.demo.cli", "run everything on loopback with an embedded etcd"),
    "lab": ("steering.lab.cli", "run regions in network namespaces and inject faults (root)"),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(SUBCOMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in SUBCOMMANDS:
            return None
        module = importlib.import_module(SUBCOMMANDS[name][0])
        cmd: click.Command = module.command
        return cmd

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, help_) for name, (_, help_) in sorted(SUBCOMMANDS.items())]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup)
@click.version_option(package_name="steering", prog_name="steering", message="%(prog)s %(version)s")
def cli() -> None:
    """Global traffic steering and DNS failover."""


def main() -> None:
    sys.exit(cli.main(standalone_mode=True))


if __name__ == "__main__":
    main()
