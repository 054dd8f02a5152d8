"""``steerctl events``: the event timeline (automatic changes), newest last; ``--follow`` keeps printing.

Operator actions are ``steerctl history``; this is what the control plane did
or saw on its own (docs/operator-guide.md, "Events").
"""

from __future__ import annotations

import json
import re
import time
from datetime import datetime
from typing import Any

import click
from rich.table import Table

from steering.cli import shapes
from steering.cli.ops import OP, console, emit, safe
from steering.cli.remote import EXIT_USAGE, Remote, Unreachable, connection_options, die
from steering.textsafe import printable
from steering.v1 import steering_pb2 as pb

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
FOLLOW_SECONDS = 1.0  # between two polls of --follow
_COLOUR = {"warning": "yellow", "critical": "bold red"}


def parse_since(text: str, now: float) -> float:
    """``90s``, ``30m``, ``1h``, ``2d`` ago, or a time (``2025-01-02T03:04:05``, with or without a zone; or
    unix seconds) -> unix seconds; ValueError naming --since."""
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([smhd])\s*", text)
    if m:
        return now - float(m.group(1)) * _UNITS[m.group(2)]
    try:
        value = float(text)
    except ValueError:
        try:
            value = datetime.fromisoformat(text.strip()).timestamp()
        except ValueError:
            raise ValueError(f"--since {text!r}: expected a duration (90s, 30m, 1h, 2d) or a time "
                             "(2025-01-02T03:04:05, or unix seconds)") from None
    if not 0 <= value <= 1e11:
        raise ValueError(f"--since {text!r}: not a time")
    return value


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def _line(e: dict[str, Any]) -> str:
    return (f"{_when(e['time'])}  {e['severity']:<8} {printable(e['kind']):<18} {printable(e['subject'])}  "
            f"{printable(e['message'])}")


def _skipped(count: int) -> None:
    if count:
        click.echo(f"steerctl: {count} stored event(s) could not be read and were skipped", err=True)


def _page(remote: Remote, since: float | None, after: str | None, limit: int) -> pb.EventsResponse:
    req = pb.EventsRequest(limit=limit, after_id=after or "")
    if since is not None:
        req.since.FromNanoseconds(int(since * 1e9))
    resp: pb.EventsResponse = remote.call(OP, "Events", req)
    return resp


@click.command()
@connection_options
@click.option("--since", default=None, help="only events from then on: 90s, 30m, 1h, 2d ago, or a time")
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True,
              help="at most this many (the newest)")
@click.option("--follow", "-f", is_flag=True, help="keep printing new events until Ctrl-C")
@click.option("--json", "as_json", is_flag=True,
              help="JSON: one object {events, skipped}; with --follow one event per line")
def events(remote: Remote, since: str | None, limit: int, follow: bool, as_json: bool) -> None:
    """Automatic changes, oldest first: health, service, spills, fail-open, leaders, Route 53."""
    try:
        start = parse_since(since, time.time()) if since is not None else None
    except ValueError as exc:
        die(str(exc), EXIT_USAGE)
    resp = _page(remote, start, None, limit)
    shown = [shapes.event(e) for e in resp.events]
    if as_json and not follow:
        emit({"events": shown, "skipped": resp.skipped, "more": resp.more})
        return
    _skipped(resp.skipped)
    if not follow:
        t = Table(title="events (oldest first)", title_justify="left")
        for col in ("time", "severity", "kind", "subject", "message"):
            t.add_column(col)
        for e in shown:
            colour = _COLOUR.get(e["severity"])
            sev = f"[{colour}]{safe(e['severity'])}[/]" if colour else safe(e["severity"])
            t.add_row(_when(e["time"]), sev, safe(e["kind"]), safe(e["subject"]), safe(e["message"]))
        console().print(t)
        return
    try:
        _follow(remote, shown, start, as_json)
    except KeyboardInterrupt:
        return  # Ctrl-C ends a follow: not an error


def _follow(remote: Remote, first: list[dict[str, Any]], since: float | None, as_json: bool) -> None:
    """Print ``first``, then every newer event as it is written. The cursor is the last id printed; with
    none yet, every event in the range is new (no client clock is compared with the leader's)."""
    after: str | None = None
    backoff = FOLLOW_SECONDS
    batch = first
    while True:
        for e in batch:
            click.echo(json.dumps(e, sort_keys=True) if as_json else _line(e))
            after = e["id"] or after
        time.sleep(backoff)
        try:
            resp = _page(remote, since, after, 1000)
        except Unreachable as exc:  # keep following through an outage
            click.echo(f"steerctl: {exc}; retrying", err=True)
            backoff = min(backoff * 2, 10.0)
            batch = []
            continue
        backoff = FOLLOW_SECONDS
        _skipped(resp.skipped)
        batch = [shapes.event(e) for e in resp.events]


__all__ = ["events", "parse_since"]
