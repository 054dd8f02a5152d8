"""``steerctl drill``: chaos drills (docs/drills.md): start, status, abort, list, report.

Input that cannot be right (a ramp, a hold, a guard expression) is refused here, one line naming the option,
exit 2, before anything is sent; what needs the topology (the region, a guard's region) the server refuses
the same way (INVALID_ARGUMENT, exit 2). A preflight refusal is exit 1 with its reasons.
"""

from __future__ import annotations

import json
from typing import Any

import click

from steering import drillguard
from steering.cli.ops import emit
from steering.cli.remote import EXIT_USAGE, Remote, connection_options, die
from steering.drill import HOLD_SECONDS, Drill, parse_duration, parse_ramp, ramp_text
from steering.drillreport import markdown, report, status_line, text
from steering.drillschedule import EVERY, Schedule, parse_blackout, parse_window
from steering.promquery import check_alert, check_query
from steering.textsafe import printable
from steering.v1 import steering_pb2 as pb

DRILL = "DrillService"


def _drill(resp: pb.DrillResponse) -> Drill:
    return Drill.from_dict(json.loads(resp.drill_json))


def _request(region: str, reason: str, ramp: str | None, hold: str, restore_ramp: str | None,
             abort_if: tuple[str, ...]) -> pb.StartDrillRequest:
    """The drill's options checked here (one line naming the option, exit 2); the region is the server's."""
    try:
        req = pb.StartDrillRequest(region=region, reason=reason, abort_if=list(abort_if),
                                   hold_seconds=parse_duration("--hold", hold, HOLD_SECONDS))
        if ramp is not None:
            step, interval = parse_ramp("--ramp", ramp)
            req.ramp.CopyFrom(pb.Ramp(step=step, interval_seconds=interval))
        if restore_ramp is not None:
            step, interval = parse_ramp("--restore-ramp", restore_ramp)
            req.restore_ramp.CopyFrom(pb.Ramp(step=step, interval_seconds=interval))
        for i, g in enumerate(abort_if):
            try:
                drillguard.parse(g)
            except drillguard.GuardError as exc:
                raise ValueError(f"--abort-if #{i + 1} {g!r}: {exc}") from None
    except ValueError as exc:
        die(str(exc), EXIT_USAGE)
    if req.hold_seconds == 0:
        die("--hold: must be more than 0s", EXIT_USAGE)
    return req


def _drill_options(f: Any) -> Any:
    """The options of a drill, shared by ``start`` and ``schedule add``."""
    for opt in reversed([
        click.option("--reason", required=True, help="why this drill runs (audited)"),
        click.option("--ramp", default=None,
                     help="evacuation pace STEP%/INTERVAL, e.g. 25%/60s (default: the policy's)"),
        click.option("--hold", default="10m", show_default=True, help="how long the region stays out: 90s, 10m, 1h"),
        click.option("--restore-ramp", default=None, help="return pace STEP%/INTERVAL (default: the policy's)"),
        click.option("--abort-if", "abort_if", multiple=True,
                     help="guard: restore at once when true, e.g. 'max_utilization > 0.85' (repeatable)"),
    ]):
        f = opt(f)
    return f


@click.group()
def drill() -> None:
    """Chaos drills: practice evacuating a region, with guards that abort and a report."""


@drill.command()
@connection_options
@click.argument("region")
@_drill_options
@click.option("--abort-on-alert", "alerts", multiple=True,
              help="Prometheus alert NAME: restore at once while it fires (needs drill.prometheus_url; repeatable)")
@click.option("--abort-query", "queries", multiple=True,
              help="PromQL: restore at once when it returns a series (needs drill.prometheus_url; repeatable)")
@click.option("--dry-run", is_flag=True, help="run the preflight only; store nothing")
@click.option("--yes", is_flag=True, help="do not ask for confirmation")
@click.option("--json", "as_json", is_flag=True, help="print the drill as JSON")
def start(remote: Remote, region: str, reason: str, ramp: str | None, hold: str, restore_ramp: str | None,
          abort_if: tuple[str, ...], alerts: tuple[str, ...], queries: tuple[str, ...], dry_run: bool, yes: bool,
          as_json: bool) -> None:
    """Start a drill of REGION: preflight, drain, hold, restore; guards abort it."""
    req = _request(region, reason, ramp, hold, restore_ramp, abort_if)
    try:
        req.abort_on_alert.extend(check_alert("--abort-on-alert", a) for a in alerts)
        req.abort_query.extend(check_query("--abort-query", q) for q in queries)
    except ValueError as exc:
        die(str(exc), EXIT_USAGE)
    req.dry_run = dry_run
    if not dry_run and not yes:
        click.confirm(f"start a drill: evacuate {region} for {hold}, then restore?", abort=True)
    resp: pb.DrillResponse = remote.call(DRILL, "StartDrill", req)
    d = _drill(resp)
    if as_json:
        emit({"dry_run": resp.dry_run, "drill": d.to_dict()})
        return
    what = "preflight passed (dry run: nothing stored)" if resp.dry_run else f"drill {d.id} started"
    click.echo(printable(f"{what}: evacuate {d.region} at {ramp_text(d.step, d.interval)}, hold {d.hold:g}s, "
                         f"restore at {ramp_text(d.restore_step, d.restore_interval)}; guards: "
                         f"{', '.join([*d.guards, *d.alerts, *d.queries]) or 'none'}", 2000))
    for c in resp.preview.changes[:10]:
        click.echo(printable(f"  {c.service} {c.geo}: {dict(c.before)} -> {dict(c.after)}", 500))
    if not resp.dry_run:
        click.echo(f"follow it with: steerctl drill status {d.id}")


@drill.command()
@connection_options
@click.argument("drill_id", required=False, default="")
@click.option("--json", "as_json", is_flag=True, help="print the drill as JSON")
def status(remote: Remote, drill_id: str, as_json: bool) -> None:
    """The drill in flight (or the newest), or drill ID: its phase and timeline."""
    d = _drill(remote.call(DRILL, "GetDrill", pb.GetDrillRequest(id=drill_id)))
    if as_json:
        emit(d.to_dict())
        return
    click.echo(status_line(d))
    for t in d.timeline:
        click.echo(printable(f"  +{float(t['at']) - d.created_at:7.1f}s  {t.get('phase')}  {t.get('note', '')}", 500))


@drill.command()
@connection_options
@click.argument("drill_id")
@click.option("--reason", required=True, help="why the drill stops (audited)")
def abort(remote: Remote, drill_id: str, reason: str) -> None:
    """Abort drill ID: the leader restores the region at once."""
    d = _drill(remote.call(DRILL, "AbortDrill", pb.AbortDrillRequest(id=drill_id, reason=reason)))
    click.echo(status_line(d))


@drill.command(name="list")
@connection_options
@click.option("--limit", type=click.IntRange(1, 200), default=20, show_default=True, help="at most this many")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
def list_(remote: Remote, limit: int, as_json: bool) -> None:
    """Drills, newest first."""
    resp: pb.ListDrillsResponse = remote.call(DRILL, "ListDrills", pb.ListDrillsRequest(limit=limit))
    drills = [_drill(x) for x in resp.drills]
    if resp.skipped:
        click.echo(f"steerctl: {resp.skipped} stored drill(s) could not be read and were skipped", err=True)
    if as_json:
        emit({"drills": [d.to_dict() for d in drills], "skipped": resp.skipped})
        return
    for d in drills:
        click.echo(status_line(d))


@drill.command(name="report")
@connection_options
@click.argument("drill_id")
@click.option("--json", "as_json", is_flag=True, help="the report as JSON")
@click.option("--markdown", "as_markdown", is_flag=True, help="the report as Markdown")
def report_(remote: Remote, drill_id: str, as_json: bool, as_markdown: bool) -> None:
    """What drill ID showed: timeline, drain time, receivers' peaks, guards, abort cause, weights."""
    d = _drill(remote.call(DRILL, "GetDrill", pb.GetDrillRequest(id=drill_id)))
    out: Any = report(d)
    if as_json:
        emit(out)
    else:
        click.echo(markdown(d) if as_markdown else text(d))


@drill.group()
def schedule() -> None:
    """Drills the leader starts on its own: every N days, inside a weekly UTC window, outside blackouts."""


@schedule.command(name="add")
@connection_options
@click.argument("region")
@click.option("--every", required=True, help="how often: 7d, 24h (at least the window's length)")
@click.option("--window", required=True, help="when, in UTC: 'Tue 14:00-16:00 UTC', 'Mon-Fri 09:00-11:00 UTC'")
@click.option("--blackout", "blackouts", multiple=True, help="no drill on these days: 2026-12-20..2027-01-03")
@_drill_options
@click.option("--json", "as_json", is_flag=True, help="print the schedule as JSON")
def schedule_add(remote: Remote, region: str, every: str, window: str, blackouts: tuple[str, ...], reason: str,
                 ramp: str | None, hold: str, restore_ramp: str | None, abort_if: tuple[str, ...],
                 as_json: bool) -> None:
    """Schedule drills of REGION."""
    req = _request(region, reason, ramp, hold, restore_ramp, abort_if)
    try:
        seconds = parse_duration("--every", every, EVERY)
        parse_window("--window", window)
        for b in blackouts:
            parse_blackout("--blackout", b)
    except ValueError as exc:
        die(str(exc), EXIT_USAGE)
    resp: pb.DrillScheduleResponse = remote.call(DRILL, "AddSchedule", pb.AddDrillScheduleRequest(
        drill=req, every_seconds=seconds, window=window, blackouts=list(blackouts)))
    s = Schedule.from_dict(json.loads(resp.schedule_json))
    if as_json:
        emit(s.to_dict())
        return
    click.echo(printable(f"schedule {s.id}: drill {s.region} every {s.every:g}s in {s.window}", 2000))


@schedule.command(name="list")
@connection_options
@click.option("--json", "as_json", is_flag=True, help="print JSON")
def schedule_list(remote: Remote, as_json: bool) -> None:
    """Drill schedules, oldest first, with their last start and refusal."""
    resp: pb.ListDrillSchedulesResponse = remote.call(DRILL, "ListSchedules", pb.ListDrillSchedulesRequest())
    found = [Schedule.from_dict(json.loads(x.schedule_json)) for x in resp.schedules]
    if resp.skipped:
        click.echo(f"steerctl: {resp.skipped} stored schedule(s) could not be read and were skipped", err=True)
    if as_json:
        emit({"schedules": [s.to_dict() for s in found], "skipped": resp.skipped})
        return
    for s in found:
        last = f"last drill {s.last_drill}" if s.last_drill else "never started"
        refusal = f"; last refusal: {s.last_refusal}" if s.last_refusal else ""
        blackouts = f"; blackouts {', '.join('..'.join(b) for b in s.blackouts)}" if s.blackouts else ""
        click.echo(printable(f"{s.id}  {s.region}  every {s.every:g}s  {s.window}{blackouts}  ({last}{refusal})",
                             2000))


@schedule.command(name="remove")
@connection_options
@click.argument("schedule_id")
def schedule_remove(remote: Remote, schedule_id: str) -> None:
    """Remove schedule SCHEDULE_ID (a drill it started goes on)."""
    remote.call(DRILL, "RemoveSchedule", pb.RemoveDrillScheduleRequest(id=schedule_id))
    click.echo(f"schedule {printable(schedule_id, 64)} removed")
