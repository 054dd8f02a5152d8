import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SiteKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SITE_KIND_UNSPECIFIED: _ClassVar[SiteKind]
    SITE_KIND_REGION: _ClassVar[SiteKind]
    SITE_KIND_CACHE: _ClassVar[SiteKind]

class HealthStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    HEALTH_STATUS_UNSPECIFIED: _ClassVar[HealthStatus]
    HEALTH_STATUS_HEALTHY: _ClassVar[HealthStatus]
    HEALTH_STATUS_UNHEALTHY: _ClassVar[HealthStatus]
    HEALTH_STATUS_SILENT: _ClassVar[HealthStatus]

class AgentRole(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    AGENT_ROLE_UNSPECIFIED: _ClassVar[AgentRole]
    AGENT_ROLE_LOCAL: _ClassVar[AgentRole]
    AGENT_ROLE_OBSERVER: _ClassVar[AgentRole]

class EvacuationMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EVACUATION_MODE_UNSPECIFIED: _ClassVar[EvacuationMode]
    EVACUATION_MODE_NOW: _ClassVar[EvacuationMode]
    EVACUATION_MODE_RAMP: _ClassVar[EvacuationMode]
SITE_KIND_UNSPECIFIED: SiteKind
SITE_KIND_REGION: SiteKind
SITE_KIND_CACHE: SiteKind
HEALTH_STATUS_UNSPECIFIED: HealthStatus
HEALTH_STATUS_HEALTHY: HealthStatus
HEALTH_STATUS_UNHEALTHY: HealthStatus
HEALTH_STATUS_SILENT: HealthStatus
AGENT_ROLE_UNSPECIFIED: AgentRole
AGENT_ROLE_LOCAL: AgentRole
AGENT_ROLE_OBSERVER: AgentRole
EVACUATION_MODE_UNSPECIFIED: EvacuationMode
EVACUATION_MODE_NOW: EvacuationMode
EVACUATION_MODE_RAMP: EvacuationMode

class CheckResult(_message.Message):
    __slots__ = ("name", "kind", "ok", "detail", "latency_seconds")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    OK_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    LATENCY_SECONDS_FIELD_NUMBER: _ClassVar[int]
    name: str
    kind: str
    ok: bool
    detail: str
    latency_seconds: float
    def __init__(self, name: _Optional[str] = ..., kind: _Optional[str] = ..., ok: _Optional[bool] = ..., detail: _Optional[str] = ..., latency_seconds: _Optional[float] = ...) -> None: ...

class HealthReport(_message.Message):
    __slots__ = ("site", "region", "kind", "status", "checks", "capacity", "load", "geo_load", "sequence", "agent_time", "agent_id", "role", "geos")
    class GeoLoadEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    SITE_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    CHECKS_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    LOAD_FIELD_NUMBER: _ClassVar[int]
    GEO_LOAD_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    AGENT_TIME_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    GEOS_FIELD_NUMBER: _ClassVar[int]
    site: str
    region: str
    kind: SiteKind
    status: HealthStatus
    checks: _containers.RepeatedCompositeFieldContainer[CheckResult]
    capacity: float
    load: float
    geo_load: _containers.ScalarMap[str, float]
    sequence: int
    agent_time: _timestamp_pb2.Timestamp
    agent_id: str
    role: AgentRole
    geos: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, site: _Optional[str] = ..., region: _Optional[str] = ..., kind: _Optional[_Union[SiteKind, str]] = ..., status: _Optional[_Union[HealthStatus, str]] = ..., checks: _Optional[_Iterable[_Union[CheckResult, _Mapping]]] = ..., capacity: _Optional[float] = ..., load: _Optional[float] = ..., geo_load: _Optional[_Mapping[str, float]] = ..., sequence: _Optional[int] = ..., agent_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., agent_id: _Optional[str] = ..., role: _Optional[_Union[AgentRole, str]] = ..., geos: _Optional[_Iterable[str]] = ...) -> None: ...

class ReportAck(_message.Message):
    __slots__ = ("sequence", "controller_id", "leader", "report_interval_seconds")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    CONTROLLER_ID_FIELD_NUMBER: _ClassVar[int]
    LEADER_FIELD_NUMBER: _ClassVar[int]
    REPORT_INTERVAL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    controller_id: str
    leader: bool
    report_interval_seconds: float
    def __init__(self, sequence: _Optional[int] = ..., controller_id: _Optional[str] = ..., leader: _Optional[bool] = ..., report_interval_seconds: _Optional[float] = ...) -> None: ...

class TargetWeight(_message.Message):
    __slots__ = ("target", "weight", "reason")
    TARGET_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    target: str
    weight: int
    reason: str
    def __init__(self, target: _Optional[str] = ..., weight: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class GeoRouting(_message.Message):
    __slots__ = ("geo", "weights", "fail_open", "pinned")
    GEO_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    FAIL_OPEN_FIELD_NUMBER: _ClassVar[int]
    PINNED_FIELD_NUMBER: _ClassVar[int]
    geo: str
    weights: _containers.RepeatedCompositeFieldContainer[TargetWeight]
    fail_open: bool
    pinned: bool
    def __init__(self, geo: _Optional[str] = ..., weights: _Optional[_Iterable[_Union[TargetWeight, _Mapping]]] = ..., fail_open: _Optional[bool] = ..., pinned: _Optional[bool] = ...) -> None: ...

class ServiceRouting(_message.Message):
    __slots__ = ("service", "targets", "geos")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    TARGETS_FIELD_NUMBER: _ClassVar[int]
    GEOS_FIELD_NUMBER: _ClassVar[int]
    service: str
    targets: str
    geos: _containers.RepeatedCompositeFieldContainer[GeoRouting]
    def __init__(self, service: _Optional[str] = ..., targets: _Optional[str] = ..., geos: _Optional[_Iterable[_Union[GeoRouting, _Mapping]]] = ...) -> None: ...

class RegionState(_message.Message):
    __slots__ = ("region", "health", "serving", "capacity", "load", "planned_load", "utilization", "evacuation", "reason")
    REGION_FIELD_NUMBER: _ClassVar[int]
    HEALTH_FIELD_NUMBER: _ClassVar[int]
    SERVING_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    LOAD_FIELD_NUMBER: _ClassVar[int]
    PLANNED_LOAD_FIELD_NUMBER: _ClassVar[int]
    UTILIZATION_FIELD_NUMBER: _ClassVar[int]
    EVACUATION_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    region: str
    health: HealthStatus
    serving: bool
    capacity: float
    load: float
    planned_load: float
    utilization: float
    evacuation: str
    reason: str
    def __init__(self, region: _Optional[str] = ..., health: _Optional[_Union[HealthStatus, str]] = ..., serving: _Optional[bool] = ..., capacity: _Optional[float] = ..., load: _Optional[float] = ..., planned_load: _Optional[float] = ..., utilization: _Optional[float] = ..., evacuation: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class SiteState(_message.Message):
    __slots__ = ("site", "region", "health", "serving", "capacity", "load", "planned_load", "utilization")
    SITE_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    HEALTH_FIELD_NUMBER: _ClassVar[int]
    SERVING_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    LOAD_FIELD_NUMBER: _ClassVar[int]
    PLANNED_LOAD_FIELD_NUMBER: _ClassVar[int]
    UTILIZATION_FIELD_NUMBER: _ClassVar[int]
    site: str
    region: str
    health: HealthStatus
    serving: bool
    capacity: float
    load: float
    planned_load: float
    utilization: float
    def __init__(self, site: _Optional[str] = ..., region: _Optional[str] = ..., health: _Optional[_Union[HealthStatus, str]] = ..., serving: _Optional[bool] = ..., capacity: _Optional[float] = ..., load: _Optional[float] = ..., planned_load: _Optional[float] = ..., utilization: _Optional[float] = ...) -> None: ...

class RoutingTable(_message.Message):
    __slots__ = ("version", "parent_version", "generated_at", "fail_open", "converging", "services", "regions", "sites", "leader", "json")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PARENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    GENERATED_AT_FIELD_NUMBER: _ClassVar[int]
    FAIL_OPEN_FIELD_NUMBER: _ClassVar[int]
    CONVERGING_FIELD_NUMBER: _ClassVar[int]
    SERVICES_FIELD_NUMBER: _ClassVar[int]
    REGIONS_FIELD_NUMBER: _ClassVar[int]
    SITES_FIELD_NUMBER: _ClassVar[int]
    LEADER_FIELD_NUMBER: _ClassVar[int]
    JSON_FIELD_NUMBER: _ClassVar[int]
    version: int
    parent_version: int
    generated_at: _timestamp_pb2.Timestamp
    fail_open: bool
    converging: bool
    services: _containers.RepeatedCompositeFieldContainer[ServiceRouting]
    regions: _containers.RepeatedCompositeFieldContainer[RegionState]
    sites: _containers.RepeatedCompositeFieldContainer[SiteState]
    leader: str
    json: str
    def __init__(self, version: _Optional[int] = ..., parent_version: _Optional[int] = ..., generated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., fail_open: _Optional[bool] = ..., converging: _Optional[bool] = ..., services: _Optional[_Iterable[_Union[ServiceRouting, _Mapping]]] = ..., regions: _Optional[_Iterable[_Union[RegionState, _Mapping]]] = ..., sites: _Optional[_Iterable[_Union[SiteState, _Mapping]]] = ..., leader: _Optional[str] = ..., json: _Optional[str] = ...) -> None: ...

class ResolveRequest(_message.Message):
    __slots__ = ("service", "client_address", "geo", "max_targets")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    GEO_FIELD_NUMBER: _ClassVar[int]
    MAX_TARGETS_FIELD_NUMBER: _ClassVar[int]
    service: str
    client_address: str
    geo: str
    max_targets: int
    def __init__(self, service: _Optional[str] = ..., client_address: _Optional[str] = ..., geo: _Optional[str] = ..., max_targets: _Optional[int] = ...) -> None: ...

class RankedTarget(_message.Message):
    __slots__ = ("target", "kind", "region", "weight", "addresses", "reason")
    TARGET_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    ADDRESSES_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    target: str
    kind: str
    region: str
    weight: int
    addresses: _containers.RepeatedScalarFieldContainer[str]
    reason: str
    def __init__(self, target: _Optional[str] = ..., kind: _Optional[str] = ..., region: _Optional[str] = ..., weight: _Optional[int] = ..., addresses: _Optional[_Iterable[str]] = ..., reason: _Optional[str] = ...) -> None: ...

class ResolveResponse(_message.Message):
    __slots__ = ("service", "geo", "targets", "table_version", "fail_open", "ttl", "choice")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    GEO_FIELD_NUMBER: _ClassVar[int]
    TARGETS_FIELD_NUMBER: _ClassVar[int]
    TABLE_VERSION_FIELD_NUMBER: _ClassVar[int]
    FAIL_OPEN_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    CHOICE_FIELD_NUMBER: _ClassVar[int]
    service: str
    geo: str
    targets: _containers.RepeatedCompositeFieldContainer[RankedTarget]
    table_version: int
    fail_open: bool
    ttl: int
    choice: RankedTarget
    def __init__(self, service: _Optional[str] = ..., geo: _Optional[str] = ..., targets: _Optional[_Iterable[_Union[RankedTarget, _Mapping]]] = ..., table_version: _Optional[int] = ..., fail_open: _Optional[bool] = ..., ttl: _Optional[int] = ..., choice: _Optional[_Union[RankedTarget, _Mapping]] = ...) -> None: ...

class WatchRequest(_message.Message):
    __slots__ = ("service", "since_version")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    SINCE_VERSION_FIELD_NUMBER: _ClassVar[int]
    service: str
    since_version: int
    def __init__(self, service: _Optional[str] = ..., since_version: _Optional[int] = ...) -> None: ...

class WatchResponse(_message.Message):
    __slots__ = ("table", "topology_json")
    TABLE_FIELD_NUMBER: _ClassVar[int]
    TOPOLOGY_JSON_FIELD_NUMBER: _ClassVar[int]
    table: RoutingTable
    topology_json: str
    def __init__(self, table: _Optional[_Union[RoutingTable, _Mapping]] = ..., topology_json: _Optional[str] = ...) -> None: ...

class ExplainRequest(_message.Message):
    __slots__ = ("service", "client_address", "ecs_subnet")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    ECS_SUBNET_FIELD_NUMBER: _ClassVar[int]
    service: str
    client_address: str
    ecs_subnet: str
    def __init__(self, service: _Optional[str] = ..., client_address: _Optional[str] = ..., ecs_subnet: _Optional[str] = ...) -> None: ...

class ExplainGeoIp(_message.Message):
    __slots__ = ("country", "continent", "subdivisions", "matched", "error")
    COUNTRY_FIELD_NUMBER: _ClassVar[int]
    CONTINENT_FIELD_NUMBER: _ClassVar[int]
    SUBDIVISIONS_FIELD_NUMBER: _ClassVar[int]
    MATCHED_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    country: str
    continent: str
    subdivisions: _containers.RepeatedScalarFieldContainer[str]
    matched: str
    error: str
    def __init__(self, country: _Optional[str] = ..., continent: _Optional[str] = ..., subdivisions: _Optional[_Iterable[str]] = ..., matched: _Optional[str] = ..., error: _Optional[str] = ...) -> None: ...

class ExplainWeight(_message.Message):
    __slots__ = ("target", "kind", "region", "weight", "reason", "in_split")
    TARGET_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    IN_SPLIT_FIELD_NUMBER: _ClassVar[int]
    target: str
    kind: str
    region: str
    weight: int
    reason: str
    in_split: bool
    def __init__(self, target: _Optional[str] = ..., kind: _Optional[str] = ..., region: _Optional[str] = ..., weight: _Optional[int] = ..., reason: _Optional[str] = ..., in_split: _Optional[bool] = ...) -> None: ...

class ExplainShare(_message.Message):
    __slots__ = ("target", "weight")
    TARGET_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    target: str
    weight: int
    def __init__(self, target: _Optional[str] = ..., weight: _Optional[int] = ...) -> None: ...

class ExplainRecord(_message.Message):
    __slots__ = ("type", "value")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    type: str
    value: str
    def __init__(self, type: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...

class ExplainResponse(_message.Message):
    __slots__ = ("service", "client_address", "ecs_subnet", "geo", "geo_source", "geo_prefix", "geoip", "why", "weights", "fail_open", "pinned", "fallback", "split", "client_subnet", "key_source", "slot", "target", "records", "ttl", "ecs_scope", "table_version", "table_generated_at")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    ECS_SUBNET_FIELD_NUMBER: _ClassVar[int]
    GEO_FIELD_NUMBER: _ClassVar[int]
    GEO_SOURCE_FIELD_NUMBER: _ClassVar[int]
    GEO_PREFIX_FIELD_NUMBER: _ClassVar[int]
    GEOIP_FIELD_NUMBER: _ClassVar[int]
    WHY_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    FAIL_OPEN_FIELD_NUMBER: _ClassVar[int]
    PINNED_FIELD_NUMBER: _ClassVar[int]
    FALLBACK_FIELD_NUMBER: _ClassVar[int]
    SPLIT_FIELD_NUMBER: _ClassVar[int]
    CLIENT_SUBNET_FIELD_NUMBER: _ClassVar[int]
    KEY_SOURCE_FIELD_NUMBER: _ClassVar[int]
    SLOT_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    ECS_SCOPE_FIELD_NUMBER: _ClassVar[int]
    TABLE_VERSION_FIELD_NUMBER: _ClassVar[int]
    TABLE_GENERATED_AT_FIELD_NUMBER: _ClassVar[int]
    service: str
    client_address: str
    ecs_subnet: str
    geo: str
    geo_source: str
    geo_prefix: str
    geoip: ExplainGeoIp
    why: str
    weights: _containers.RepeatedCompositeFieldContainer[ExplainWeight]
    fail_open: bool
    pinned: bool
    fallback: str
    split: _containers.RepeatedCompositeFieldContainer[ExplainShare]
    client_subnet: str
    key_source: str
    slot: int
    target: str
    records: _containers.RepeatedCompositeFieldContainer[ExplainRecord]
    ttl: int
    ecs_scope: int
    table_version: int
    table_generated_at: float
    def __init__(self, service: _Optional[str] = ..., client_address: _Optional[str] = ..., ecs_subnet: _Optional[str] = ..., geo: _Optional[str] = ..., geo_source: _Optional[str] = ..., geo_prefix: _Optional[str] = ..., geoip: _Optional[_Union[ExplainGeoIp, _Mapping]] = ..., why: _Optional[str] = ..., weights: _Optional[_Iterable[_Union[ExplainWeight, _Mapping]]] = ..., fail_open: _Optional[bool] = ..., pinned: _Optional[bool] = ..., fallback: _Optional[str] = ..., split: _Optional[_Iterable[_Union[ExplainShare, _Mapping]]] = ..., client_subnet: _Optional[str] = ..., key_source: _Optional[str] = ..., slot: _Optional[int] = ..., target: _Optional[str] = ..., records: _Optional[_Iterable[_Union[ExplainRecord, _Mapping]]] = ..., ttl: _Optional[int] = ..., ecs_scope: _Optional[int] = ..., table_version: _Optional[int] = ..., table_generated_at: _Optional[float] = ...) -> None: ...

class Ramp(_message.Message):
    __slots__ = ("step", "interval_seconds")
    STEP_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    step: float
    interval_seconds: float
    def __init__(self, step: _Optional[float] = ..., interval_seconds: _Optional[float] = ...) -> None: ...

class Evacuation(_message.Message):
    __slots__ = ("region", "mode", "ramp", "reason", "actor", "started_at", "forced", "request_id", "restoring")
    REGION_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    RAMP_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    FORCED_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    RESTORING_FIELD_NUMBER: _ClassVar[int]
    region: str
    mode: EvacuationMode
    ramp: Ramp
    reason: str
    actor: str
    started_at: _timestamp_pb2.Timestamp
    forced: bool
    request_id: str
    restoring: bool
    def __init__(self, region: _Optional[str] = ..., mode: _Optional[_Union[EvacuationMode, str]] = ..., ramp: _Optional[_Union[Ramp, _Mapping]] = ..., reason: _Optional[str] = ..., actor: _Optional[str] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., forced: _Optional[bool] = ..., request_id: _Optional[str] = ..., restoring: _Optional[bool] = ...) -> None: ...

class GeoChange(_message.Message):
    __slots__ = ("service", "geo", "before", "after")
    class BeforeEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    class AfterEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    GEO_FIELD_NUMBER: _ClassVar[int]
    BEFORE_FIELD_NUMBER: _ClassVar[int]
    AFTER_FIELD_NUMBER: _ClassVar[int]
    service: str
    geo: str
    before: _containers.ScalarMap[str, int]
    after: _containers.ScalarMap[str, int]
    def __init__(self, service: _Optional[str] = ..., geo: _Optional[str] = ..., before: _Optional[_Mapping[str, int]] = ..., after: _Optional[_Mapping[str, int]] = ...) -> None: ...

class RegionProjection(_message.Message):
    __slots__ = ("region", "capacity", "planned_load_before", "planned_load_after", "utilization_before", "utilization_after", "hard_limit")
    REGION_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    PLANNED_LOAD_BEFORE_FIELD_NUMBER: _ClassVar[int]
    PLANNED_LOAD_AFTER_FIELD_NUMBER: _ClassVar[int]
    UTILIZATION_BEFORE_FIELD_NUMBER: _ClassVar[int]
    UTILIZATION_AFTER_FIELD_NUMBER: _ClassVar[int]
    HARD_LIMIT_FIELD_NUMBER: _ClassVar[int]
    region: str
    capacity: float
    planned_load_before: float
    planned_load_after: float
    utilization_before: float
    utilization_after: float
    hard_limit: float
    def __init__(self, region: _Optional[str] = ..., capacity: _Optional[float] = ..., planned_load_before: _Optional[float] = ..., planned_load_after: _Optional[float] = ..., utilization_before: _Optional[float] = ..., utilization_after: _Optional[float] = ..., hard_limit: _Optional[float] = ...) -> None: ...

class Preview(_message.Message):
    __slots__ = ("changes", "regions", "fail_open_after")
    CHANGES_FIELD_NUMBER: _ClassVar[int]
    REGIONS_FIELD_NUMBER: _ClassVar[int]
    FAIL_OPEN_AFTER_FIELD_NUMBER: _ClassVar[int]
    changes: _containers.RepeatedCompositeFieldContainer[GeoChange]
    regions: _containers.RepeatedCompositeFieldContainer[RegionProjection]
    fail_open_after: bool
    def __init__(self, changes: _Optional[_Iterable[_Union[GeoChange, _Mapping]]] = ..., regions: _Optional[_Iterable[_Union[RegionProjection, _Mapping]]] = ..., fail_open_after: _Optional[bool] = ...) -> None: ...

class EvacuateRequest(_message.Message):
    __slots__ = ("region", "mode", "ramp", "reason", "dry_run", "force", "request_id")
    REGION_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    RAMP_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    region: str
    mode: EvacuationMode
    ramp: Ramp
    reason: str
    dry_run: bool
    force: bool
    request_id: str
    def __init__(self, region: _Optional[str] = ..., mode: _Optional[_Union[EvacuationMode, str]] = ..., ramp: _Optional[_Union[Ramp, _Mapping]] = ..., reason: _Optional[str] = ..., dry_run: _Optional[bool] = ..., force: _Optional[bool] = ..., request_id: _Optional[str] = ...) -> None: ...

class EvacuateResponse(_message.Message):
    __slots__ = ("applied", "dry_run", "preview", "request_id", "audit_id", "warnings", "duplicate")
    APPLIED_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    PREVIEW_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    AUDIT_ID_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    applied: bool
    dry_run: bool
    preview: Preview
    request_id: str
    audit_id: str
    warnings: _containers.RepeatedScalarFieldContainer[str]
    duplicate: bool
    def __init__(self, applied: _Optional[bool] = ..., dry_run: _Optional[bool] = ..., preview: _Optional[_Union[Preview, _Mapping]] = ..., request_id: _Optional[str] = ..., audit_id: _Optional[str] = ..., warnings: _Optional[_Iterable[str]] = ..., duplicate: _Optional[bool] = ...) -> None: ...

class RestoreRequest(_message.Message):
    __slots__ = ("region", "mode", "ramp", "reason", "dry_run", "request_id")
    REGION_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    RAMP_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    region: str
    mode: EvacuationMode
    ramp: Ramp
    reason: str
    dry_run: bool
    request_id: str
    def __init__(self, region: _Optional[str] = ..., mode: _Optional[_Union[EvacuationMode, str]] = ..., ramp: _Optional[_Union[Ramp, _Mapping]] = ..., reason: _Optional[str] = ..., dry_run: _Optional[bool] = ..., request_id: _Optional[str] = ...) -> None: ...

class RestoreResponse(_message.Message):
    __slots__ = ("applied", "dry_run", "preview", "request_id", "audit_id", "duplicate")
    APPLIED_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    PREVIEW_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    AUDIT_ID_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    applied: bool
    dry_run: bool
    preview: Preview
    request_id: str
    audit_id: str
    duplicate: bool
    def __init__(self, applied: _Optional[bool] = ..., dry_run: _Optional[bool] = ..., preview: _Optional[_Union[Preview, _Mapping]] = ..., request_id: _Optional[str] = ..., audit_id: _Optional[str] = ..., duplicate: _Optional[bool] = ...) -> None: ...

class PinWeightsRequest(_message.Message):
    __slots__ = ("service", "geo", "weights", "reason", "dry_run", "request_id", "force")
    class WeightsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    GEO_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    service: str
    geo: str
    weights: _containers.ScalarMap[str, int]
    reason: str
    dry_run: bool
    request_id: str
    force: bool
    def __init__(self, service: _Optional[str] = ..., geo: _Optional[str] = ..., weights: _Optional[_Mapping[str, int]] = ..., reason: _Optional[str] = ..., dry_run: _Optional[bool] = ..., request_id: _Optional[str] = ..., force: _Optional[bool] = ...) -> None: ...

class PinWeightsResponse(_message.Message):
    __slots__ = ("applied", "dry_run", "preview", "request_id", "audit_id", "duplicate", "warnings")
    APPLIED_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    PREVIEW_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    AUDIT_ID_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    applied: bool
    dry_run: bool
    preview: Preview
    request_id: str
    audit_id: str
    duplicate: bool
    warnings: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, applied: _Optional[bool] = ..., dry_run: _Optional[bool] = ..., preview: _Optional[_Union[Preview, _Mapping]] = ..., request_id: _Optional[str] = ..., audit_id: _Optional[str] = ..., duplicate: _Optional[bool] = ..., warnings: _Optional[_Iterable[str]] = ...) -> None: ...

class UnpinWeightsRequest(_message.Message):
    __slots__ = ("service", "geo", "reason", "request_id", "dry_run")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    GEO_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    service: str
    geo: str
    reason: str
    request_id: str
    dry_run: bool
    def __init__(self, service: _Optional[str] = ..., geo: _Optional[str] = ..., reason: _Optional[str] = ..., request_id: _Optional[str] = ..., dry_run: _Optional[bool] = ...) -> None: ...

class UnpinWeightsResponse(_message.Message):
    __slots__ = ("applied", "audit_id", "duplicate", "dry_run", "preview", "request_id")
    APPLIED_FIELD_NUMBER: _ClassVar[int]
    AUDIT_ID_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    PREVIEW_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    applied: bool
    audit_id: str
    duplicate: bool
    dry_run: bool
    preview: Preview
    request_id: str
    def __init__(self, applied: _Optional[bool] = ..., audit_id: _Optional[str] = ..., duplicate: _Optional[bool] = ..., dry_run: _Optional[bool] = ..., preview: _Optional[_Union[Preview, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class SiteHealth(_message.Message):
    __slots__ = ("site", "region", "kind", "status", "capacity", "load", "last_report", "checks", "last_change", "heard_by", "last_report_local", "detail", "reporters", "verdict", "unreachable_geos")
    SITE_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    LOAD_FIELD_NUMBER: _ClassVar[int]
    LAST_REPORT_FIELD_NUMBER: _ClassVar[int]
    CHECKS_FIELD_NUMBER: _ClassVar[int]
    LAST_CHANGE_FIELD_NUMBER: _ClassVar[int]
    HEARD_BY_FIELD_NUMBER: _ClassVar[int]
    LAST_REPORT_LOCAL_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    REPORTERS_FIELD_NUMBER: _ClassVar[int]
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    UNREACHABLE_GEOS_FIELD_NUMBER: _ClassVar[int]
    site: str
    region: str
    kind: SiteKind
    status: HealthStatus
    capacity: float
    load: float
    last_report: _timestamp_pb2.Timestamp
    checks: _containers.RepeatedCompositeFieldContainer[CheckResult]
    last_change: _timestamp_pb2.Timestamp
    heard_by: str
    last_report_local: bool
    detail: str
    reporters: _containers.RepeatedCompositeFieldContainer[ReporterHealth]
    verdict: str
    unreachable_geos: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, site: _Optional[str] = ..., region: _Optional[str] = ..., kind: _Optional[_Union[SiteKind, str]] = ..., status: _Optional[_Union[HealthStatus, str]] = ..., capacity: _Optional[float] = ..., load: _Optional[float] = ..., last_report: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., checks: _Optional[_Iterable[_Union[CheckResult, _Mapping]]] = ..., last_change: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., heard_by: _Optional[str] = ..., last_report_local: _Optional[bool] = ..., detail: _Optional[str] = ..., reporters: _Optional[_Iterable[_Union[ReporterHealth, _Mapping]]] = ..., verdict: _Optional[str] = ..., unreachable_geos: _Optional[_Iterable[str]] = ...) -> None: ...

class ReporterHealth(_message.Message):
    __slots__ = ("reporter", "role", "status", "geos", "last_report", "last_report_local", "heard_by", "counted", "detail", "streams")
    REPORTER_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    GEOS_FIELD_NUMBER: _ClassVar[int]
    LAST_REPORT_FIELD_NUMBER: _ClassVar[int]
    LAST_REPORT_LOCAL_FIELD_NUMBER: _ClassVar[int]
    HEARD_BY_FIELD_NUMBER: _ClassVar[int]
    COUNTED_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    STREAMS_FIELD_NUMBER: _ClassVar[int]
    reporter: str
    role: str
    status: HealthStatus
    geos: _containers.RepeatedScalarFieldContainer[str]
    last_report: _timestamp_pb2.Timestamp
    last_report_local: bool
    heard_by: str
    counted: bool
    detail: str
    streams: int
    def __init__(self, reporter: _Optional[str] = ..., role: _Optional[str] = ..., status: _Optional[_Union[HealthStatus, str]] = ..., geos: _Optional[_Iterable[str]] = ..., last_report: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_report_local: _Optional[bool] = ..., heard_by: _Optional[str] = ..., counted: _Optional[bool] = ..., detail: _Optional[str] = ..., streams: _Optional[int] = ...) -> None: ...

class Route53Status(_message.Message):
    __slots__ = ("enabled", "last_sync", "last_duration_seconds", "last_changes", "last_error")
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    LAST_SYNC_FIELD_NUMBER: _ClassVar[int]
    LAST_DURATION_SECONDS_FIELD_NUMBER: _ClassVar[int]
    LAST_CHANGES_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    enabled: bool
    last_sync: _timestamp_pb2.Timestamp
    last_duration_seconds: float
    last_changes: int
    last_error: str
    def __init__(self, enabled: _Optional[bool] = ..., last_sync: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_duration_seconds: _Optional[float] = ..., last_changes: _Optional[int] = ..., last_error: _Optional[str] = ...) -> None: ...

class StatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StatusResponse(_message.Message):
    __slots__ = ("leader", "replica", "table", "table_age_seconds", "sites", "evacuations", "route53", "connected_agents", "stale", "etcd_unreachable_since", "recent_events", "geoip")
    LEADER_FIELD_NUMBER: _ClassVar[int]
    REPLICA_FIELD_NUMBER: _ClassVar[int]
    TABLE_FIELD_NUMBER: _ClassVar[int]
    TABLE_AGE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    SITES_FIELD_NUMBER: _ClassVar[int]
    EVACUATIONS_FIELD_NUMBER: _ClassVar[int]
    ROUTE53_FIELD_NUMBER: _ClassVar[int]
    CONNECTED_AGENTS_FIELD_NUMBER: _ClassVar[int]
    STALE_FIELD_NUMBER: _ClassVar[int]
    ETCD_UNREACHABLE_SINCE_FIELD_NUMBER: _ClassVar[int]
    RECENT_EVENTS_FIELD_NUMBER: _ClassVar[int]
    GEOIP_FIELD_NUMBER: _ClassVar[int]
    leader: str
    replica: str
    table: RoutingTable
    table_age_seconds: float
    sites: _containers.RepeatedCompositeFieldContainer[SiteHealth]
    evacuations: _containers.RepeatedCompositeFieldContainer[Evacuation]
    route53: Route53Status
    connected_agents: int
    stale: bool
    etcd_unreachable_since: _timestamp_pb2.Timestamp
    recent_events: _containers.RepeatedCompositeFieldContainer[Event]
    geoip: GeoIpStatus
    def __init__(self, leader: _Optional[str] = ..., replica: _Optional[str] = ..., table: _Optional[_Union[RoutingTable, _Mapping]] = ..., table_age_seconds: _Optional[float] = ..., sites: _Optional[_Iterable[_Union[SiteHealth, _Mapping]]] = ..., evacuations: _Optional[_Iterable[_Union[Evacuation, _Mapping]]] = ..., route53: _Optional[_Union[Route53Status, _Mapping]] = ..., connected_agents: _Optional[int] = ..., stale: _Optional[bool] = ..., etcd_unreachable_since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., recent_events: _Optional[_Iterable[_Union[Event, _Mapping]]] = ..., geoip: _Optional[_Union[GeoIpStatus, _Mapping]] = ...) -> None: ...

class GeoIpStatus(_message.Message):
    __slots__ = ("database_type", "build_time", "networks", "prefixes", "reloads_ok", "reloads_failed", "last_error", "path")
    DATABASE_TYPE_FIELD_NUMBER: _ClassVar[int]
    BUILD_TIME_FIELD_NUMBER: _ClassVar[int]
    NETWORKS_FIELD_NUMBER: _ClassVar[int]
    PREFIXES_FIELD_NUMBER: _ClassVar[int]
    RELOADS_OK_FIELD_NUMBER: _ClassVar[int]
    RELOADS_FAILED_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    database_type: str
    build_time: _timestamp_pb2.Timestamp
    networks: int
    prefixes: int
    reloads_ok: int
    reloads_failed: int
    last_error: str
    path: str
    def __init__(self, database_type: _Optional[str] = ..., build_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., networks: _Optional[int] = ..., prefixes: _Optional[int] = ..., reloads_ok: _Optional[int] = ..., reloads_failed: _Optional[int] = ..., last_error: _Optional[str] = ..., path: _Optional[str] = ...) -> None: ...

class AuditRecord(_message.Message):
    __slots__ = ("id", "time", "actor", "action", "region", "service", "geo", "reason", "request_id", "forced", "before", "after", "details_json")
    ID_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    GEO_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    FORCED_FIELD_NUMBER: _ClassVar[int]
    BEFORE_FIELD_NUMBER: _ClassVar[int]
    AFTER_FIELD_NUMBER: _ClassVar[int]
    DETAILS_JSON_FIELD_NUMBER: _ClassVar[int]
    id: str
    time: _timestamp_pb2.Timestamp
    actor: str
    action: str
    region: str
    service: str
    geo: str
    reason: str
    request_id: str
    forced: bool
    before: str
    after: str
    details_json: str
    def __init__(self, id: _Optional[str] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., actor: _Optional[str] = ..., action: _Optional[str] = ..., region: _Optional[str] = ..., service: _Optional[str] = ..., geo: _Optional[str] = ..., reason: _Optional[str] = ..., request_id: _Optional[str] = ..., forced: _Optional[bool] = ..., before: _Optional[str] = ..., after: _Optional[str] = ..., details_json: _Optional[str] = ...) -> None: ...

class HistoryRequest(_message.Message):
    __slots__ = ("limit",)
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    limit: int
    def __init__(self, limit: _Optional[int] = ...) -> None: ...

class HistoryResponse(_message.Message):
    __slots__ = ("records",)
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    records: _containers.RepeatedCompositeFieldContainer[AuditRecord]
    def __init__(self, records: _Optional[_Iterable[_Union[AuditRecord, _Mapping]]] = ...) -> None: ...

class Event(_message.Message):
    __slots__ = ("id", "time", "kind", "severity", "subject", "message", "details_json", "replica")
    ID_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    SEVERITY_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    DETAILS_JSON_FIELD_NUMBER: _ClassVar[int]
    REPLICA_FIELD_NUMBER: _ClassVar[int]
    id: str
    time: _timestamp_pb2.Timestamp
    kind: str
    severity: str
    subject: str
    message: str
    details_json: str
    replica: str
    def __init__(self, id: _Optional[str] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., kind: _Optional[str] = ..., severity: _Optional[str] = ..., subject: _Optional[str] = ..., message: _Optional[str] = ..., details_json: _Optional[str] = ..., replica: _Optional[str] = ...) -> None: ...

class EventsRequest(_message.Message):
    __slots__ = ("since", "after_id", "limit")
    SINCE_FIELD_NUMBER: _ClassVar[int]
    AFTER_ID_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    since: _timestamp_pb2.Timestamp
    after_id: str
    limit: int
    def __init__(self, since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., after_id: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class EventsResponse(_message.Message):
    __slots__ = ("events", "skipped", "more")
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_FIELD_NUMBER: _ClassVar[int]
    MORE_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[Event]
    skipped: int
    more: bool
    def __init__(self, events: _Optional[_Iterable[_Union[Event, _Mapping]]] = ..., skipped: _Optional[int] = ..., more: _Optional[bool] = ...) -> None: ...

class PlanRequest(_message.Message):
    __slots__ = ("evacuations", "restore", "healthy")
    class HealthyEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: bool
        def __init__(self, key: _Optional[str] = ..., value: _Optional[bool] = ...) -> None: ...
    EVACUATIONS_FIELD_NUMBER: _ClassVar[int]
    RESTORE_FIELD_NUMBER: _ClassVar[int]
    HEALTHY_FIELD_NUMBER: _ClassVar[int]
    evacuations: _containers.RepeatedCompositeFieldContainer[Evacuation]
    restore: _containers.RepeatedScalarFieldContainer[str]
    healthy: _containers.ScalarMap[str, bool]
    def __init__(self, evacuations: _Optional[_Iterable[_Union[Evacuation, _Mapping]]] = ..., restore: _Optional[_Iterable[str]] = ..., healthy: _Optional[_Mapping[str, bool]] = ...) -> None: ...

class PlanResponse(_message.Message):
    __slots__ = ("table", "preview")
    TABLE_FIELD_NUMBER: _ClassVar[int]
    PREVIEW_FIELD_NUMBER: _ClassVar[int]
    table: RoutingTable
    preview: Preview
    def __init__(self, table: _Optional[_Union[RoutingTable, _Mapping]] = ..., preview: _Optional[_Union[Preview, _Mapping]] = ...) -> None: ...

class StartDrillRequest(_message.Message):
    __slots__ = ("region", "reason", "ramp", "hold_seconds", "restore_ramp", "abort_if", "dry_run", "abort_on_alert", "abort_query")
    REGION_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    RAMP_FIELD_NUMBER: _ClassVar[int]
    HOLD_SECONDS_FIELD_NUMBER: _ClassVar[int]
    RESTORE_RAMP_FIELD_NUMBER: _ClassVar[int]
    ABORT_IF_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    ABORT_ON_ALERT_FIELD_NUMBER: _ClassVar[int]
    ABORT_QUERY_FIELD_NUMBER: _ClassVar[int]
    region: str
    reason: str
    ramp: Ramp
    hold_seconds: float
    restore_ramp: Ramp
    abort_if: _containers.RepeatedScalarFieldContainer[str]
    dry_run: bool
    abort_on_alert: _containers.RepeatedScalarFieldContainer[str]
    abort_query: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, region: _Optional[str] = ..., reason: _Optional[str] = ..., ramp: _Optional[_Union[Ramp, _Mapping]] = ..., hold_seconds: _Optional[float] = ..., restore_ramp: _Optional[_Union[Ramp, _Mapping]] = ..., abort_if: _Optional[_Iterable[str]] = ..., dry_run: _Optional[bool] = ..., abort_on_alert: _Optional[_Iterable[str]] = ..., abort_query: _Optional[_Iterable[str]] = ...) -> None: ...

class DrillResponse(_message.Message):
    __slots__ = ("id", "phase", "drill_json", "dry_run", "preview")
    ID_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    DRILL_JSON_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    PREVIEW_FIELD_NUMBER: _ClassVar[int]
    id: str
    phase: str
    drill_json: str
    dry_run: bool
    preview: Preview
    def __init__(self, id: _Optional[str] = ..., phase: _Optional[str] = ..., drill_json: _Optional[str] = ..., dry_run: _Optional[bool] = ..., preview: _Optional[_Union[Preview, _Mapping]] = ...) -> None: ...

class GetDrillRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class AbortDrillRequest(_message.Message):
    __slots__ = ("id", "reason")
    ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    id: str
    reason: str
    def __init__(self, id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class ListDrillsRequest(_message.Message):
    __slots__ = ("limit",)
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    limit: int
    def __init__(self, limit: _Optional[int] = ...) -> None: ...

class ListDrillsResponse(_message.Message):
    __slots__ = ("drills", "skipped")
    DRILLS_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_FIELD_NUMBER: _ClassVar[int]
    drills: _containers.RepeatedCompositeFieldContainer[DrillResponse]
    skipped: int
    def __init__(self, drills: _Optional[_Iterable[_Union[DrillResponse, _Mapping]]] = ..., skipped: _Optional[int] = ...) -> None: ...

class AddDrillScheduleRequest(_message.Message):
    __slots__ = ("drill", "every_seconds", "window", "blackouts")
    DRILL_FIELD_NUMBER: _ClassVar[int]
    EVERY_SECONDS_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    BLACKOUTS_FIELD_NUMBER: _ClassVar[int]
    drill: StartDrillRequest
    every_seconds: float
    window: str
    blackouts: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, drill: _Optional[_Union[StartDrillRequest, _Mapping]] = ..., every_seconds: _Optional[float] = ..., window: _Optional[str] = ..., blackouts: _Optional[_Iterable[str]] = ...) -> None: ...

class DrillScheduleResponse(_message.Message):
    __slots__ = ("id", "schedule_json")
    ID_FIELD_NUMBER: _ClassVar[int]
    SCHEDULE_JSON_FIELD_NUMBER: _ClassVar[int]
    id: str
    schedule_json: str
    def __init__(self, id: _Optional[str] = ..., schedule_json: _Optional[str] = ...) -> None: ...

class ListDrillSchedulesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListDrillSchedulesResponse(_message.Message):
    __slots__ = ("schedules", "skipped")
    SCHEDULES_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_FIELD_NUMBER: _ClassVar[int]
    schedules: _containers.RepeatedCompositeFieldContainer[DrillScheduleResponse]
    skipped: int
    def __init__(self, schedules: _Optional[_Iterable[_Union[DrillScheduleResponse, _Mapping]]] = ..., skipped: _Optional[int] = ...) -> None: ...

class RemoveDrillScheduleRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...
