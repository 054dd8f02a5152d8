"""Client geography for the DNS server: ``GeoMap`` and ``ClientKey`` from ``steering.topology``.

The geo map (longest-prefix match of a client subnet over the configured
prefixes, the client key a pick hashes, the ECS scope) lives in
``steering/topology.py``, its one home, which ``RoutingService.Resolve`` and
``steering.client`` use too; the DNS modules import it from here. The same
class either way, so the hot path pays nothing for the move.
"""

from __future__ import annotations

from steering.topology import V4_KEY_BITS, V6_KEY_BITS, ClientKey, GeoMap

__all__ = ["V4_KEY_BITS", "V6_KEY_BITS", "ClientKey", "GeoMap"]
