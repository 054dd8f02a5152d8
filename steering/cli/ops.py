"""steerctl's remote commands: status, evacuate, restore, pin, unpin, history, watch (and plan --live).

Exit codes (``steering.cli.remote``): 0 done; 1 refused by a safety rule or
failed on the server (or the table did not reflect the action in time);
2 usage or bad input (or an action not confirmed); 3 no server reachable or
not authorized.
"""

from __future__ import annotations

import json
import math
import re
import time
import uuid
from typing import Any

import click
import grpc
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from steering import limits
from steering.cli import shapes
from steering.cli.remote import EXIT_REFUSED, EXIT_USAGE, Remote, connection_options, describe, die, exit_code
from steering.table import RoutingTable
from steering.textsafe import printable
from steering.v1 import steering_pb2 as pb

OP = "OperatorService"
DRY_RUN_HELP = "show the preview; change nothing"
YES_HELP = "do not ask for confirmation"
ACTION_JSON_HELP = "print JSON: the preview and the outcome (shape in docs/operator-guide.md)"


def console() -> Console:
    return Console(width=max(120, Console().width), highlight=False)


def emit(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True))  # JSON escapes control characters itself


def safe(value: Any) -> str:
    """Text from the server (reasons, actors, check details, ids) for a rich table: control characters and
    escape sequences shown escaped (``\x1b``), and ``[...]`` shown, not read as rich markup."""
    return escape(printable(value))


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.0%}"


def parse_ramp(text: str) -> tuple[float, float]:
    """``25%/60s`` (or ``0.25/60``, ``25%/2m``, ``10%/500ms``) -> (0.25, 60.0); ValueError naming the part."""
    m = re.fullmatch(r"\s*([0-9.]+)(%?)\s*/\s*([0-9.]+)\s*(ms|s|m|h)?\s*", text)
    if not m:
        raise ValueError(f"--ramp {text!r}: expected STEP/INTERVAL like 25%/60s")
    try:
        step = float(m.group(1)) / (100 if m.group(2) else 1)
        interval = float(m.group(3)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, None: 1}[m.group(4)]
    except ValueError:  # "1.2.3"
        raise ValueError(f"--ramp {text!r}: expected STEP/INTERVAL like 25%/60s") from None
    lo, hi = limits.RAMP_STEP
    if not lo <= step <= hi:
        raise ValueError(f"--ramp {text!r}: step must be in [{lo:.1%}, {hi:.0%}]")
    lo, hi = limits.RAMP_INTERVAL
    if not lo <= interval <= hi:
        raise ValueError(f"--ramp {text!r}: interval must be in [{lo * 1000:g}ms, {hi / 3600:g}h]")
    return step, interval


def _mode(now: bool, ramp: str | None) -> tuple[pb.EvacuationMode, pb.Ramp]:
    if now and ramp:
        die("--now and --ramp exclude each other", EXIT_USAGE)
    if now:
        return pb.EVACUATION_MODE_NOW, pb.Ramp()
    if ramp:
        try:
            step, interval = parse_ramp(ramp)
        except ValueError as exc:
            die(str(exc), EXIT_USAGE)
        return pb.EVACUATION_MODE_RAMP, pb.Ramp(step=step, interval_seconds=interval)
    return pb.EVACUATION_MODE_UNSPECIFIED, pb.Ramp()  # the server's policy ramp


def _ago(t: float | None, now: float) -> str:
    if t is None:
        return "never"
    d = max(0.0, now - t)
    return f"{d:.1f}s ago" if d < 60 else f"{d / 60:.0f}m ago" if d < 3600 else f"{d / 3600:.1f}h ago"


def why(entry: dict[str, Any], now: float, width: int = 70) -> str:
    """The compact "why" of a site that does not serve by health: failing checks, or silence and when heard;
    for a healthy target its observers cannot reach, the quorum's reading ("unreachable from ...")."""
    if entry["health"] not in ("unhealthy", "silent"):
        verdict = entry.get("verdict") or ""
        return verdict if len(verdict) <= width else verdict[: max(0, width - 1)] + "…"
    if entry["checks"]:
        text = "; ".join(f"{c['name']}" + (f" ({c['kind']})" if c["kind"] else "") + f": {c['detail']}"
                         for c in entry["checks"])
    else:
        text = entry["detail"]
    if entry["last_report_local"]:
        heard = f"last heard {_ago(entry['last_report'], now)}"
    elif entry["last_change"] is not None:
        via = f" via {entry['heard_by']}" if entry["heard_by"] else ""
        heard = f"changed {_ago(entry['last_change'], now)}{via}"
    else:
        heard = ""
    room = width - (len(heard) + 2 if heard else 0)  # the time is kept whole; the checks are cut to fit
    if len(text) > room:
        text = text[: max(0, room - 1)] + "…"
    return "; ".join(x for x in (text, heard) if x)


def print_reporters(entries: list[dict[str, Any]], now: float, out: Console) -> None:
    """Each observed target's reporters (its agent and its observers) with their verdicts and age."""
    rows = [(e.get("region") if "site" not in e else e["site"], e, r) for e in entries for r in e["reporters"]]
    if not rows:
        return
    t = Table(title="reporters (docs/health.md)", title_justify="left")
    for col in ("target", "reporter", "geos", "says", "counted", "heard", "why"):
        t.add_column(col)
    for target, _, r in rows:
        says = safe(r["status"]) if r["status"] == "healthy" else f"[red]{safe(r['status'])}[/]"
        if r["last_report_local"]:
            heard = f"{_ago(r['last_report'], now)}"
        elif r["last_report"] is not None:
            heard = f"changed {_ago(r['last_report'], now)}" + (f" via {r['heard_by']}" if r["heard_by"] else "")
        else:
            heard = "never"
        detail = r["detail"]
        if r["streams"] > 1:
            detail = f"[bold red]{r['streams']} streams with one agent_id[/] " + safe(detail)
        else:
            detail = safe(detail)
        t.add_row(safe(target or "-"), safe(r["reporter"]), safe(", ".join(r["geos"]) or "-"), says,
                  "yes" if r["counted"] else "no", safe(heard), detail or "-")
    out.print(t)


def _weights(w: Any) -> str:
    items = [(t, v) for t, v in sorted(w.items(), key=lambda kv: -kv[1]) if v]
    return "  ".join(f"{t} {v}" for t, v in items) or "-"


def print_preview(p: pb.Preview, out: Console) -> None:
    if not p.changes:
        out.print("no routing change")
    else:
        t = Table(title="weights (of 1000), before -> after", title_justify="left")
        for col in ("service", "geo", "before", "after"):
            t.add_column(col)
        for c in p.changes:
            t.add_row(safe(c.service), safe(c.geo), safe(_weights(c.before)), safe(_weights(c.after)))
        out.print(t)
    t = Table(title="regions: projected utilization", title_justify="left")
    for col in ("region", "capacity", "load before", "load after", "util before", "util after", "hard limit"):
        t.add_column(col, justify="left" if col == "region" else "right")
    for r in p.regions:
        after = _pct(r.utilization_after)
        if r.capacity > 0 and r.utilization_after > r.hard_limit:
            after = f"[bold red]{after}[/]"
        t.add_row(safe(r.region), f"{r.capacity:g}", f"{r.planned_load_before:.0f}", f"{r.planned_load_after:.0f}",
                  _pct(r.utilization_before), after, _pct(r.hard_limit))
    out.print(t)
    if p.fail_open_after:
        out.print("[bold red]! the result would FAIL OPEN[/]")


def _refusal(err: grpc.RpcError, as_json: bool, region: str = "") -> None:
    """Print a refused action (with its preview when the server sent one) and exit."""
    # grpc-stubs types the items as an opaque _Metadatum; at runtime they are (key, value) pairs (grpc's own
    # annotation: Optional[Sequence[tuple[str, str | bytes]]]), so dict() of them is what we want
    from steering.controller.operator import PREVIEW_TRAILER  # the controller's modules only on a refusal

    trailer: dict[str, str | bytes] = dict(err.trailing_metadata() or ())  # type: ignore[arg-type]
    raw = trailer.get(PREVIEW_TRAILER)
    preview = pb.Preview.FromString(raw) if isinstance(raw, bytes) else None  # a -bin trailer is always bytes
    if as_json:
        emit({"error": {"code": err.code().name, "message": describe(err)},
              "region": region, "preview": shapes.preview(preview) if preview else None})
    elif preview is not None:
        print_preview(preview, console())
    die(describe(err), exit_code(err))


def _confirm(question: str) -> None:
    try:
        if not click.confirm(question, default=False, err=True):
            die("not confirmed; nothing was changed", EXIT_USAGE)
    except click.Abort:
        die("not confirmed (no answer on stdin; pass --yes); nothing was changed", EXIT_USAGE)


# ---------------------------------------------------------------------- progress


def _share(table: RoutingTable, region: str, fail_open: bool = False) -> int:
    """The region's (and its sites') total weight over every service and geo that is not fail-open (with
    ``fail_open``: over those that are)."""
    total = 0
    for svc in table.services.values():
        for route in svc.geos.values():
            if route.fail_open != fail_open:
                continue
            for t, w in route.weights.items():
                st = table.sites.get(t)
                if t == region or (st is not None and st.region == region):
                    total += w
    return total


def kept_by_fail_open(table: RoutingTable, region: str) -> list[tuple[str, str]]:
    """The (service, geo) routes whose fail-open answers still include the region or its sites: with no
    healthy, non-evacuated target a route keeps its previous weights (docs/architecture.md), evacuated
    targets included."""
    out = []
    for name, svc in table.services.items():
        for geo, route in svc.geos.items():
            if route.fail_open and any(w and (t == region or (t in table.sites and table.sites[t].region == region))
                                       for t, w in route.weights.items()):
                out.append((name, geo))
    return out


def where(table: RoutingTable, routes: list[tuple[str, str]]) -> str:
    """``every geo``, or ``api.example.test. (europe, world); video.example.test. (world)``."""
    if len(routes) == sum(len(svc.geos) for svc in table.services.values()):
        return "every geo"
    by_service: dict[str, list[str]] = {}
    for service, geo in routes:
        by_service.setdefault(service, []).append(geo)
    return "; ".join(f"{printable(s)} ({', '.join(printable(g) for g in geos)})" for s, geos in by_service.items())


def table_version(remote: Remote) -> int | None:
    """The version of the table the servers follow now (None: no table yet)."""
    resp = remote.call(OP, "Status", pb.StatusRequest())
    return resp.table.version if resp.HasField("table") else None


def follow(remote: Remote, region: str, done: Any, deadline: float, quiet: bool, after: int | None = None,
           publish_wait: float = 15.0) -> RoutingTable:
    """Poll Status until a table newer than ``after`` satisfies ``done(table)``; print each new share of the
    region. Exit 1 on timeout, or when no newer table appears within ``publish_wait`` seconds.

    Only a newer table counts: the leader publishes one for every operator action (even one that moves no
    traffic), so an old table that happens to look right never passes for "done" while no leader is
    publishing."""
    last: tuple[int, int] | None = None
    started = time.monotonic()
    leader = ""
    while True:
        resp = remote.call(OP, "Status", pb.StatusRequest())
        leader = resp.leader
        table = shapes.table_of(resp.table) if resp.HasField("table") else None
        fresh = table is not None and (after is None or table.version > after)
        if table is not None:
            share = _share(table, region)
            if not quiet and (last is None or last[1] != share):
                st = table.regions[region]
                kept = _share(table, region, fail_open=True)
                spread = (f"weight {share} over geos that are not fail-open, {kept} over fail-open ones (FAIL-OPEN "
                          "keeps it in their answers)" if kept else f"weight {share} over all geos")
                click.echo(f"v{table.version}  {region}: {spread}"
                           + (f" ({printable(st.evacuation)})" if st.evacuation else ""))
            last = (table.version, share)
            if fresh and done(table):
                return table
        now = time.monotonic()
        if not fresh and now - started > publish_wait:
            since = f"still v{after}" if after is not None else "no table yet"
            if not leader:
                die(f"{region}: recorded, but no leader is publishing yet (no controller leads; {since}): "
                    "the routing table will reflect it once one does; check 'steerctl status'", EXIT_REFUSED)
            die(f"{region}: recorded, but the leader ({printable(leader)}) has published no table for it "
                f"({since} after {publish_wait:g}s): the routing table does not reflect it yet; "
                "check 'steerctl status'", EXIT_REFUSED)
        if now > deadline:
            die(f"{region}: the routing table did not reflect the action in time "
                f"(last v{last[0] if last else '-'}); check 'steerctl status'", EXIT_REFUSED)
        time.sleep(0.2)


def _wait_seconds(mode: int, ramp: pb.Ramp, extra: float) -> float:
    if mode == pb.EVACUATION_MODE_RAMP and ramp.step:
        return math.ceil(1 / ramp.step) * ramp.interval_seconds + extra
    return extra + (600 if mode == pb.EVACUATION_MODE_UNSPECIFIED else 0)


# ---------------------------------------------------------------------- commands


@click.command()
@connection_options
@click.option("--json", "as_json", is_flag=True, help="print JSON (shape in docs/operator-guide.md)")
def status(remote: Remote, as_json: bool) -> None:
    """Regions' health, load and evacuations; where each geo's traffic goes; the leader and table."""
    resp = remote.call(OP, "Status", pb.StatusRequest())
    data = shapes.status(resp)
    if as_json:
        emit(data)
        return
    out = console()
    if data["stale"]:
        since = data["etcd_unreachable_since"] or time.time()
        out.print(f"[bold yellow]etcd unreachable since {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(since))} "
                  f"({max(0.0, time.time() - since):.0f}s); showing this replica's last known state[/]")
    tbl = data["table"]
    head = (f"{'last seen leader' if data['stale'] else 'leader'} {safe(data['leader'] or '-')}  "
            f"(answered by {safe(data['replica'])}, "
            f"which has {data['connected_agents']} agent streams)")
    if tbl:
        head += f"  table v{tbl['version']}, {tbl['age_seconds']:.1f}s old"
        if tbl["fail_open"]:
            head += "  [bold red]FAIL-OPEN[/]"
        if tbl["converging"]:
            head += "  [yellow]converging[/]"
    else:
        head += "  no routing table yet"
    out.print(head)
    r53 = data["route53"]
    if r53["enabled"]:
        when = time.strftime("%H:%M:%S", time.localtime(r53["last_sync"])) if r53["last_sync"] else "never"
        out.print(f"route53: last sync {when}, {r53['last_changes']} changes"
                  + (f", [red]error: {safe(r53['last_error'])}[/]" if r53["last_error"] else ""))
    geoip = data.get("geoip")
    if geoip:
        built = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(geoip["build_time"]))
        out.print(f"geoip: {safe(geoip['database_type'])} built {built}, {geoip['networks']} networks, "
                  f"{geoip['reloads']['ok']} reloads" + (f", [red]last reload failed: {safe(geoip['last_error'])}[/]"
                                                        if geoip["last_error"] else ""))
    for note in (tbl or {}).get("notes", []):
        out.print(f"[bold red]! {safe(note)}[/]")
    now = time.time()
    t = Table(title="regions", title_justify="left")
    for col in ("region", "health", "serving", "capacity", "load", "planned", "utilization", "evacuation", "why"):
        t.add_column(col, justify="right" if col in ("capacity", "load", "planned", "utilization") else "left")
    for r in data["regions"]:
        health = safe(r["health"]) if r["health"] in ("healthy", "unknown") else f"[red]{safe(r['health'])}[/]"
        t.add_row(safe(r["region"]), health, "yes" if r["serving"] else "[red]no[/]", f"{r['capacity']:g}",
                  f"{r['load']:.0f}", f"{r['planned_load']:.0f}", _pct(r["utilization"]),
                  safe(r["evacuation"] or "-"), safe(why(r, now)) or "-")
    out.print(t)
    if data["sites"]:
        t = Table(title="cache sites", title_justify="left")
        for col in ("site", "region", "health", "serving", "capacity", "load", "utilization", "why"):
            t.add_column(col, justify="right" if col in ("capacity", "load", "utilization") else "left")
        for s in data["sites"]:
            t.add_row(safe(s["site"]), safe(s["region"]), safe(s["health"]), "yes" if s["serving"] else "[red]no[/]",
                      f"{s['capacity']:g}", f"{s['load']:.0f}", _pct(s["utilization"]), safe(why(s, now)) or "-")
        out.print(t)
    print_reporters([*data["regions"], *data["sites"]], now, out)
    for service, geos in data["geos"].items():
        t = Table(title=f"{safe(service)} (weights of 1000)", title_justify="left")
        t.add_column("geo")
        t.add_column("targets")
        for geo, weights in geos.items():
            t.add_row(safe(geo), safe(_weights(weights)))
        out.print(t)
    if data["evacuations"]:
        t = Table(title="evacuations and restores", title_justify="left")
        for col in ("region", "kind", "mode", "started", "by", "reason"):
            t.add_column(col)
        for e in data["evacuations"]:
            mode = "now" if e["mode"] == "now" else f"ramp {e['step']:.0%}/{e['interval_seconds']:g}s"
            started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e["started_at"]))
            kind = "restore" if e["restoring"] else ("evacuate (forced)" if e["forced"] else "evacuate")
            t.add_row(safe(e["region"]), kind, mode, started, safe(e["actor"] or "-"), safe(e["reason"] or "-"))
        out.print(t)
    if data["events"]:
        t = Table(title="recent events (steerctl events)", title_justify="left")
        for col in ("time", "severity", "subject", "message"):
            t.add_column(col)
        for ev in data["events"]:
            t.add_row(time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ev["time"])), safe(ev["severity"]),
                      safe(ev["subject"]), safe(ev["message"]))
        out.print(t)


@click.command()
@connection_options
@click.argument("region")
@click.option("--reason", required=True, help="why (recorded in the audit)")
@click.option("--now", "now", is_flag=True, help="move all traffic at once")
@click.option("--ramp", default=None, help="STEP/INTERVAL, e.g. 25%/60s (default: the policy's pace)")
@click.option("--dry-run", is_flag=True, help=DRY_RUN_HELP)
@click.option("--yes", is_flag=True, help=YES_HELP)
@click.option("--force", is_flag=True, help="override the safety rules (audited as forced)")
@click.option("--no-wait", is_flag=True, help="return once accepted; do not follow the table")
@click.option("--publish-wait", type=click.FloatRange(0.5, 3600), default=15.0, show_default=True,
              help="seconds to wait for a leader to publish a table after the action before saying it has not")
@click.option("--json", "as_json", is_flag=True, help=ACTION_JSON_HELP)
def evacuate(remote: Remote, region: str, reason: str, now: bool, ramp: str | None, dry_run: bool, yes: bool,
             force: bool, no_wait: bool, publish_wait: float, as_json: bool) -> None:
    """Move traffic off REGION: preview, confirm, submit, follow until the table reflects it."""
    if not reason.strip():
        die("--reason: must not be empty", EXIT_USAGE)
    mode, ramp_msg = _mode(now, ramp)
    rid = uuid.uuid4().hex
    req = pb.EvacuateRequest(region=region, mode=mode, ramp=ramp_msg, reason=reason, force=force, request_id=rid,
                             dry_run=True)
    _act(remote, "Evacuate", req, region, dry_run, yes, no_wait, as_json,
         question=f"evacuate {region}?", done=lambda t: _share(t, region) == 0,
         wait=_wait_seconds(mode, ramp_msg, 60), publish_wait=publish_wait)


@click.command()
@connection_options
@click.argument("region")
@click.option("--reason", default="", help="why (recorded in the audit)")
@click.option("--now", "now", is_flag=True, help="return all traffic at once (still limited by max_shift)")
@click.option("--ramp", default=None, help="STEP/INTERVAL, e.g. 25%/60s (default: the policy's pace)")
@click.option("--dry-run", is_flag=True, help=DRY_RUN_HELP)
@click.option("--yes", is_flag=True, help=YES_HELP)
@click.option("--no-wait", is_flag=True, help="return once accepted; do not follow the table")
@click.option("--publish-wait", type=click.FloatRange(0.5, 3600), default=15.0, show_default=True,
              help="seconds to wait for a leader to publish a table after the action before saying it has not")
@click.option("--json", "as_json", is_flag=True, help=ACTION_JSON_HELP)
def restore(remote: Remote, region: str, reason: str, now: bool, ramp: str | None, dry_run: bool, yes: bool,
            no_wait: bool, publish_wait: float, as_json: bool) -> None:
    """Return traffic to an evacuated REGION."""
    mode, ramp_msg = _mode(now, ramp)
    req = pb.RestoreRequest(region=region, mode=mode, ramp=ramp_msg, reason=reason, request_id=uuid.uuid4().hex,
                            dry_run=True)

    def done(t: RoutingTable) -> bool:
        return not t.regions[region].evacuation and not t.converging

    _act(remote, "Restore", req, region, dry_run, yes, no_wait, as_json, question=f"restore {region}?",
         done=done, wait=_wait_seconds(mode, ramp_msg, 60), publish_wait=publish_wait)


def _act(remote: Remote, method: str, req: Any, region: str, dry_run: bool, yes: bool, no_wait: bool,
         as_json: bool, question: str, done: Any, wait: float, publish_wait: float = 15.0) -> None:
    try:
        preview = remote.call(OP, method, req)
    except grpc.RpcError as err:
        if err.code() == grpc.StatusCode.FAILED_PRECONDITION:
            _refusal(err, as_json, region)
        raise
    if getattr(preview, "applied", False):  # a server older than this steerctl, which has no dry run for it
        die(f"the server applied {method} at once (audit {preview.audit_id}): it is older than this steerctl "
            "and previews no such action", EXIT_REFUSED if dry_run else 0)
    result = {"region": region, "applied": False, "dry_run": True, "duplicate": False, "request_id": req.request_id,
              "audit_id": "", "warnings": list(getattr(preview, "warnings", [])),
              "preview": shapes.preview(preview.preview), "table_version": None, "fail_open_keeps_it_in": []}
    if not as_json:
        print_preview(preview.preview, console())
        for w in result["warnings"]:
            click.echo(f"warning: {printable(w)}", err=True)
    if dry_run:
        if as_json:
            emit(result)
        else:
            click.echo("dry run: nothing was changed")
        return
    if not yes:
        _confirm(question)
    baseline = None if no_wait else table_version(remote)  # a table newer than this was planned after the action
    req.dry_run = False
    try:
        resp = remote.call(OP, method, req)
    except grpc.RpcError as err:
        if err.code() == grpc.StatusCode.FAILED_PRECONDITION:
            _refusal(err, as_json, region)  # the state changed since the preview
        raise
    result.update(applied=resp.applied, dry_run=False, duplicate=resp.duplicate, audit_id=resp.audit_id)
    if not as_json:
        click.echo(f"accepted (audit {resp.audit_id}{', duplicate' if resp.duplicate else ''})")
    if not no_wait:
        table = follow(remote, region, done, time.monotonic() + wait, quiet=as_json, after=baseline,
                       publish_wait=publish_wait)
        result["table_version"] = table.version
        kept = kept_by_fail_open(table, region) if method == "Evacuate" else []
        result["fail_open_keeps_it_in"] = [{"service": s, "geo": g} for s, g in kept]
        if not as_json and kept:
            click.echo(f"routing table v{table.version} reflects it, but the table is FAIL-OPEN (no healthy, "
                       f"non-evacuated target): DNS keeps answering with the previous weights, so {region} stays "
                       f"in the answers of {where(table, kept)} until a region can serve again (steerctl status)")
        elif not as_json:
            click.echo(f"done: routing table v{table.version} reflects it")
    if as_json:
        emit(result)


@click.command()
@connection_options
@click.argument("service")
@click.argument("geo")
@click.argument("weights", nargs=-1, required=True)
@click.option("--reason", required=True, help="why these weights are pinned (recorded in the audit)")
@click.option("--dry-run", is_flag=True, help=DRY_RUN_HELP)
@click.option("--yes", is_flag=True, help=YES_HELP)
@click.option("--force", is_flag=True,
              help="go past cannot_serve and hard_limit (audited as forced; no_answers and not_a_candidate stay)")
@click.option("--json", "as_json", is_flag=True, help=ACTION_JSON_HELP)
def pin(remote: Remote, service: str, geo: str, weights: tuple[str, ...], reason: str, dry_run: bool, yes: bool,
        force: bool, as_json: bool) -> None:
    """Pin SERVICE's weights for GEO: WEIGHTS as TARGET=N ... (normalised to 1000)."""
    parsed: dict[str, int] = {}
    for item in weights:
        target, sep, value = item.partition("=")
        if sep and value.strip().startswith("-") and value.strip()[1:].isdigit():
            die(f"weights[{printable(target.strip())}]: {value.strip()} must be >= 0", EXIT_USAGE)
        if not sep or not value.strip().isdigit():
            die(f"weight '{printable(item)}': expected TARGET=N with N a non-negative integer", EXIT_USAGE)
        parsed[target.strip()] = int(value)
    req = pb.PinWeightsRequest(service=service, geo=geo, weights=parsed, reason=reason, dry_run=True,
                               request_id=uuid.uuid4().hex, force=force)
    _act(remote, "PinWeights", req, "", dry_run, yes, True, as_json, question=f"pin {service} {geo}?",
         done=None, wait=0)


@click.command()
@connection_options
@click.argument("service")
@click.argument("geo")
@click.option("--reason", default="", help="why (recorded in the audit)")
@click.option("--dry-run", is_flag=True, help=DRY_RUN_HELP)
@click.option("--yes", is_flag=True, help=YES_HELP)
@click.option("--json", "as_json", is_flag=True, help=ACTION_JSON_HELP)
def unpin(remote: Remote, service: str, geo: str, reason: str, dry_run: bool, yes: bool, as_json: bool) -> None:
    """Remove the pinned weights of SERVICE for GEO: preview, confirm, submit."""
    req = pb.UnpinWeightsRequest(service=service, geo=geo, reason=reason, request_id=uuid.uuid4().hex, dry_run=True)
    _act(remote, "UnpinWeights", req, "", dry_run, yes, True, as_json, question=f"unpin {service} {geo}?",
         done=None, wait=0)


@click.command()
@connection_options
@click.option("--limit", type=click.IntRange(1, 1000), default=20, show_default=True,
              help="at most this many actions (the newest)")
@click.option("--json", "as_json", is_flag=True, help="print JSON: {records: [...]} (docs/operator-guide.md)")
def history(remote: Remote, limit: int, as_json: bool) -> None:
    """Operator actions, newest first."""
    resp = remote.call(OP, "History", pb.HistoryRequest(limit=limit))
    records = [shapes.audit(r) for r in resp.records]
    if as_json:
        emit({"records": records})
        return
    t = Table(title="operator actions (newest first)", title_justify="left")
    for col in ("time", "actor", "action", "target", "reason", "forced", "after"):
        t.add_column(col)
    for r in records:
        target = r["region"] or f"{r['service']} {r['geo']}"
        t.add_row(time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["time"])), safe(r["actor"]), safe(r["action"]),
                  safe(target), safe(r["reason"]), "yes" if r["forced"] else "", safe(r["after"]))
    console().print(t)


@click.command()
@connection_options
@click.option("--service", default="", help="only this service")
@click.option("--count", type=click.IntRange(1), default=None, help="stop after this many tables")
@click.option("--json", "as_json", is_flag=True, help="one canonical table JSON per line")
def watch(remote: Remote, service: str, count: int | None, as_json: bool) -> None:
    """Print each routing table as it changes (Ctrl-C to stop)."""
    seen = 0
    since = 0
    backoff = 0.2
    while count is None or seen < count:
        try:
            for server, msg in remote.stream("RoutingService", "Watch",
                                             pb.WatchRequest(service=service, since_version=since)):
                backoff = 0.2
                if not msg.HasField("table"):
                    continue
                table = shapes.table_of(msg.table)
                if table is None:
                    continue
                since = table.version
                if as_json:
                    click.echo(table.to_json().decode())
                else:
                    serving = ", ".join(f"{printable(r)} {_pct(st.utilization)}" if st.serving else f"{printable(r)} OUT"
                                        for r, st in table.regions.items())
                    flags = (" FAIL-OPEN" if table.fail_open else "") + (" converging" if table.converging else "")
                    click.echo(f"{time.strftime('%H:%M:%S')}  v{table.version} from {printable(server)}{flags}: {serving}")
                seen += 1
                if count is not None and seen >= count:
                    return
        except KeyboardInterrupt:
            return
        except Exception as exc:
            from steering.cli.remote import Unreachable

            if not isinstance(exc, Unreachable) or since == 0:
                raise
            click.echo(f"steerctl: {exc}; retrying", err=True)  # keep watching through an outage
            time.sleep(backoff)
            backoff = min(backoff * 2, 5.0)


def plan_live(remote: Remote, evacuate: tuple[str, ...], restore: tuple[str, ...], unhealthy: tuple[str, ...],
              as_json: bool) -> None:
    """``steerctl plan --live``: a what-if on the live state."""
    req = pb.PlanRequest(evacuations=[pb.Evacuation(region=r, mode=pb.EVACUATION_MODE_NOW) for r in evacuate],
                         restore=list(restore), healthy={s: False for s in unhealthy})
    resp = remote.call(OP, "Plan", req)
    table = shapes.table_of(resp.table)
    if as_json:
        emit({"table": table.to_dict() if table else None, "preview": shapes.preview(resp.preview)})
        return
    print_preview(resp.preview, console())


__all__ = ["parse_ramp", "plan_live"]
