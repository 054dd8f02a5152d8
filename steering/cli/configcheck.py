"""``steering config check --config FILE [--agent AGENT.yaml ...]``: validate without starting anything.

The same checks the daemons make at start (``steering controller`` for the
config and its tokens file, ``steering agent`` for an agent file, against
the config when given), with the same output: one line per problem naming
the field, exit 2; ``ok`` and exit 0 when every file is usable. Nothing is
written anywhere.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from steering.config import Config, ConfigError, load_config


@click.group(name="config")
def command() -> None:
    """Check configuration files."""


@command.command(name="check")
@click.option("--config", "config_path", default=None, type=click.Path(dir_okay=False),
              help="the deployment's steering.yaml")
@click.option("--agent", "agent_paths", multiple=True, type=click.Path(dir_okay=False),
              help="an agent file (repeatable); checked against --config when both are given")
def check(config_path: str | None, agent_paths: tuple[str, ...]) -> None:
    """Validate the config (and its tokens file) and agent files: one line per problem, exit 2 if any."""
    if config_path is None and not agent_paths:
        raise click.UsageError("give --config FILE, --agent FILE, or both")
    problems: list[str] = []
    if config_path is not None:
        try:
            config = load_config(config_path)
        except ConfigError as exc:
            problems += str(exc).splitlines()
        else:
            from steering import auth

            try:
                auth.server_interceptors(config)
                auth.server_credentials(config)
            except ConfigError as exc:
                problems += str(exc).splitlines()
            problems += _geoip_problems(config_path, config)
            problems += _dnssec_problems(config_path, config)
    if agent_paths:
        from agents.config import parse_agent_config
        from steering.config import load_yaml

        for path in agent_paths:
            p = Path(path)
            try:
                data = load_yaml(p)
                if config_path is not None and isinstance(data, dict) and "steering_config" not in data:
                    data = {**data, "steering_config": str(Path(config_path).resolve())}
                parse_agent_config(data, str(p), p.resolve().parent)
            except ConfigError as exc:
                problems += str(exc).splitlines()
    for line in problems:
        click.echo(f"steering config check: {line}", err=True)
    if problems:
        sys.exit(2)
    click.echo("ok")


def _geoip_problems(config_path: str, config: Config) -> list[str]:
    """The GeoIP database opened and compiled as the daemons do (docs/geoip.md); warnings printed here
    (a country taking every client of another geo's continent, a subdivision Route 53 cannot publish)."""
    from steering.config import geo_code_warnings
    from steering.geoip import GeoIpError
    from steering.geoipwatch import load_for

    for line in geo_code_warnings(config):
        click.echo(f"steering config check: {config_path}: warning: {line}", err=True)
    try:
        load_for(config)
    except GeoIpError as exc:
        return [f"{config_path}: {exc}"]
    return []


def _dnssec_problems(config_path: str, config: Config) -> list[str]:
    """Every signed zone's key files read as the DNS server reads them (docs/dnssec.md): readable, PEM, the
    configured algorithm."""
    from dnsserver.dnssec import KeyError_, load_zone_keys

    problems = []
    for i, zone in enumerate(config.zones):
        if zone.dnssec is None or not zone.dnssec.enabled:
            continue
        import dns.name

        try:
            load_zone_keys(dns.name.from_text(zone.origin), zone.dnssec, f"zones[{i}].dnssec", config.resolve_path)
        except KeyError_ as exc:
            problems.append(f"{config_path}: {exc}")
    return problems
