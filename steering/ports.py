"""Typed ports: what each layer needs of the next, as narrow Protocols (docs/architecture.md §2, §9).

A consumer asks for the port it uses, not for the whole ``steering.store.Store``
(which implements every one of them), so its seams are checked by mypy and a
test can hand it a plain object. The way go-control-plane's cache interfaces
and ExternalDNS's ``Provider`` are narrow. Each section belongs to the layer
that consumes it; add a section of your own rather than widening another's.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from steering.model import Overrides, TargetHealth
from steering.table import RoutingTable

if TYPE_CHECKING:  # the store's proof of leading; only its type is needed here
    from steering.event import Event
    from steering.store.client import Backoff
    from steering.store.drills import DrillRecords
    from steering.store.election import Leadership
    from steering.store.events import EventPage
    from steering.store.overrides import StoredRestore


# ---------------------------------------------------------------------------------------------------------
# The leader (steering/controller/leader.py) and its sinks (steering/controller/sinks.py,
# steering/route53/sink.py).

class TableSource(Protocol):
    """The routing table now in force."""

    async def get_table(self) -> RoutingTable | None: ...


class TablePublisher(Protocol):
    """Writes a table as current, fenced by ``leadership`` (docs/architecture.md §4)."""

    async def publish_table(self, table: RoutingTable, leadership: Leadership) -> bool:
        """False (nothing written) when ``leadership`` no longer holds the leader key."""
        ...


class HealthReader(Protocol):
    """Every replica's health records, ``site@replica`` -> health: now, then after each change."""

    def watch_health(self) -> AsyncIterator[dict[str, TargetHealth]]: ...


class OverridesReader(Protocol):
    """The operators' overrides: now, then after each change (a re-list may repeat a snapshot)."""

    def watch_overrides(self) -> AsyncIterator[Overrides]: ...


class Elector(Protocol):
    async def campaign(self, identity: str) -> Leadership:
        """Block until ``identity`` leads; the lease is kept alive until the leadership is lost or resigned."""
        ...


class LeaderStore(TableSource, HealthReader, OverridesReader, Elector, Protocol):
    """All the leader reads of the store; it writes only through its sinks."""


class StatusWriter(Protocol):
    """Small status records the leader shares with every replica (``status/<name>``)."""

    async def put_status(self, name: str, value: bytes) -> None: ...


class StatusReader(Protocol):
    async def get_status(self, name: str) -> bytes | None: ...


@dataclass(frozen=True)
class SinkStatus:
    """A sink's last delivery, as ``steerctl status`` shows it; stored as JSON under ``status/<sink>``.

    ``record`` is the sink's whole record (Route 53: ``SyncResult.to_dict()``), stored as it is: readers of
    the stored JSON see the same keys as before this type existed. The typed fields are read from it.
    """

    sink: str
    started_at: float
    duration: float
    table_version: int
    change_count: int
    error: str | None
    record: Mapping[str, Any] = field(default_factory=dict, compare=False)

    @property
    def finished_at(self) -> float:
        return self.started_at + self.duration

    @property
    def ok(self) -> bool:
        return self.error is None

    @classmethod
    def from_record(cls, sink: str, record: Mapping[str, Any]) -> SinkStatus:
        """Raises ``ValueError`` when ``record`` is not a status record; absent fields read as zero/no error."""
        if not isinstance(record, Mapping):
            raise ValueError(f"status/{sink}: not a JSON object")
        try:
            error = record.get("error")
            return cls(sink=sink, started_at=float(record.get("started_at", 0.0)),
                       duration=float(record.get("duration", 0.0)),
                       table_version=int(record.get("table_version", 0)),
                       change_count=int(record.get("change_count", 0)),
                       error=str(error) if error else None, record=dict(record))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"status/{sink}: {exc}") from None

    @classmethod
    def from_json(cls, sink: str, blob: bytes) -> SinkStatus:
        """The stored form back; raises ``ValueError`` when it is not one."""
        return cls.from_record(sink, json.loads(blob))

    def to_json(self) -> bytes:
        """The stored form: the record with the typed fields over it, keys sorted."""
        data = {**self.record, "started_at": self.started_at, "duration": self.duration,
                "table_version": self.table_version, "change_count": self.change_count, "error": self.error}
        return json.dumps(data, sort_keys=True).encode()


class Sink(Protocol):
    """Somewhere the leader's tables go. The leader walks its sinks in order for each table it publishes
    (the table in etcd first, then Route 53); a sink that refuses ends the term."""

    @property
    def name(self) -> str: ...

    async def serve(self, current: RoutingTable | None, stop: asyncio.Event) -> None:
        """The sink's own work for one term of leadership, until ``stop`` is set (Route 53: its sync loop,
        which repairs drift). ``current``: the table in force when the term began."""
        ...

    async def publish(self, table: RoutingTable, leadership: Leadership) -> bool:
        """Deliver ``table``. False only when this replica no longer leads: the term is over."""
        ...

    def status(self) -> SinkStatus | None:
        """The last delivery (None: nothing delivered yet)."""
        ...


# ---------------------------------------------------------------------------------------------------------
# The operator and routing API (steering/controller/operator.py, api.py): what the services read of the
# replica and the store. The servicer decides with the pure ``steering.controller.actions``; these are its I/O.

class FollowedTable(Protocol):
    """The table this replica follows (``TableView``): the API answers from it, never from etcd per call."""

    @property
    def current(self) -> RoutingTable | None: ...

    @property
    def received_at(self) -> float:
        """When (unix time) ``current`` arrived."""
        ...

    async def wait_newer(self, version: int, timeout: float | None = None) -> RoutingTable | None: ...


class AgentSessions(Protocol):
    """This replica's agent streams (``Ingest``), as ``Status`` reports them."""

    @property
    def connected_agents(self) -> int: ...

    def last_heard(self, site: str) -> tuple[float, TargetHealth | None] | None:
        """(when this replica last had a report for ``site``, its health), from memory; None if never.
        ``site`` may be an observer's slot of a site (``site~observer``, docs/health.md)."""
        ...

    def streams(self, slot: str) -> int:
        """Streams open on this replica reporting ``slot`` (a site, or ``site~observer``)."""
        ...


class ActionLog(Protocol):
    """Operator actions, applied once per request id with their audit (docs/architecture.md §4)."""

    async def request_audit_id(self, request_id: str) -> str | None: ...

    async def get_overrides_versioned(self) -> tuple[Overrides, int]:
        """The overrides and the operator sequence they reflect (compared by ``apply_operator_action``)."""
        ...

    async def apply_operator_action(self, request_id: str, puts: Mapping[str, bytes], deletes: list[str],
                                    audit: Mapping[str, Any], expect_seq: int | None = None) -> tuple[bool, str]:
        """(applied, audit id); raises ``OverridesChanged`` when the sequence moved since ``expect_seq``."""
        ...

    async def list_audit(self, limit: int = 50) -> list[dict[str, Any]]: ...


# ---------------------------------------------------------------------------------------------------------
# The event timeline: the leader's event sink writes and prunes it (steering/controller/sinks.py), the
# operator API reads it (steering/controller/operator.py).

class EventWriter(Protocol):
    async def put_events(self, events: Sequence[Event]) -> list[str]: ...

    async def prune_events(self, max_count: int, max_age: float, now: float) -> int: ...


class EventReader(Protocol):
    async def list_events(self, *, since: float | None = None, after: str | None = None,
                          limit: int = 50) -> EventPage: ...


class OperatorStore(TableSource, StatusReader, ActionLog, EventReader, Protocol):
    """All ``OperatorService`` reads and writes, and what it remembers of etcd for answering while it is away."""

    async def get_health(self) -> dict[str, TargetHealth]: ...

    async def get_overrides(self) -> Overrides: ...

    async def leader(self) -> str | None: ...

    @property
    def unreachable_since(self) -> float | None: ...

    @property
    def last_leader(self) -> tuple[str | None, float] | None: ...

    @property
    def last_overrides(self) -> tuple[Overrides, float] | None: ...


class RestoreRecords(Protocol):
    """The restore janitor's view: restore records as stored, and a delete that compares the stored bytes."""

    async def get_restores(self) -> list[StoredRestore]: ...

    async def delete_restore_if_unchanged(self, stored: StoredRestore) -> bool: ...


class ApiStore(OperatorStore, RestoreRecords, Protocol):
    """What the operator and routing API and the restore janitor use of the store (``api.add_api_services``)."""


# ---------------------------------------------------------------------------------------------------------
# Ingest (steering/controller/ingest.py) and the followed table (steering/controller/tableview.py).


class HealthWriter(Protocol):
    """What the ingest writes health through: batched puts and deletes on this replica's lease."""

    def backoff(self, first: float = 0.05) -> Backoff: ...

    async def write_health_batch(self, puts: Mapping[str, TargetHealth], deletes: list[str], ttl: float,
                                 max_ops: int = 100) -> None: ...


class TableFeed(Protocol):
    """The routing table as it changes: the current one, then each newer version."""

    def watch_table(self) -> AsyncIterator[RoutingTable]: ...


# ---------------------------------------------------------------------------------------------------------
# Chaos drills (steering/controller/drillapi.py, steering/controller/drillrunner.py).


class DrillStore(OperatorStore, Protocol):
    """The operator store, the drill records (``steering.store.drills``) and the event timeline they write to."""

    @property
    def drills(self) -> DrillRecords: ...

    async def put_events(self, events: Sequence[Event]) -> list[str]: ...
