"""``agent.yaml``: who the agent speaks for, what it probes, where it reports.

Validated like the controller's file (``steering.config``): every problem is
one line ``path: message`` naming the field in the file's own terms
(``probes[1].timeout_seconds``), all problems at once, and the CLI exits 2.

An agent is its site's own (``role: local``) or an observer that probes the
site from elsewhere (``role: observer``, with the client ``geos`` it stands
for; docs/health.md). With ``steering_config`` (the deployment's file) the
agent checks at start that the config knows its site, and, for an observer,
lists it under ``observers`` with this site and these geos.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from steering import limits
from steering.addr import parse_hostport
from steering.config import ConfigError, load_config, load_yaml, parse_file_model

PositiveFloat = Annotated[float, Field(gt=0)]
NonNegativeFloat = Annotated[float, Field(ge=0)]
Identifier = Annotated[str, Field(min_length=1, max_length=63, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]

PROBE_KINDS = ("http", "tcp", "grpc")


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _check_http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{value!r} is not an http:// or https:// URL")
    try:
        _ = parts.port  # read for its check: raises ValueError for a port that is not a number in range
    except ValueError as exc:
        raise ValueError(f"{value!r}: {exc}") from None
    return value


def _check_hostport(value: str) -> str:
    parse_hostport(value)  # raises ValueError naming the problem
    return value


class _ProbeBase(_Model):
    name: Identifier
    timeout_seconds: PositiveFloat = 2.0
    critical: bool = Field(True, description="a failing non-critical probe is reported but does not count")


class HttpProbe(_ProbeBase):
    kind: Literal["http"]
    url: str
    expect_status: tuple[Annotated[int, Field(ge=100, le=599)], ...] = Field((200,), min_length=1)
    body_contains: str | None = None

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return _check_http_url(value)

    @field_validator("expect_status", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, int) else value


class TcpProbe(_ProbeBase):
    kind: Literal["tcp"]
    address: str

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        return _check_hostport(value)


class GrpcProbe(_ProbeBase):
    kind: Literal["grpc"]
    address: str
    service: str = Field("", description="grpc.health.v1 service name; empty = the whole server")

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        return _check_hostport(value)


Probe = Annotated[HttpProbe | TcpProbe | GrpcProbe, Field(discriminator="kind")]


class Reading(_Model):
    """A number: fixed (``value``) or read from an HTTP endpoint each probe round.

    From JSON: ``url`` + ``json_path`` (dotted, list indexes allowed: ``a.b.0.c``).
    From Prometheus text: ``url`` + ``metric`` (+ ``labels`` to pick series; the
    matching series are summed).
    """

    value: NonNegativeFloat | None = None
    url: str | None = None
    json_path: str | None = Field(None, min_length=1)
    metric: str | None = Field(None, pattern=r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
    labels: Mapping[str, str] = Field(default_factory=dict)
    scale: PositiveFloat = Field(1.0, description="multiply what is read, e.g. to turn a per-worker number into a site's")
    timeout_seconds: PositiveFloat = 2.0

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        # ``capacity: 10000`` is the common case; spell it without ``value:``.
        if isinstance(data, (int, float)) and not isinstance(data, bool):
            return {"value": data}
        return data

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return None if value is None else _check_http_url(value)

    @model_validator(mode="after")
    def _one_source(self) -> Reading:
        if (self.value is None) == (self.url is None):
            raise ValueError("give either value or url")
        if self.url is not None and (self.json_path is None) == (self.metric is None):
            raise ValueError("with url, give exactly one of json_path or metric")
        if self.url is None and (self.json_path or self.metric or self.labels):
            raise ValueError("json_path, metric and labels need a url")
        if self.labels and self.metric is None:
            raise ValueError("labels only apply to a Prometheus metric")
        return self

    @property
    def is_static(self) -> bool:
        return self.value is not None


class Backoff(_Model):
    initial_seconds: PositiveFloat = 0.5
    max_seconds: PositiveFloat = 30.0
    multiplier: float = Field(2.0, ge=1.0, le=10.0)

    @model_validator(mode="after")
    def _ordered(self) -> Backoff:
        if self.max_seconds < self.initial_seconds:
            raise ValueError("max_seconds must be at least initial_seconds")
        return self


class AgentTls(_Model):
    ca: str | None = Field(None, description="PEM file of the CA that signed the controllers' certificates")
    cert: str | None = Field(None, description="client certificate (mTLS)")
    key: str | None = None
    server_name: str | None = Field(None, description="override the name checked in the server certificate")

    @model_validator(mode="after")
    def _pair(self) -> AgentTls:
        if (self.cert is None) != (self.key is None):
            raise ValueError("cert and key go together")
        return self


class AgentConfig(_Model):
    site: Identifier
    region: Identifier
    kind: Literal["region", "cache"] = "region"
    role: Literal["local", "observer"] = Field("local", description="observer: probes the site from elsewhere")
    geos: tuple[Identifier, ...] = Field((), max_length=64, description="observer: the client geos it stands for")
    agent_id: str | None = Field(None, min_length=1, max_length=255)
    steering_config: str | None = Field(None, description="the deployment's steering.yaml, checked against at start")
    controllers: tuple[Annotated[str, AfterValidator(_check_hostport)], ...]
    interval_seconds: PositiveFloat = 1.0
    rise: int = Field(2, ge=1)
    fall: int = Field(3, ge=1)
    initial: Literal["healthy", "unhealthy"] = Field(
        "unhealthy", description="status before the first rise/fall decision"
    )
    probes: tuple[Probe, ...] = Field(max_length=limits.MAX_CHECKS)  # one report carries every probe's check
    capacity: Reading  # an observer does not know the site's: it may leave it out (reported as 0, ignored)
    load: Reading = Reading(value=0.0)
    geo_load: Mapping[Identifier, Reading] = Field(default_factory=dict)
    backoff: Backoff = Backoff()
    connect_timeout_seconds: PositiveFloat = 5.0
    ack_timeout_seconds: PositiveFloat | None = Field(
        None, description="a stream with no ack for this long is dead (default: max(5 s, 3 intervals))"
    )
    failback_seconds: float = Field(
        10.0, ge=0, le=3600,
        description="while reporting to any controller but the first, try the ones before it this often and move "
                    "back to the first that accepts a connection (0: never)")
    tls: AgentTls | None = None
    token_file: str | None = Field(None, description="bearer token sent as 'authorization' metadata")
    base_dir: str = "."

    @model_validator(mode="before")
    @classmethod
    def _observer_capacity(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("role") == "observer" and "capacity" not in data:
            return {**data, "capacity": 0}
        return data

    @field_validator("controllers", "probes", mode="before")
    @classmethod
    def _not_empty(cls, value: Any) -> Any:
        # Checked before the items, so a list whose items all fail is not
        # also reported as "empty after validation".
        if isinstance(value, (list, tuple)) and not value:
            raise ValueError("give at least one")
        return value

    def resolve_path(self, path: str) -> Path:
        p = Path(path)
        return p if p.is_absolute() else Path(self.base_dir) / p

    def identity(self) -> str:
        return self.agent_id or default_agent_id()

    def effective_ack_timeout(self, interval: float) -> float:
        return self.ack_timeout_seconds or max(5.0, 3 * interval)


def default_agent_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def _cross_check(cfg: AgentConfig) -> list[str]:
    problems = []
    if cfg.role == "local" and cfg.geos:
        problems.append("geos: only an observer (role: observer) stands for client geos")
    if cfg.role == "observer" and cfg.agent_id is None:
        problems.append("agent_id: required for role observer: the id the controller's observers list authorises")
    for dup in sorted({g for g in cfg.geos if cfg.geos.count(g) > 1}):
        problems.append(f"geos: {dup!r} listed twice")
    if cfg.kind == "region" and cfg.site != cfg.region:
        problems.append(f"site: a site of kind region is the region itself: expected {cfg.region!r}, got {cfg.site!r}")
    seen: set[str] = set()
    for i, p in enumerate(cfg.probes):
        if p.name in seen:
            problems.append(f"probes[{i}].name: {p.name!r} is used by an earlier probe")
        seen.add(p.name)
    if not any(p.critical for p in cfg.probes):
        problems.append("probes: at least one probe must be critical, or the site could never be unhealthy")
    if cfg.rise * cfg.interval_seconds > 600 or cfg.fall * cfg.interval_seconds > 600:
        problems.append("rise/fall: more than 10 minutes to change status; lower the threshold or the interval")
    for name in ("ca", "cert", "key"):
        path = getattr(cfg.tls, name, None) if cfg.tls else None
        if path is not None and not cfg.resolve_path(path).is_file():
            problems.append(f"tls.{name}: {cfg.resolve_path(path)} does not exist")
    if cfg.token_file is not None and not cfg.resolve_path(cfg.token_file).is_file():
        problems.append(f"token_file: {cfg.resolve_path(cfg.token_file)} does not exist")
    if cfg.steering_config is not None:
        problems += _against_deployment(cfg)
    return problems


def _against_deployment(cfg: AgentConfig) -> list[str]:
    """What the deployment's config says of this agent: the controller would refuse it otherwise."""
    assert cfg.steering_config is not None
    path = cfg.resolve_path(cfg.steering_config)
    try:
        deployment = load_config(path)
    except ConfigError as exc:
        return [f"steering_config: {path}: {exc.problems[0]}"
                + (f" (and {len(exc.problems) - 1} more)" if len(exc.problems) > 1 else "")]
    regions = {r.id for r in deployment.regions}
    sites = {s.id: s.region for s in deployment.sites}
    problems = []
    if cfg.kind == "region" and cfg.site not in regions:
        problems.append(f"site: unknown region {cfg.site!r} in {path}")
    elif cfg.kind == "cache" and cfg.site not in sites:
        problems.append(f"site: unknown cache site {cfg.site!r} in {path}")
    elif cfg.kind == "cache" and sites[cfg.site] != cfg.region:
        problems.append(f"region: {cfg.region!r}, but {path} puts site {cfg.site!r} in {sites[cfg.site]!r}")
    observers = {o.id: o for o in deployment.observers}
    if cfg.role == "observer":
        known = observers.get(cfg.agent_id or "")
        if known is None:
            problems.append(f"agent_id: {cfg.agent_id!r} is not among the observers of {path}")
        else:
            if cfg.site not in known.targets:
                problems.append(f"site: observer {known.id!r} may not observe {cfg.site!r} "
                                f"(its targets in {path}: {', '.join(known.targets)})")
            for i, g in enumerate(cfg.geos):
                if g not in known.geos:
                    problems.append(f"geos[{i}]: {g!r} is not among the geos {path} gives observer {known.id!r} "
                                    f"({', '.join(known.geos) or 'none'})")
    elif cfg.agent_id in observers:
        problems.append(f"agent_id: {cfg.agent_id!r} is an observer in {path}; set role: observer")
    return problems


def _strip_tags(lines: list[str]) -> list[str]:
    # A discriminated union puts the tag in the error location
    # (``probes[0].http.url``); the file has no such level.
    out = []
    for line in lines:
        for kind in PROBE_KINDS:
            line = line.replace(f"].{kind}.", "].", 1) if line.startswith("probes[") else line
        out.append(line)
    return out


def parse_agent_config(data: Any, source: str = "<agent config>", base_dir: str | Path = ".") -> AgentConfig:
    return parse_file_model(AgentConfig, data, source, base_dir, _cross_check, _strip_tags)


def load_agent_config(path: str | Path) -> AgentConfig:
    p = Path(path)
    return parse_agent_config(load_yaml(p), str(p), p.resolve().parent)
