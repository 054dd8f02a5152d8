"""A ChangePlan for people and scripts: ``steerctl route53 plan`` prints one of these.

``render_plan_text(plan)`` gives one line per change, grouped by batch, then
conflicts, invalid records and notes; ``render_plan_json(plan)`` (or
``plan_to_dict``) gives the same as JSON with stable keys:

    {"counts": {"CREATE": n, "UPSERT": n, "DELETE": n}, "batches": [[change, ...], ...],
     "conflicts": [...], "invalid": [...], "notes": [...],
     "records": {"current": n, "owned": n, "desired": n}}

where a change is ``{"action", "name", "type", "set_identifier", "reason", "record"}`` and
``record`` is the ResourceRecordSet that would be sent.
"""

from __future__ import annotations

import json
from typing import Any

from steering.route53.plan import Change, ChangePlan


def _change_dict(change: Change) -> dict[str, Any]:
    return {"action": change.action, "name": change.record.name, "type": change.record.type,
            "set_identifier": change.record.set_id, "reason": change.reason, "record": change.record.to_api()}


def plan_to_dict(plan: ChangePlan) -> dict[str, Any]:
    return {
        "counts": plan.counts(),
        "batches": [[_change_dict(c) for c in batch] for batch in plan.batches],
        "conflicts": list(plan.conflicts),
        "invalid": list(plan.invalid),
        "notes": list(plan.notes),
        "records": {"current": plan.current_records, "owned": plan.owned_records, "desired": plan.desired_records},
    }


def render_plan_json(plan: ChangePlan) -> str:
    return json.dumps(plan_to_dict(plan), indent=2, sort_keys=True, default=str)


def _what(change: Change) -> str:
    r = change.record
    if r.alias is not None:
        where = f"{r.geo[0]} {r.geo[1]}" if r.geo else ""
        return f"{where} -> alias {r.alias[1]}".strip()
    parts = []
    if r.weight is not None:
        parts.append(f"weight {r.weight}")
    parts.append(f"ttl {r.ttl}")
    parts.append(" ".join(r.values))
    return ", ".join(parts)


def render_plan_text(plan: ChangePlan) -> str:
    counts = plan.counts()
    lines = [f"Route 53 plan: {counts['CREATE']} to create, {counts['UPSERT']} to update, "
             f"{counts['DELETE']} to delete in {len(plan.batches)} batch(es); "
             f"{plan.current_records} records now, {plan.owned_records} ours, {plan.desired_records} desired"]
    if plan.empty:
        lines.append("  nothing to change: Route 53 matches the routing table")
    for i, batch in enumerate(plan.batches, 1):
        lines.append(f"batch {i} ({len(batch)} changes):")
        for c in batch:
            sign = {"CREATE": "+", "UPSERT": "~", "DELETE": "-"}[c.action]
            lines.append(f"  {sign} {c.action:<6} {c.record.key}  {_what(c)}" + (f"  ({c.reason})" if c.reason else ""))
    for title, items in (("conflicts (left alone)", plan.conflicts), ("invalid (not sent)", plan.invalid),
                         ("notes", plan.notes)):
        if items:
            lines.append(f"{title}:")
            lines.extend(f"  {item}" for item in items)
    return "\n".join(lines)
