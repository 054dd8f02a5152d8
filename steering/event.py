"""One entry of the event timeline: an automatic change an operator can read afterwards. Pure.

Operator actions have their audit (``steerctl history``); events are what
the control plane did on its own: a target's health flipped, a target left
or entered service in some geos, a geo spilled beyond its preferred target,
a geo failed open, the leadership moved, the Route 53 sync failed or came
back (docs/architecture.md §4, §9; docs/operator-guide.md "Events").

Every field is bounded, whichever side made it: text is cut, the details
are a small JSON object (lists cut, strings cut, the whole at most
``MAX_DETAILS_BYTES``), so one event never grows a record in etcd beyond a
few KiB. ``from_dict`` checks a stored record as strictly as a request and
raises ``ValueError`` only, so a reader skips (and counts) what it cannot use.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from steering import limits

Severity = Literal["info", "warning", "critical"]
SEVERITIES: tuple[str, ...] = ("info", "warning", "critical")

# The kinds the controller writes; a reader accepts any short kind (a newer writer may add some).
HEALTH_CHANGED = "health_changed"
LEFT_SERVICE = "left_service"
ENTERED_SERVICE = "entered_service"
SPILL_STARTED = "spill_started"
SPILL_ENDED = "spill_ended"
FAIL_OPEN_STARTED = "fail_open_started"
FAIL_OPEN_ENDED = "fail_open_ended"
LEADER_ELECTED = "leader_elected"
LEADER_RESIGNED = "leader_resigned"
LEADER_LOST = "leader_lost"
ROUTE53_ERROR = "route53_error"
ROUTE53_RECOVERED = "route53_recovered"
FLAPPING = "flapping"
KINDS: tuple[str, ...] = (HEALTH_CHANGED, LEFT_SERVICE, ENTERED_SERVICE, SPILL_STARTED, SPILL_ENDED,
                          FAIL_OPEN_STARTED, FAIL_OPEN_ENDED, LEADER_ELECTED, LEADER_RESIGNED, LEADER_LOST,
                          ROUTE53_ERROR, ROUTE53_RECOVERED, FLAPPING)

MAX_KIND = 64
MAX_SUBJECT = 300  # "site/<id>": an id is at most limits.MAX_ID
MAX_MESSAGE = 512
MAX_REPLICA = 256
MAX_DETAILS_BYTES = 4096
MAX_DETAIL_ITEMS = 16  # entries of one list or object inside the details
MAX_DETAIL_TEXT = 200  # characters of one string inside the details
_MAX_DEPTH = 4


def subject(kind: str, ident: str) -> str:
    """``region/us-east-1``, ``site/oc-nyc-1``, ``geo/europe``, ``replica/c1``, ``sink/route53``."""
    return limits.clip(f"{kind}/{ident}", MAX_SUBJECT)


def bounded(value: Any, depth: int = 0) -> Any:
    """``value`` as JSON-able data within the detail bounds: strings cut, lists and objects cut to
    ``MAX_DETAIL_ITEMS`` entries, numbers finite (others become null), nesting at most a few levels."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value if abs(value) < 2**53 else float(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        return limits.clip(value, MAX_DETAIL_TEXT)
    if depth >= _MAX_DEPTH:
        return limits.clip(str(value), MAX_DETAIL_TEXT)
    # Cut to MAX_DETAIL_ITEMS entries in all, the marker included: bounding what is bounded changes nothing.
    if isinstance(value, Mapping):
        items = list(value.items())
        keep = items if len(items) <= MAX_DETAIL_ITEMS else items[: MAX_DETAIL_ITEMS - 1]
        out = {limits.clip(str(k), MAX_DETAIL_TEXT): bounded(v, depth + 1) for k, v in keep}
        if len(keep) < len(items):
            out["…"] = f"{len(items) - len(keep)} more"
        return out
    if isinstance(value, (list, tuple, set, frozenset)):
        seq = sorted(value, key=str) if isinstance(value, (set, frozenset)) else list(value)
        kept = seq if len(seq) <= MAX_DETAIL_ITEMS else seq[: MAX_DETAIL_ITEMS - 1]
        cut = [bounded(v, depth + 1) for v in kept]
        if len(kept) < len(seq):
            cut.append(f"… {len(seq) - len(kept)} more")
        return cut
    return limits.clip(str(value), MAX_DETAIL_TEXT)


def _details(value: Mapping[str, Any]) -> dict[str, Any]:
    out = bounded(dict(value))
    if len(json.dumps(out, sort_keys=True, separators=(",", ":"))) > MAX_DETAILS_BYTES:
        # Many long strings: keep the top-level keys (short), each value as short JSON text.
        out = {limits.clip(k, 48): limits.clip(json.dumps(v, sort_keys=True), 160) for k, v in out.items()}
    return cast(dict[str, Any], out)  # bounded() of a mapping is a dict


@dataclass(frozen=True)
class Event:
    time: float  # unix seconds (the writer's wall clock)
    kind: str
    severity: Severity
    subject: str  # what it is about: see ``subject``
    message: str  # one line for a human
    details: Mapping[str, Any] = field(default_factory=dict)
    replica: str = ""  # the controller replica that wrote it
    id: str = ""  # set by the store: ``<UTC time>-<hex>``, the key under events/

    def __post_init__(self) -> None:
        # Bound whatever a caller passed: an event is always small enough to store.
        object.__setattr__(self, "kind", limits.clip(self.kind, MAX_KIND))
        object.__setattr__(self, "subject", limits.clip(self.subject, MAX_SUBJECT))
        object.__setattr__(self, "message", limits.clip(" ".join(self.message.split()), MAX_MESSAGE))
        object.__setattr__(self, "replica", limits.clip(self.replica, MAX_REPLICA))
        object.__setattr__(self, "details", _details(self.details))

    def to_dict(self) -> dict[str, Any]:
        """The stored form (the id is the key, not stored in the value)."""
        return {"time": self.time, "kind": self.kind, "severity": self.severity, "subject": self.subject,
                "message": self.message, "details": dict(self.details), "replica": self.replica}

    @classmethod
    def from_dict(cls, data: Any, id: str = "") -> Event:
        """A stored record back; ``ValueError`` naming the field when it is not one."""
        if not isinstance(data, Mapping):
            raise ValueError("not a JSON object")
        when = limits.number("time", data.get("time"), limits.STARTED_AT)
        kind = limits.text("kind", data.get("kind"), MAX_KIND)
        if not kind:
            raise ValueError("kind: empty")
        severity = data.get("severity")
        if severity not in SEVERITIES:
            raise ValueError(f"severity: {limits.show(severity)} is not one of {', '.join(SEVERITIES)}")
        details = data.get("details", {})
        if not isinstance(details, Mapping):
            raise ValueError("details: not an object")
        return cls(time=when, kind=kind, severity=cast(Severity, severity),
                   subject=limits.text("subject", data.get("subject"), MAX_SUBJECT),
                   message=limits.text("message", data.get("message"), MAX_MESSAGE * 4),
                   details=details, replica=limits.text("replica", data.get("replica", ""), MAX_REPLICA), id=id)
