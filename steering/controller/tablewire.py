"""The routing table on the Watch stream: one ``WatchResponse`` per table version, shared by every subscriber.

``steering.v1.RoutingTable`` carries the table twice: typed fields (for
consumers that read protobuf, like ``steerctl watch``) and the canonical
JSON (``RoutingTable.to_json``) that ``steering.client`` parses, the same
bytes etcd holds compressed. Building it walks every service, geo and site
in Python and serialises the table to JSON (megabytes at benchmark scale),
so it is done once per (table, service filter) and the message object is
handed to every stream; gRPC serialises the shared message (in C) on each
send.

The first response of a stream also carries the topology JSON; that variant
is cached beside the plain one. Messages are never modified once built.
docs/architecture.md §3 lists every form the table takes and why.
"""

from __future__ import annotations

from steering.controller.convert import only_service, table_to_pb
from steering.table import RoutingTable
from steering.v1 import steering_pb2 as pb


class WatchMessages:
    """``WatchResponse``s for the newest table, built on first use; a newer table drops the older ones."""

    def __init__(self, topology_json: str) -> None:
        self.topology_json = topology_json
        self._table: RoutingTable | None = None
        self._built: dict[tuple[str, bool], pb.WatchResponse] = {}
        self.builds = 0  # how many messages were built (each one a table_to_pb): for tests and logs

    def topology_only(self) -> pb.WatchResponse:
        """The first response of a stream that has no table to send yet."""
        return pb.WatchResponse(topology_json=self.topology_json)

    def response(self, table: RoutingTable, service: str = "", first: bool = False) -> pb.WatchResponse:
        """``table`` (only ``service``'s routing when given), with the topology when ``first``.

        The same object for the same (table, service, first): do not modify it."""
        if table is not self._table:
            if self._table is not None and table.version < self._table.version:
                return self._with_topology(self._build(table, service)) if first else self._build(table, service)
            self._table = table  # a newer table: the older messages go
            self._built = {}
        plain = self._built.get((service, False))
        if plain is None:
            plain = self._built[(service, False)] = self._build(table, service)
        if not first:
            return plain
        msg = self._built.get((service, True))
        if msg is None:
            msg = self._built[(service, True)] = self._with_topology(plain)
        return msg

    def _build(self, table: RoutingTable, service: str) -> pb.WatchResponse:
        self.builds += 1
        return pb.WatchResponse(table=table_to_pb(only_service(table, service) if service else table))

    def _with_topology(self, plain: pb.WatchResponse) -> pb.WatchResponse:
        msg = pb.WatchResponse(topology_json=self.topology_json)
        msg.table.CopyFrom(plain.table)  # a copy in C: the table is still built once
        return msg
