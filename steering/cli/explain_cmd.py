"""``steerctl explain SERVICE CLIENT_IP [--ecs SUBNET] [--json]``: why a client gets the DNS answer it gets.

Live through ``RoutingService.Explain`` on a controller (the table it follows),
or offline with ``--config FILE --table FILE`` (a table as the DNS server
persists it in ``dns.state_file``, as ``steerctl watch --json`` prints it, or
as etcd holds it, zlib-compressed or not). Both run
``steering.explain.explain``, so they print the same thing for the same table
(docs/operator-guide.md, "explain").
"""

from __future__ import annotations

import zlib
from typing import Any

import click

from steering import explain as explaining
from steering.cli import shapes
from steering.cli.ops import emit
from steering.cli.remote import EXIT_USAGE, Remote, connection_options, die
from steering.pick import SLOTS
from steering.table import RoutingTable
from steering.textsafe import printable
from steering.v1 import steering_pb2 as pb

MAX_TABLE_BYTES = 256 * 1024 * 1024  # the DNS server's own bound on its state file


def read_table(path: str) -> RoutingTable:
    """A routing table from a file: canonical JSON, or zlib-compressed JSON; exit 2 naming the file if not."""
    try:
        with open(path, "rb") as f:
            blob = f.read(MAX_TABLE_BYTES + 1)
    except OSError as exc:
        die(f"--table {path}: cannot read: {exc.strerror or exc}", EXIT_USAGE)
    if len(blob) > MAX_TABLE_BYTES:
        die(f"--table {path}: not a routing table (larger than {MAX_TABLE_BYTES} bytes)", EXIT_USAGE)
    if blob[:1] == b"\x78":  # zlib's header: the form etcd stores (store/codec.py)
        try:
            blob = zlib.decompressobj().decompress(blob, MAX_TABLE_BYTES + 1)
        except zlib.error:
            pass  # not compressed after all: from_json says what it is
    try:
        return RoutingTable.from_json(blob)
    except ValueError as exc:
        die(f"--table {path}: not a routing table ({printable(str(exc), 200)})", EXIT_USAGE)
    except RecursionError:
        die(f"--table {path}: not a routing table (nested too deep)", EXIT_USAGE)


def offline(config_path: str, table_path: str, service: str, client_ip: str, ecs: str) -> dict[str, Any]:
    """The explanation from a config and a table file; bad input is one line and exit 2."""
    from steering.config import ConfigError, load_config
    from steering.geoip import Codes, GeoIpError, codes_at
    from steering.geoipwatch import load_for
    from steering.topology import ResolveError, Topology

    try:
        config = load_config(config_path)
    except ConfigError as exc:
        for line in str(exc).splitlines():
            click.echo(f"steerctl: {line}", err=True)
        raise SystemExit(EXIT_USAGE) from None
    try:
        geoip = load_for(config)
    except GeoIpError as exc:
        die(str(exc), EXIT_USAGE)
    table = read_table(table_path)
    topology = Topology.from_config(config, geoip)
    database = geoip.info.path if geoip is not None else None

    def codes_of(address: str) -> Codes | None:
        return codes_at(database, address) if database is not None else None

    try:
        return explaining.explain(topology, table, service, client_ip, ecs, codes_of).to_dict()
    except ResolveError as exc:
        die(str(exc), EXIT_USAGE)


def render(d: dict[str, Any]) -> list[str]:
    """The human block for an explanation (the ``--json`` shape)."""
    s = printable
    ecs = f" with ECS {d['ecs_subnet']}" if d["ecs_subnet"] else ""
    table = f"table v{d['table_version']}" if d["table_version"] else "no table"
    out = [f"{s(d['service'])} for {s(d['client_address'])}{ecs} ({table})",
           f"  geo      {s(d['geo'])}: {s(d['why'])}"]
    flags = " ".join(f for f, on in (("FAIL-OPEN", d["fail_open"]), ("pinned", d["pinned"])) if on)
    if d["weights"]:
        width = max(len(s(w["target"])) for w in d["weights"])
        for i, w in enumerate(d["weights"]):
            head = f"  weights{' ' + flags if flags else ''}" if i == 0 else ""
            mark = "*" if w["target"] == d["target"] and d["fallback"] is None else " "
            out.append(f"{head:<11}{mark}{s(w['target']):<{width}} {w['weight']:>4}  {s(w['reason'])}")
    else:
        out.append("  weights  none: the table has no route for this service and geo")
    if d["fallback"]:
        spread = ", ".join(s(x["target"]) for x in d["split"]) or "nothing"
        out.append(f"  table    not used ({s(d['fallback'])}): the DNS server spreads equally over {spread}")
    key = d["client_key"]
    source = "the ECS subnet" if key["from"] == "ecs" else "the source address"
    chosen = s(d["target"]) if d["target"] else "nothing (no target can answer)"
    out.append(f"  pick     {chosen}: client subnet {key['subnet']} from {source}, slot {key['slot']} of {SLOTS}")
    records = ", ".join(f"{r['type']} {s(r['value'])}" for r in d["records"]) or "no records"
    out.append(f"  answer   {records}; TTL {d['ttl']}")
    if d["ecs_scope"] is None:
        out.append("  ECS      none in the query: no scope in the reply")
    else:
        bits = int(key["subnet"].rsplit("/", 1)[1])
        inside = (f" (a configured /{d['ecs_scope']} lies inside the /{bits} asked: the answer does not hold "
                  "for all of it)" if d["ecs_scope"] > bits else "")
        out.append(f"  ECS      scope /{d['ecs_scope']}{inside}")
    return out


@click.command()
@connection_options
@click.argument("service")
@click.argument("client_ip")
@click.option("--ecs", default="", metavar="SUBNET", help="the query's EDNS Client Subnet (198.51.100.0/24)")
@click.option("--config", "config_path", default=None, type=click.Path(dir_okay=False),
              help="offline: steering.yaml (with --table)")
@click.option("--table", "table_path", default=None, type=click.Path(dir_okay=False),
              help="offline: a routing table JSON (the DNS server's state file, steerctl watch --json)")
@click.option("--json", "as_json", is_flag=True, help="print the explanation as JSON")
def explain(remote: Remote, service: str, client_ip: str, ecs: str, config_path: str | None,
            table_path: str | None, as_json: bool) -> None:
    """Why CLIENT_IP gets its answer for SERVICE: geo, weights, pick, records, TTL, ECS scope."""
    if config_path is not None or table_path is not None:
        if config_path is None or table_path is None:
            die("explain: offline needs both --config FILE and --table FILE", EXIT_USAGE)
        result = offline(config_path, table_path, service, client_ip, ecs)
    else:
        req = pb.ExplainRequest(service=service, client_address=client_ip, ecs_subnet=ecs)
        result = shapes.explanation(remote.call("RoutingService", "Explain", req))
    if as_json:
        emit(result)
    else:
        for line in render(result):
            click.echo(line)


__all__ = ["explain", "offline", "read_table", "render"]
