"""The offline state file for ``steerctl plan``: observed health, demand and overrides.

```yaml
regions: {us-east-1: {healthy: true, capacity: 10000, load: 6000}}
sites:   {oc-nyc-1: {healthy: true, capacity: 4000, load: 1000}}
demand:  {na-east: 3000}
evacuations: [{region: eu-west-1, mode: now}]      # or {mode: ramp, step: 0.25, interval: 60, started_at: ...}
restores: [{region: us-west-2, step: 0.25, interval: 60, started_at: ...}]
pins: [{service: api.example.test., geo: na-east, weights: {us-east-1: 1}}]
```
Every problem is reported with its path, like the configuration's.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from steering.config import Config, ConfigError, load_yaml
from steering.model import Evacuation, Observed, Overrides, Pin, Restore, TargetHealth

_SECTIONS = {"regions", "sites", "demand", "evacuations", "restores", "pins"}


def parse_state(data: Any, config: Config, source: str = "<state>") -> tuple[Observed, Overrides]:
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(source, ["(top level): expected a mapping"])
    problems: list[str] = []
    for key in data:
        if key not in _SECTIONS:
            problems.append(f"{key}: unknown section (expected one of {', '.join(sorted(_SECTIONS))})")
    regions = {r.id for r in config.regions}
    sites = {s.id for s in config.sites}
    geos = {g.id for g in config.geos}
    health: dict[str, TargetHealth] = {}
    for section, known in (("regions", regions), ("sites", sites)):
        entries = data.get(section) or {}
        if not isinstance(entries, Mapping):
            problems.append(f"{section}: expected a mapping of id -> state")
            continue
        for target, entry in entries.items():
            path = f"{section}.{target}"
            if target not in known:
                problems.append(f"{path}: unknown {section[:-1]} {target!r}")
                continue
            if not isinstance(entry, Mapping):
                problems.append(f"{path}: expected a mapping like {{healthy: true, capacity: 100, load: 10}}")
                continue
            bad = set(entry) - {"healthy", "status", "capacity", "load", "detail"}
            if bad:
                problems.append(f"{path}: unknown field(s) {', '.join(sorted(map(str, bad)))}")
            fields = dict(entry)
            if "healthy" in fields:
                if not isinstance(fields["healthy"], bool):
                    problems.append(f"{path}.healthy: {fields['healthy']!r} is not true or false")
                    continue
                fields["status"] = "healthy" if fields.pop("healthy") else "unhealthy"
            fields.setdefault("status", "healthy")
            try:
                health[str(target)] = TargetHealth.from_dict(fields)
            except ValueError as exc:
                problems.append(f"{path}.{exc}")
    demand: dict[str, float] | None = None
    if data.get("demand") is not None:
        raw = data["demand"]
        if not isinstance(raw, Mapping):
            problems.append("demand: expected a mapping of geo -> requests/s")
        else:
            demand = {}
            for geo, value in raw.items():
                if geo not in geos:
                    problems.append(f"demand.{geo}: unknown geo {geo!r}")
                elif isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                    problems.append(f"demand.{geo}: {value!r} is not a non-negative number")
                else:
                    demand[str(geo)] = float(value)
    evacuations = _records(data, "evacuations", Evacuation.from_dict, problems)
    restores = _records(data, "restores", Restore.from_dict, problems)
    pins = _records(data, "pins", Pin.from_dict, problems)
    for i, e in enumerate(evacuations):
        if e.region not in regions:
            problems.append(f"evacuations[{i}].region: unknown region {e.region!r}")
    for i, r in enumerate(restores):
        if r.region not in regions:
            problems.append(f"restores[{i}].region: unknown region {r.region!r}")
    for i, p in enumerate(pins):
        try:
            svc = config.service(p.service)
        except (KeyError, ValueError):
            problems.append(f"pins[{i}].service: unknown service {p.service!r}")
            continue
        if p.geo not in geos:
            problems.append(f"pins[{i}].geo: unknown geo {p.geo!r}")
        for t in p.weights:
            if t not in svc.answers:
                problems.append(f"pins[{i}].weights.{t}: {svc.name} has no answers for {t!r}")
    if problems:
        raise ConfigError(source, problems)
    pins = [Pin(service=config.service(p.service).name, geo=p.geo, weights=p.weights, reason=p.reason)
            for p in pins]
    return (Observed(health=health, demand=demand),
            Overrides(evacuations=tuple(evacuations), restores=tuple(restores), pins=tuple(pins)))


def _records(data: Mapping[str, Any], key: str, parse: Any, problems: list[str]) -> list[Any]:
    raw = data.get(key) or []
    if not isinstance(raw, list):
        problems.append(f"{key}: expected a list")
        return []
    out = []
    for i, item in enumerate(raw):
        if not isinstance(item, Mapping):
            problems.append(f"{key}[{i}]: expected a mapping")
            continue
        try:
            out.append(parse(item))
        except (ValueError, KeyError) as exc:
            problems.append(f"{key}[{i}].{str(exc).strip(chr(39))}")
    return out


def load_state(path: str | Path, config: Config) -> tuple[Observed, Overrides]:
    return parse_state(load_yaml(path), config, str(path))
