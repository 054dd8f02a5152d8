"""The routing table: one immutable, versioned snapshot of where traffic goes.

The leader writes it, etcd holds it (canonical JSON, see ``to_json``), and the
DNS server, the Route 53 sink and ``steering.client`` serve from it. The JSON
is canonical (sorted keys, no spaces), so the same table is the same bytes.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from steering import jsonchunks
from steering.retire import retire
from steering.weights import TOTAL_WEIGHT


@dataclass(frozen=True)
class GeoRoute:
    """Weights (summing to TOTAL_WEIGHT) over a geo's candidate targets, each with its reason."""

    _retire_whole: ClassVar[bool] = True  # flat: steering.retire frees one whole

    weights: Mapping[str, int]
    reasons: Mapping[str, str]
    fail_open: bool = False
    pinned: bool = False

    def serving(self) -> list[tuple[str, int]]:
        """Targets with a non-zero weight, highest first (ties in candidate order)."""
        order = list(self.weights)
        return sorted(((t, w) for t, w in self.weights.items() if w > 0), key=lambda tw: (-tw[1], order.index(tw[0])))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"weights": dict(self.weights), "reasons": dict(self.reasons)}
        if self.fail_open:
            out["fail_open"] = True
        if self.pinned:
            out["pinned"] = True
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], checked: bool = False) -> GeoRoute:
        """``checked``: ``data`` is parsed JSON that ``_route_problem`` passed and nothing else holds, so its
        weights (str -> int) and reasons (str -> str) dicts are taken as they are instead of copied: at 10,000
        sites that is 10,000 dicts neither built nor freed per decode (the DNS workers' swap)."""
        if checked:
            return cls(weights=data["weights"], reasons=data.get("reasons") or {},
                       fail_open=data.get("fail_open", False), pinned=data.get("pinned", False))
        return cls(weights={str(k): int(v) for k, v in data["weights"].items()},
                   reasons={str(k): str(v) for k, v in data.get("reasons", {}).items()},
                   fail_open=bool(data.get("fail_open", False)), pinned=bool(data.get("pinned", False)))


@dataclass(frozen=True)
class ServiceRoute:
    targets: str  # "regions" | "sites"
    geos: Mapping[str, GeoRoute]

    def to_dict(self) -> dict[str, Any]:
        return {"targets": self.targets, "geos": {g: r.to_dict() for g, r in self.geos.items()}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], checked: bool = False) -> ServiceRoute:
        return cls(targets=str(data.get("targets", "regions")),
                   geos={str(g): GeoRoute.from_dict(r, checked) for g, r in data["geos"].items()})


@dataclass(frozen=True)
class TargetState:
    """A region's or site's state as the planner saw it, and the load it planned for it."""

    _retire_whole: ClassVar[bool] = True  # flat: steering.retire frees one whole

    kind: str  # "region" | "site"
    region: str
    health: str
    serving: bool
    capacity: float
    load: float
    planned_load: float
    utilization: float | None  # None when capacity is 0
    evacuation: str = ""
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind, "region": self.region, "health": self.health, "serving": self.serving,
            "capacity": self.capacity, "load": self.load, "planned_load": self.planned_load,
            "utilization": self.utilization, "evacuation": self.evacuation, "reason": self.reason,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TargetState:
        util = data.get("utilization")
        return cls(kind=str(data["kind"]), region=str(data["region"]), health=str(data["health"]),
                   serving=bool(data["serving"]), capacity=float(data["capacity"]), load=float(data["load"]),
                   planned_load=float(data["planned_load"]), utilization=None if util is None else float(util),
                   evacuation=str(data.get("evacuation", "")), reason=str(data.get("reason", "")))


# The JSON of the site states of the last table written, by their exact content: a leader writes a table
# of 5,000 sites several times a second while sites flip, and nearly every site's state is the one it wrote
# last time (32 ms a table at 5,000 sites written whole, 15 ms from here). A float is keyed by its bit
# pattern, not its value, so 0.0 and -0.0 (equal, written apart) never share an entry, nor 1 and 1.0; a
# state with a number of another type is written as json writes it and not kept. No more than twice one
# table's worth is kept (no growth however loads move).
_SITE_JSON: list[dict[tuple[Any, ...], jsonchunks.Raw]] = [{}]
# The same, by the state object itself: the incremental planner hands the states of unchanged sites on as
# they are, and knowing one by its identity skips building its key (10 -> 1.3 ms at 5,000 sites). Each entry
# holds its state, so its id is not reused while the entry lasts.
_SITE_BY_ID: list[dict[int, tuple[TargetState, tuple[Any, ...], jsonchunks.Raw]]] = [{}]
_FLOAT = struct.Struct("<d")


def _exact(x: Any) -> Any:
    """A key for the number ``x`` that tells apart what json writes apart; NotImplemented: not a number kept."""
    t = type(x)
    if t is float:
        return _FLOAT.pack(x)
    if t is int or x is None:
        return x
    return NotImplemented


def _sites_json(sites: Mapping[str, TargetState]) -> dict[str, jsonchunks.Raw | dict[str, Any]]:
    """Each state's JSON as ``json.dumps(state.to_dict(), sort_keys=True, separators=(",", ":"))`` writes it,
    taken from the last table's where it was written then; its dict when a field is of a type not kept."""
    last = _SITE_JSON[0]
    last_ids = _SITE_BY_ID[0]
    # The last table's entries are carried over (a tuple's hash is not cached: adding every key again costs
    # more than the rest), so a state known by identity need not be added; rebuilt from this table's alone
    # once this table's could take them past twice its states: no more than that is ever kept.
    fresh = len(last) > len(sites) + 64
    kept: dict[tuple[Any, ...], jsonchunks.Raw] = {} if fresh else last.copy()
    ids: dict[int, tuple[TargetState, tuple[Any, ...], jsonchunks.Raw]] = {}
    out: dict[str, jsonchunks.Raw | dict[str, Any]] = {}
    for name, state in sites.items():
        entry = last_ids.get(id(state))
        if entry is not None and entry[0] is state:
            text = entry[2]
            if fresh:
                kept[entry[1]] = text
        else:
            key = (state.kind, state.region, state.health, state.serving, state.evacuation, state.reason,
                   _exact(state.capacity), _exact(state.load), _exact(state.planned_load), _exact(state.utilization))
            if NotImplemented in key[6:] or type(state.serving) is not bool:
                out[name] = state.to_dict()
                continue
            found = last.get(key) or kept.get(key)
            text = jsonchunks.Raw(jsonchunks.dumps(state.to_dict(), 0)) if found is None else found
            entry = (state, key, text)
            kept[key] = text
        ids[id(state)] = entry
        out[name] = text
    # (Two threads writing tables at once: each keeps its own; either is right.)
    _SITE_JSON[0] = kept
    _SITE_BY_ID[0] = ids
    return out


RAMP_KINDS = ("evacuation", "restore")


@dataclass(frozen=True)
class RampProgress:
    """How far one evacuation or restore ramp has gone, as the table that applied it says.

    The next plan (this leader's or the next one's) continues from it, so progress never rests on two
    machines' wall clocks agreeing: ``steps`` never goes down, and ``waited`` holds the seconds a leader
    measured on its monotonic clock towards the next step (never time it could not measure itself).
    """

    kind: str  # "evacuation" | "restore"
    started_at: float  # the record's started_at: which ramp this is (a rewritten record starts over)
    steps: int  # steps applied, >= 1; the step that completes the ramp is the last one counted
    waited: float = 0.0  # seconds counted towards the next step, in [0, interval); 0 once complete

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "started_at": self.started_at, "steps": self.steps, "waited": self.waited}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RampProgress:
        return cls(kind=str(data["kind"]), started_at=float(data["started_at"]), steps=int(data["steps"]),
                   waited=float(data.get("waited", 0.0)))


# The top-level members walked deeper than jsonchunks.DEPTH: services, each service, its geos (each route ~1 KB)
_PIECES = {"services": 3}


@dataclass(frozen=True)
class RoutingTable:
    version: int
    parent_version: int
    generated_at: float
    services: Mapping[str, ServiceRoute]
    regions: Mapping[str, TargetState]
    sites: Mapping[str, TargetState] = field(default_factory=dict)
    fail_open: bool = False
    converging: bool = False
    topology: str = ""  # config fingerprint the table was planned for
    leader: str = ""
    notes: tuple[str, ...] = ()  # loud, human-readable warnings (fail-open, blocked evacuations)
    # Per region, the progress of its evacuation or restore ramp (complete ones too, while their record
    # lasts). None: a table written before progress was kept (the JSON has no "ramps"); the planner
    # then takes the old rule at that table's time as where the ramp was.
    ramps: Mapping[str, RampProgress] | None = None

    def route(self, service: str, geo: str) -> GeoRoute | None:
        svc = self.services.get(service)
        return None if svc is None else svc.geos.get(geo)

    def to_dict(self) -> dict[str, Any]:
        return self._doc({r: s.to_dict() for r, s in self.sites.items()})

    def _doc(self, sites: Any) -> dict[str, Any]:
        """The table as a JSON document, with ``sites`` as given (dicts, or their text: ``to_json``)."""
        return {
            "version": self.version,
            "parent_version": self.parent_version,
            "generated_at": self.generated_at,
            "fail_open": self.fail_open,
            "converging": self.converging,
            "topology": self.topology,
            "leader": self.leader,
            "notes": list(self.notes),
            "services": {n: s.to_dict() for n, s in self.services.items()},
            "regions": {r: s.to_dict() for r, s in self.regions.items()},
            "sites": sites,
        } | ({} if self.ramps is None else {"ramps": {r: p.to_dict() for r, p in self.ramps.items()}})

    def to_json(self) -> bytes:
        return self.to_json_with_sites_span()[0]

    def to_json_with_sites_span(self) -> tuple[bytes, tuple[int, int]]:
        """``to_json``'s bytes, and where in them the value of "sites" is (start, end): the store's pointer
        carries it, so that a reader that serves no site state (a DNS server) can leave those bytes unparsed
        (``from_json(..., sites_span=...)``)."""
        # json.dumps's bytes, written a piece at a time: one C call for 4 MB held every other thread for 80 ms
        # Most sites' states are the same from one table to the next: their JSON is written once (_sites_json).
        sites = jsonchunks.dumps(_sites_json(self.sites))
        text = jsonchunks.dumps(self._doc(jsonchunks.Raw(sites)))
        # The members after "sites" in sorted order are "topology" (a string) and "version" (an int): neither
        # can hold this text, so its last occurrence is the key that follows the sites' value.
        end = text.rfind(',"topology":')
        start = end - len(sites)
        if end < 0 or text[start:end] != sites:  # cannot happen while _doc writes those keys; never a wrong span
            raise AssertionError("routing table JSON: the sites' value is not where it was written")
        return text.encode(), (start, end)

    def same_routing(self, other: RoutingTable) -> bool:
        """Equal decisions (ignoring version, time, leader and ramp progress): nothing to publish. Cheaper
        than JSON. Progress alone is bookkeeping: a step that moves nothing need not be published, and the
        next plan, counting from the last published table, comes to the same step."""
        return (self.services == other.services and self.regions == other.regions and self.sites == other.sites
                and self.fail_open == other.fail_open and self.converging == other.converging
                and self.topology == other.topology and self.notes == other.notes)

    def routing_json(self) -> bytes:
        """The routing decisions alone (no version, time, leader or ramp progress): equal bytes mean nothing
        to publish (see ``same_routing``)."""
        d = self.to_dict()
        for key in ("version", "parent_version", "generated_at", "leader"):
            d.pop(key)
        d.pop("ramps", None)
        return jsonchunks.dumps(d).encode()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], checked: bool = False) -> RoutingTable:
        """``checked``: ``data`` is parsed JSON that ``_shape_problem`` passed, owned by this call (its routes'
        dicts become the table's: ``GeoRoute.from_dict``)."""
        return cls(
            version=int(data["version"]),
            parent_version=int(data.get("parent_version", 0)),
            generated_at=float(data.get("generated_at", 0.0)),
            fail_open=bool(data.get("fail_open", False)),
            converging=bool(data.get("converging", False)),
            topology=str(data.get("topology", "")),
            leader=str(data.get("leader", "")),
            notes=tuple(str(n) for n in data.get("notes", ())),
            services={str(n): ServiceRoute.from_dict(s, checked) for n, s in data["services"].items()},
            regions={str(r): TargetState.from_dict(s) for r, s in data.get("regions", {}).items()},
            sites={str(r): TargetState.from_dict(s) for r, s in data.get("sites", {}).items()},
            ramps=(None if data.get("ramps") is None
                   else {str(r): RampProgress.from_dict(p) for r, p in data["ramps"].items()}),
        )

    @classmethod
    def from_json(cls, blob: bytes | str, sites_span: tuple[int, int] | None = None) -> RoutingTable:
        """Parse a table; raises ValueError naming the problem for anything malformed.

        Only ValueError, whatever the bytes: callers (the DNS server's state file, the store's
        watch, clients) treat it as "not a table" and carry on with what they have.

        ``sites_span``: where the value of "sites" is in ``blob`` (``to_json_with_sites_span``), for a reader
        that serves no site state: those bytes are neither parsed nor checked and the table has no site
        states (half the work at 10,000 sites). A span that does not hold (not an object there, or the rest
        not a table) is ignored and the whole document decides, errors included.
        """
        if sites_span is not None and isinstance(blob, bytes):
            served = _without_sites(blob, sites_span)
            if served is not None:
                try:
                    return cls._from_json(served)
                except ValueError:
                    pass
        return cls._from_json(blob)

    @classmethod
    def _from_json(cls, blob: bytes | str) -> RoutingTable:
        try:
            # json.loads's values, parsed a piece at a time (see jsonchunks); a service's 250 geos are one
            # 200 KB piece at the default depth (3-4 ms in one C call): its routes are parsed one by one
            data = jsonchunks.loads(blob, deeper=_PIECES)
        except RecursionError:  # nesting deeper than the interpreter's stack allows
            raise ValueError("malformed routing table: JSON nested too deep") from None
        except ValueError as exc:  # not JSON, not UTF-8, an integer of more than 4300 digits
            raise ValueError(f"malformed routing table: not JSON ({exc})") from None
        problem = _shape_problem(data)
        if problem:
            raise ValueError(f"malformed routing table: {problem}")
        try:
            table = cls.from_dict(data, checked=True)
        except (ValueError, KeyError, TypeError, AttributeError, ArithmeticError, RecursionError) as exc:
            raise ValueError(f"malformed routing table: {type(exc).__name__}: {exc}") from None
        # The parsed document, ~100,000 dicts, lists and numbers at 10,000 sites, freed a piece at a time: let
        # go at this frame's end, it is one cascade of deallocations that holds the interpreter 6-10 ms, and
        # the DNS server decodes tables in a thread next to the ones answering (docs/benchmarks.md)
        box = [data]
        del data
        retire(box)
        for name, svc in table.services.items():
            for geo, route in svc.geos.items():
                negative = next((t for t, w in route.weights.items() if w < 0), None)
                if negative is not None:  # named first: with one, the sum can still be 1000 and say nothing
                    raise ValueError(f"malformed routing table: {name} {geo}: weights[{negative}] = "
                                     f"{route.weights[negative]} must be >= 0")
                total = sum(route.weights.values())
                if total != TOTAL_WEIGHT:
                    raise ValueError(f"malformed routing table: {name} {geo}: weights sum to {total}, not {TOTAL_WEIGHT}")
        return table


def _without_sites(blob: bytes, span: tuple[int, int]) -> bytes | None:
    """``blob`` with the value of its "sites" member at ``span`` made ``{}``; None if no such value is there."""
    start, end = span
    if not (len(_SITES_KEY) <= start < end <= len(blob)) or blob[start - len(_SITES_KEY):start] != _SITES_KEY:
        return None
    if blob[start:start + 1] != b"{" or blob[end - 1:end] != b"}":
        return None
    return b"".join((blob[:start], b"{}", blob[end:]))


_SITES_KEY = b'"sites":'


# ---- the shape a table's JSON must have, checked before building one (see ``RoutingTable.from_json``)

_MAX_VERSION = 2**63  # etcd's revisions and our versions are int64; beyond that a gauge cannot show it
_STATE_NUMBERS = ("capacity", "load", "planned_load")
_STATE_TEXTS = ("kind", "region", "health")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _optional(data: Mapping[str, Any], key: str, check: Any, what: str, where: str) -> str:
    if key in data and not check(data[key]):
        return f"{where}{key}: {_short(data[key])} is not {what}"
    return ""


def _short(v: Any) -> str:
    text = repr(v) if not isinstance(v, (dict, list)) else type(v).__name__
    return text if len(text) <= 40 else text[:37] + "..."


def _shape_problem(data: Any) -> str:
    """What makes ``data`` (parsed JSON) not a table, or "" when its shape and field types are right.

    Strict where ``from_dict`` would coerce ("12" into 12, a list into True): a file or a key
    holding something else is broken, and answering from a guess is worse than failing open.
    """
    if not isinstance(data, dict):
        return f"top level is {type(data).__name__}, not an object"
    for key in ("version", "services"):
        if key not in data:
            return f"{key}: missing"
    version = data["version"]
    if not _is_int(version) or not 0 <= version < _MAX_VERSION:
        return f"version: {_short(version)} is not an integer in [0, 2^63)"
    if "parent_version" in data:
        pv = data["parent_version"]
        if not _is_int(pv) or not -_MAX_VERSION < pv < _MAX_VERSION:
            return f"parent_version: {_short(pv)} is not a 64-bit integer"
    if "generated_at" in data:
        gen = data["generated_at"]
        if not _is_number(gen) or not math.isfinite(gen):  # an age computed from it must be a number
            return f"generated_at: {_short(gen)} is not a finite number"
    for key in ("fail_open", "converging"):
        if problem := _optional(data, key, lambda v: isinstance(v, bool), "true or false", ""):
            return problem
    for key in ("topology", "leader"):
        if problem := _optional(data, key, lambda v: isinstance(v, str), "a string", ""):
            return problem
    notes = data.get("notes", [])
    if not isinstance(notes, list) or not all(isinstance(n, str) for n in notes):
        return "notes: not a list of strings"
    services = data["services"]
    if not isinstance(services, dict):
        return "services: not an object"
    for name, svc in services.items():
        if problem := _service_problem(svc, f"services.{name}."):
            return problem
    for section in ("regions", "sites"):
        states = data.get(section, {})
        if not isinstance(states, dict):
            return f"{section}: not an object"
        for tid, state in states.items():
            if problem := _state_problem(state):
                return f"{section}.{tid}{problem}"
    if "ramps" in data:  # absent in tables written before ramp progress was kept
        ramps = data["ramps"]
        if not isinstance(ramps, dict):
            return "ramps: not an object"
        for region, progress in ramps.items():
            if problem := _ramp_problem(progress, f"ramps.{region}."):
                return problem
    return ""


def _ramp_problem(progress: Any, where: str) -> str:
    if not isinstance(progress, dict):
        return f"{where[:-1]}: not an object"
    for key in ("kind", "started_at", "steps"):
        if key not in progress:
            return f"{where}{key}: missing"
    if progress["kind"] not in RAMP_KINDS:
        return f"{where}kind: {_short(progress['kind'])} is not {' or '.join(RAMP_KINDS)}"
    steps = progress["steps"]
    if not _is_int(steps) or not 1 <= steps < _MAX_VERSION:
        return f"{where}steps: {_short(steps)} is not an integer >= 1"
    for key in ("started_at", "waited"):
        value = progress.get(key, 0.0)
        if not _is_number(value) or not math.isfinite(value) or value < 0:
            return f"{where}{key}: {_short(value)} is not a finite number >= 0"
    return ""


def _service_problem(svc: Any, where: str) -> str:
    if not isinstance(svc, dict):
        return f"{where[:-1]}: not an object"
    if problem := _optional(svc, "targets", lambda v: isinstance(v, str), "a string", where):
        return problem
    geos = svc.get("geos")
    if not isinstance(geos, dict):
        return f"{where}geos: missing or not an object"
    for geo, route in geos.items():
        if problem := _route_problem(route):
            return f"{where}geos.{geo}{problem}"
    return ""


# A DNS worker checks every table it receives (10,000 sites' states and 5,000 routes at benchmark scale, in the
# thread that decodes next to the ones answering): the checks of one route and one state run that often, so they
# test each field in line and the caller names where a problem is only once there is one (with a lambda call
# per field and a location string per state and route, the shape check took 30-48 ms of a 10,000-site decode).

def _route_problem(route: Any) -> str:
    """What is wrong with one route, told as the rest of its location (".weights.x: ..."), or ""."""
    if not isinstance(route, dict):
        return ": not an object"
    weights = route.get("weights")
    if not isinstance(weights, dict):
        return ".weights: missing or not an object"
    for target, w in weights.items():
        if not isinstance(w, int) or isinstance(w, bool):  # the range is the sum check's (from_json)
            return f".weights.{target}: {_short(w)} is not an integer"
    reasons = route.get("reasons", _NO_REASONS)
    if not isinstance(reasons, dict):
        return ".reasons: not an object of strings"
    for r in reasons.values():
        if not isinstance(r, str):
            return ".reasons: not an object of strings"
    for key in ("fail_open", "pinned"):
        if key in route and not isinstance(route[key], bool):
            return f".{key}: {_short(route[key])} is not true or false"
    return ""


_NO_REASONS: dict[str, str] = {}
_STATE_REQUIRED = (*_STATE_TEXTS, "serving", *_STATE_NUMBERS)


def _state_problem(state: Any) -> str:
    """What is wrong with one target's state, told as the rest of its location (".load: ..."), or ""."""
    if not isinstance(state, dict):
        return ": not an object"
    for key in _STATE_REQUIRED:
        if key not in state:
            return f".{key}: missing"
    for key in _STATE_TEXTS:
        if not isinstance(state[key], str):
            return f".{key}: {_short(state[key])} is not a string"
    if not isinstance(state["serving"], bool):
        return f".serving: {_short(state['serving'])} is not true or false"
    # loads are reported as planned, infinite ones included: only the type is checked
    for key in _STATE_NUMBERS:
        v = state[key]
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            return f".{key}: {_short(v)} is not a number"
    u = state.get("utilization")
    if u is not None and (not isinstance(u, (int, float)) or isinstance(u, bool)):
        return f".utilization: {_short(u)} is not a number or null"
    for key in ("evacuation", "reason"):
        if key in state and not isinstance(state[key], str):
            return f".{key}: {_short(state[key])} is not a string"
    return ""
