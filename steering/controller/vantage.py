"""Health from several vantage points: who reports on a target, and how their views decide its health. Pure.

A target's reporters are its local agent (``local``) and every observer the
config lists for it (``observers[].targets``): agents elsewhere that probe it
from outside, each standing for some client geos (docs/health.md).

- **Counted.** A reporter with a health record (heard within the silence
  timeout) counts; a silent one does not. With none counted, the target is
  silent (or unknown during a leader's start-up grace), as before observers.
- **Quorum.** The target is unhealthy when at least ``needed(rule, counted)``
  of its counted reporters say unhealthy: ``any`` 1, ``all`` every one,
  ``majority`` more than half, a number N at most N (never more than are
  counted: a target whose other reporters went silent is decided by those
  left). More failing reporters never make a target healthier.
- **Unreachable.** A target that is healthy by the quorum while some of its
  observers fail is *unreachable from* them: a network problem between
  regions, not a site failure. The client geos whose counted observers fail
  by the same quorum (taken among that geo's observers) are the geos it is
  unreachable from; under ``policy.health.per_geo_reachability`` the planner
  gives it no traffic from them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from steering.config import Config, QuorumRule, reporters_of
from steering.model import ReporterView, Status
from steering.table import RoutingTable

LOCAL = "local"  # the reporter name of a target's own agent (observers are named by their agent_id)
SLOT = "~"  # between a site and an observer in a reporter's slot: ``us-east-1~eu-probe`` (ids never hold it)

Rule = QuorumRule | int


def slot(site: str, reporter: str = "") -> str:
    """The per-reporter key of a target: the site itself for its local agent, ``site~observer`` otherwise."""
    return site if not reporter or reporter == LOCAL else f"{site}{SLOT}{reporter}"


def split_slot(key: str) -> tuple[str, str]:
    """``(site, reporter)`` of a slot; the reporter is ``local`` for the site's own agent."""
    site, _, reporter = key.partition(SLOT)
    return site, reporter or LOCAL


def needed(rule: Rule, counted: int) -> int:
    """How many of ``counted`` reporters must say unhealthy for the target to be unhealthy (at least 1)."""
    if counted <= 1 or rule == "any":
        return 1
    if rule == "all":
        return counted
    if rule == "majority":
        return counted // 2 + 1
    return max(1, min(int(rule), counted))


def describe(rule: Rule) -> str:
    return f"quorum {rule}" if isinstance(rule, int) else rule


@dataclass(frozen=True)
class Verdict:
    """What a target's reporters decide together."""

    status: Status  # healthy | unhealthy, or silent when no reporter counts
    counted: int
    needed: int
    failing: tuple[str, ...]  # counted reporters that say unhealthy
    unreachable_by: tuple[str, ...]  # observers that fail while the target is healthy by the quorum
    unreachable_from: tuple[str, ...]  # client geos whose observers cannot reach it (quorum per geo)
    text: str  # the reading in one line, for status and the merged record's detail


def decide(views: Sequence[ReporterView], rule: Rule) -> Verdict:
    """The quorum over ``views`` (one per configured reporter, silent ones included)."""
    counted = [v for v in views if v.counted]
    failing = tuple(v.reporter for v in counted if v.status == "unhealthy")
    need = needed(rule, len(counted))
    if not counted:
        return Verdict("silent", 0, need, (), (), (), "no reporter heard within the silence timeout")
    if len(failing) >= need:
        text = f"unhealthy: {_of(failing, counted)} say so ({describe(rule)} needs {need})"
        return Verdict("unhealthy", len(counted), need, failing, (), (), text)
    by = tuple(v.reporter for v in counted if v.status == "unhealthy" and v.role == "observer")
    geos = unreachable_geos(views, rule)
    parts = []
    if by:
        parts.append("unreachable from " + ", ".join(_observer(v) for v in counted if v.reporter in by))
    local = next((v for v in views if v.role == "local"), None)
    if local is not None and local.status == "unhealthy":
        parts.append(f"its agent says unhealthy, outvoted: {_of(failing, counted)} ({describe(rule)} needs {need})")
    elif local is not None and not local.counted:
        parts.append(f"its agent is silent; {len(counted)} observer{'s' if len(counted) != 1 else ''} decide")
    return Verdict("healthy", len(counted), need, failing, by, geos, "; ".join(parts))


def unreachable_geos(views: Sequence[ReporterView], rule: Rule) -> tuple[str, ...]:
    """Geos whose counted observers fail by the quorum taken among them (sorted)."""
    per_geo: dict[str, list[ReporterView]] = {}
    for v in views:
        if v.counted and v.role == "observer":
            for g in v.geos:
                per_geo.setdefault(g, []).append(v)
    out = []
    for geo, observers in per_geo.items():
        failing = sum(1 for v in observers if v.status == "unhealthy")
        if failing and failing >= needed(rule, len(observers)):
            out.append(geo)
    return tuple(sorted(out))


def lost_reach(before: RoutingTable, after: RoutingTable) -> bool:
    """Some geo's traffic left a target its observers cannot reach: as urgent to publish as a target that
    stopped serving (the leader does not pace it by step_seconds)."""
    for name, svc in after.services.items():
        old = before.services.get(name)
        if old is None:
            continue
        for geo, route in svc.geos.items():
            prev = old.geos.get(geo)
            if prev is None:
                continue
            for t, why in route.reasons.items():
                if why.startswith("unreachable from") and prev.weights.get(t, 0) > 0 and not route.weights.get(t):
                    return True
    return False


def _observer(v: ReporterView) -> str:
    return f"{v.reporter} ({', '.join(v.geos)})" if v.geos else v.reporter


def _of(failing: Sequence[str], counted: Sequence[ReporterView]) -> str:
    return f"{len(failing)} of {len(counted)} reporters ({', '.join(failing)})"


@dataclass(frozen=True)
class Vantage:
    """The config's reporters and quorum: what the merge, the ingest and status need of it."""

    rule: Rule
    per_geo: bool
    observed: Mapping[str, tuple[str, ...]]  # target -> its observers' ids, in config order
    targets: Mapping[str, frozenset[str]]  # observer id -> the targets it may observe
    geos: Mapping[str, tuple[str, ...]]  # observer id -> the client geos it stands for

    @classmethod
    def of(cls, config: Config) -> Vantage:
        return config.derived("controller.vantage", _build)

    def reporters(self, target: str) -> tuple[str, ...]:
        """Every configured reporter of ``target``: ``local`` first, then its observers."""
        return (LOCAL, *self.observed.get(target, ()))

    def view(self, target: str, reporter: str, status: Status, updated_at: float = 0.0, detail: str = "",
             heard_by: str = "") -> ReporterView:
        if reporter == LOCAL:
            return ReporterView(LOCAL, "local", status, updated_at, (), detail, heard_by)
        return ReporterView(reporter, "observer", status, updated_at, self.geos.get(reporter, ()), detail, heard_by)


def _build(config: Config) -> Vantage:
    observed = {t: tuple(o.id for o in obs) for t, obs in reporters_of(config).items()}
    return Vantage(rule=config.policy.health.quorum, per_geo=config.policy.health.per_geo_reachability,
                   observed=observed, targets={o.id: frozenset(o.targets) for o in config.observers},
                   geos={o.id: tuple(o.geos) for o in config.observers})
