"""The history checker of ``steering lab history``: a recorded run in, violations and figures out (pure).

A run is a list of records (one JSON object per line of ``history.jsonl``,
``t`` in seconds since the run started, on one monotonic clock):

- ``start``: ``regions``, ``answers`` (region -> the addresses that mean it is
  in an answer), ``detection_bound`` and ``convergence_bound`` (seconds),
  ``leader`` (the election key's holder when the run began: ``identity``,
  ``create_revision``);
- ``fault``: ``op`` (partition | heal | kill | restart), ``region``, ``component``;
- ``dns``: one round of queries to one region's server: ``server``,
  ``version`` and ``leader`` (its ``table.steering. CH TXT``), ``answers``
  (client geo -> addresses, None when it did not answer);
- ``send`` / ``result``: an operator action's attempt (``rid``, ``kind``,
  ``target``, ``replica``) and its outcome: ``ack`` or ``duplicate``
  (acknowledged), ``refused`` (a definite no), ``unknown`` (timed out, unavailable);
- ``healed`` (every fault undone), ``converged`` (``seconds`` after healed until
  every server reported the same version as etcd's current, None if not within the bound);
- ``etcd``: replayed from etcd's history after the run: ``leader_events``
  (``rev``, ``identity`` and ``create_revision``, or ``deleted``) and
  ``table_writes`` (``rev``, ``version``) of ``routing/current``;
- ``audit``: the audit records (``request_id``, ``action``, ``region``,
  ``service``, ``geo``, ``time``, ``id``); ``final``: ``evacuated`` regions and
  ``pinned`` [service, geo] pairs as a replica reports them at the end.

``check`` returns every violation as one line, and the figures a run prints.
"""

from __future__ import annotations

import bisect
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

ACKED = ("ack", "duplicate")


@dataclass
class Result:
    violations: list[str] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)


def of_type(records: Iterable[Mapping[str, Any]], kind: str) -> list[Mapping[str, Any]]:
    return [r for r in records if r.get("type") == kind]


def check(records: Sequence[Mapping[str, Any]]) -> Result:
    res = Result()
    start = next(iter(of_type(records, "start")), None)
    if start is None:
        res.violations.append("the history has no start record")
        return res
    check_actions(records, res)
    check_versions(records, res)
    check_fencing(records, start, res)
    check_unhealthy_left(records, start, res)
    check_convergence(records, start, res)
    faults = of_type(records, "fault")
    res.figures["faults injected"] = sum(1 for f in faults if f.get("op") in ("partition", "kill"))
    res.figures["faults by kind"] = dict(sorted(Counter(
        "partition" if f.get("op") == "partition" else f"kill {f.get('component')}"
        for f in faults if f.get("op") in ("partition", "kill")).items()))
    res.figures["violations"] = len(res.violations)
    return res


# ---------------------------------------------------------------------- operator actions


def _fold(audit: Sequence[Mapping[str, Any]], evacuated0: Iterable[str] = (),
          pinned0: Iterable[Sequence[str]] = ()) -> tuple[set[str], set[tuple[str, str]]]:
    """The evacuated regions and pinned (service, geo) pairs the audit leads to from the start's, in its order."""
    evacuated = set(evacuated0)
    pinned = {(str(s), str(g)) for s, g in pinned0}
    for rec in sorted(audit, key=lambda r: (float(r.get("time", 0.0)), str(r.get("id", "")))):
        action, region, sg = rec.get("action"), str(rec.get("region", "")), (str(rec.get("service", "")),
                                                                              str(rec.get("geo", "")))
        if action == "evacuate":
            evacuated.add(region)
        elif action == "restore":
            evacuated.discard(region)
        elif action == "pin":
            pinned.add(sg)
        elif action == "unpin":
            pinned.discard(sg)
    return evacuated, pinned


def check_actions(records: Sequence[Mapping[str, Any]], res: Result) -> None:
    """Acknowledged: exactly once in the audit, as what was asked; never acknowledged: at most once, and
    never when every attempt was refused; the audit's end state is what the replicas report at the end."""
    sends = of_type(records, "send")
    outcomes: dict[str, list[str]] = defaultdict(list)
    for r in of_type(records, "result"):
        outcomes[str(r["rid"])].append(str(r["outcome"]))
    asked = {str(s["rid"]): s for s in sends}
    audit_recs = [a for rec in of_type(records, "audit") for a in rec.get("records", [])]
    counts = Counter(str(a.get("request_id", "")) for a in audit_recs)
    by_rid = {str(a.get("request_id", "")): a for a in audit_recs}
    acked = refused = unknown = 0
    for rid, send in asked.items():
        outs = outcomes.get(rid, [])
        n = counts.get(rid, 0)
        what = f"{send.get('kind')} {send.get('target')} (request id {rid})"
        if any(o in ACKED for o in outs):
            acked += 1
            if n != 1:
                res.violations.append(f"acknowledged {what} appears {n} times in the audit, not once")
            elif by_rid[rid].get("action") != send.get("kind"):
                res.violations.append(f"acknowledged {what} is audited as {by_rid[rid].get('action')!r}")
        else:
            if n > 1:
                res.violations.append(f"unacknowledged {what} took effect {n} times")
            if outs and all(o == "refused" for o in outs):
                refused += 1
                if n:
                    res.violations.append(f"refused {what} took effect anyway")
            else:
                unknown += 1
    if not of_type(records, "audit"):
        res.violations.append("the history has no audit record: actions could not be checked")
    final = next(iter(of_type(records, "final")), None)
    if final is None:
        res.violations.append("the history has no final state: effects could not be checked")
    else:
        ours = [a for a in audit_recs if str(a.get("request_id", "")) in asked]
        start = next(iter(of_type(records, "start")), {})
        evacuated, pinned = _fold(ours, start.get("evacuated") or (), start.get("pinned") or ())
        got_evac = set(final.get("evacuated") or [])
        got_pins = {(str(s), str(g)) for s, g in final.get("pinned") or []}
        if evacuated != got_evac:
            res.violations.append(f"the audit leaves {sorted(evacuated)} evacuated, the replicas report "
                                  f"{sorted(got_evac)}")
        if pinned != got_pins:
            res.violations.append(f"the audit leaves {sorted(pinned)} pinned, the replicas report {sorted(got_pins)}")
    res.figures["actions"] = {"issued": len(asked), "acknowledged": acked, "refused": refused,
                              "unknown": unknown, "attempts": len(sends),
                              "retries": len(sends) - len(asked),
                              "duplicates answered": sum(o.count("duplicate") for o in outcomes.values())}


# ---------------------------------------------------------------------- versions


def check_versions(records: Sequence[Mapping[str, Any]], res: Result) -> None:
    """Each server's observed table versions never go backwards."""
    last: dict[str, tuple[int, float]] = {}
    seen: set[int] = set()
    rounds = 0
    for r in of_type(records, "dns"):
        rounds += 1
        v = r.get("version")
        if not isinstance(v, int) or v < 0:
            continue
        seen.add(v)
        server = str(r["server"])
        prev = last.get(server)
        if prev is not None and v < prev[0]:
            res.violations.append(f"{server}: table version went backwards, v{prev[0]} at {prev[1]:.1f}s "
                                  f"then v{v} at {float(r['t']):.1f}s")
        if prev is None or v >= prev[0]:
            last[server] = (v, float(r["t"]))
    res.figures["dns rounds"] = rounds
    res.figures["versions observed"] = len(seen)
    if seen:
        res.figures["version range"] = [min(seen), max(seen)]


# ---------------------------------------------------------------------- fencing


@dataclass(frozen=True)
class Term:
    create_revision: int
    identity: str
    end_rev: int | None  # the revision that deleted the key (None: still held when the history was read)


def terms_of(start: Mapping[str, Any], events: Sequence[Mapping[str, Any]]) -> list[Term]:
    """The election key's holders in order: the one at the start, then each created during the run."""
    terms: list[Term] = []
    lead = start.get("leader") or {}
    current: tuple[int, str] | None = None
    if lead.get("identity"):
        current = (int(lead.get("create_revision", 0)), str(lead["identity"]))
    for ev in sorted(events, key=lambda e: int(e["rev"])):
        if ev.get("deleted"):
            if current is not None:
                terms.append(Term(current[0], current[1], int(ev["rev"])))
            current = None
        elif current is None or int(ev["create_revision"]) != current[0]:
            if current is not None:
                terms.append(Term(current[0], current[1], int(ev["rev"])))
            current = (int(ev["create_revision"]), str(ev["identity"]))
    if current is not None:
        terms.append(Term(current[0], current[1], None))
    return terms


def holder_at(terms: Sequence[Term], rev: int) -> Term | None:
    """The term that held the key at revision ``rev``."""
    i = bisect.bisect_right([t.create_revision for t in terms], rev) - 1
    if i < 0:
        return None
    t = terms[i]
    return t if t.end_rev is None or rev < t.end_rev else None


def check_fencing(records: Sequence[Mapping[str, Any]], start: Mapping[str, Any], res: Result) -> None:
    """Every table written during the run was written while its leader held the election key; a table
    served names that leader; and once a server serves a newer leader term's table it never serves an
    older term's again (a deposed leader's table after the new leader's first)."""
    etcd = next(iter(of_type(records, "etcd")), None)
    if etcd is None:
        res.violations.append("the history has no etcd record: fencing could not be checked")
        return
    terms = terms_of(start, etcd.get("leader_events") or [])
    writes = {int(w["version"]): int(w["rev"]) for w in etcd.get("table_writes") or []}
    term_of: dict[int, Term] = {}
    for version, rev in sorted(writes.items()):
        holder = holder_at(terms, rev)
        if holder is None:
            res.violations.append(f"table v{version} was written at revision {rev} while no leader held the key")
        else:
            term_of[version] = holder
    named: dict[int, str] = {}
    last_term: dict[str, tuple[int, int]] = {}  # server -> (term's create_revision, the version that showed it)
    for r in of_type(records, "dns"):
        v, leader = r.get("version"), r.get("leader")
        if not isinstance(v, int) or v < 0:
            continue
        term = term_of.get(v)
        if term is None:
            continue  # written before the run (its leader is the start's) or never seen written
        if leader is not None and str(leader) != term.identity and v not in named:
            named[v] = str(leader)
            res.violations.append(f"table v{v} names leader {leader!r} but was written while {term.identity!r} "
                                  f"held the key (revision {writes[v]})")
        server = str(r["server"])
        prev = last_term.get(server)
        if prev is not None and term.create_revision < prev[0]:
            res.violations.append(f"{server}: served v{v} of {term.identity!r}'s term (key created at revision "
                                  f"{term.create_revision}) after v{prev[1]} of a newer term, at {float(r['t']):.1f}s")
        if prev is None or term.create_revision >= prev[0]:
            last_term[server] = (term.create_revision, v)
    res.figures["leader terms"] = len(terms)
    res.figures["tables written"] = len(writes)


# ---------------------------------------------------------------------- health in answers


def _intervals(faults: Sequence[Mapping[str, Any]], start_ops: tuple[str, str], end_ops: tuple[str, str],
               end_t: float) -> dict[str, list[tuple[float, float]]]:
    """Per region, the [from, to) times a fault of this kind held (``start_ops``/``end_ops``: (op, component))."""
    opened: dict[str, float] = {}
    out: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for f in sorted(faults, key=lambda f: float(f["t"])):
        key = (str(f.get("op")), str(f.get("component") or ""))
        region = str(f.get("region"))
        if key == start_ops and region not in opened:
            opened[region] = float(f["t"])
        elif key == end_ops and region in opened:
            out[region].append((opened.pop(region), float(f["t"])))
    for region, t0 in opened.items():
        out[region].append((t0, end_t))
    return out


def silent_intervals(faults: Sequence[Mapping[str, Any]], end_t: float) -> dict[str, list[tuple[float, float]]]:
    """When each region was silent to the control plane: cut off from all others, or its agents dead."""
    out = _intervals(faults, ("partition", ""), ("heal", ""), end_t)
    for region, spans in _intervals(faults, ("kill", "agent"), ("restart", "agent"), end_t).items():
        out.setdefault(region, []).extend(spans)
    return out


def check_unhealthy_left(records: Sequence[Mapping[str, Any]], start: Mapping[str, Any], res: Result) -> None:
    """Outside a cut-off region (and its first ``detection_bound`` seconds after healing), no server answers
    with a region silent for longer than the bound."""
    bound = float(start["detection_bound"])
    answers_of = {str(r): set(a) for r, a in (start.get("answers") or {}).items()}
    dns = of_type(records, "dns")
    end_t = max((float(r["t"]) for r in records if "t" in r), default=0.0)
    faults = of_type(records, "fault")
    silent = silent_intervals(faults, end_t)
    cut = _intervals(faults, ("partition", ""), ("heal", ""), end_t)
    flagged: set[tuple[str, str, float]] = set()
    left_after: dict[tuple[str, str, float], float] = {}
    for r in dns:
        t, server = float(r["t"]), str(r["server"])
        if any(a <= t < b + bound for a, b in cut.get(server, [])):
            continue
        served = {addr for addrs in (r.get("answers") or {}).values() if addrs for addr in addrs}
        if not r.get("answers") or all(v is None for v in r["answers"].values()):
            continue
        for region, spans in silent.items():
            for a, b in spans:
                if not a <= t < b:
                    continue
                key = (server, region, a)
                present = bool(served & answers_of.get(region, set()))
                if not present and key not in left_after:
                    left_after[key] = t - a
                if present and t - a > bound and key not in flagged:
                    flagged.add(key)
                    res.violations.append(f"{server}: answered with {region} at {t:.1f}s, silent since {a:.1f}s "
                                          f"(beyond the {bound:g} s detection bound)")
    if left_after:
        res.figures["silent region left answers within (s)"] = round(max(left_after.values()), 1)


# ---------------------------------------------------------------------- convergence


def heal_convergence(records: Sequence[Mapping[str, Any]], regions: Sequence[str]) -> list[float]:
    """For each partition healed while no other fault was under way until every server agreed: the seconds
    until every region's server had reported one version since the heal."""
    faults = sorted(of_type(records, "fault"), key=lambda f: float(f["t"]))
    dns = sorted(of_type(records, "dns"), key=lambda r: float(r["t"]))
    out = []
    for i, f in enumerate(faults):
        if f.get("op") != "heal":
            continue
        t_h = float(f["t"])
        nxt = next((float(g["t"]) for g in faults[i + 1:] if g.get("op") in ("partition", "kill")), math.inf)
        latest: dict[str, int] = {}
        for r in dns:
            t = float(r["t"])
            if t < t_h or not isinstance(r.get("version"), int) or r["version"] < 0:
                continue
            if t >= nxt:
                break
            latest[str(r["server"])] = int(r["version"])
            if len(latest) == len(regions) and len(set(latest.values())) == 1:
                out.append(round(t - t_h, 1))
                break
    return out


def check_convergence(records: Sequence[Mapping[str, Any]], start: Mapping[str, Any], res: Result) -> None:
    heals = heal_convergence(records, [str(r) for r in start.get("regions") or []])
    if heals:
        res.figures["one version after a partition healed (s)"] = heals
    bound = float(start["convergence_bound"])
    conv = next(iter(of_type(records, "converged")), None)
    if conv is None:
        res.violations.append("the history has no convergence record")
        return
    seconds = conv.get("seconds")
    if seconds is None or float(seconds) > bound:
        res.violations.append(f"after healing the DNS servers did not converge to one version within {bound:g} s "
                              f"(last seen: {conv.get('versions')})")
    else:
        res.figures["converged after heal (s)"] = round(float(seconds), 1)
        res.figures["converged version"] = conv.get("version")


def main(argv: Sequence[str]) -> int:
    """``python -m steering.lab.history FILE``: check a recorded run again; exit 1 on a violation."""
    import json
    from pathlib import Path

    if len(argv) != 1:
        print("usage: python -m steering.lab.history HISTORY.jsonl")
        return 2
    try:
        records = [json.loads(line) for line in Path(argv[0]).read_text().splitlines() if line.strip()]
    except (OSError, ValueError) as exc:
        print(f"{argv[0]}: {exc}")
        return 2
    res = check(records)
    for k, v in res.figures.items():
        print(f"{k}: {v}")
    for line in res.violations:
        print(f"VIOLATION: {line}")
    return 1 if res.violations else 0


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
