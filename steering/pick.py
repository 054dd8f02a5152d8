"""The weighted pick: which target one client of (service, geo) gets. Pure; the one definition.

The DNS server (slow path, and the render step behind its fast path),
``RoutingService.Resolve`` and ``steering.client`` all answer a client with
``pick``, so one client gets one target wherever it asks:

* the **split** (``table_split``): the table's serving targets for
  (service, geo) that the service has answers for, highest weight first
  (``GeoRoute.serving``), as cumulative weights; without any (no table, no
  route, none answerable) an equal ``spread`` over the topology's fail-open
  targets (``steering.topology.fail_open_targets``), with the reason;
* the **client key**: the client's subnet bytes from
  ``steering.topology.GeoMap.key`` (the address cut to /24 for IPv4, /56 for
  IPv6, or to the longest configured prefix when that is longer; an ECS
  option's source prefix when shorter);
* the **seed**: ``name_seed``, crc32 of the service name's lower-case wire
  form, so services over the same targets do not send a subnet to the same
  place;
* the **pick**: crc32 of the key, seeded, mixed by a multiplication (crc32
  is linear, so neighbouring subnets give related values) and scaled onto
  ``[0, total)``; the target whose cumulative interval holds it.

The table version is not hashed in on purpose: a subnet keeps its answer
across tables unless the weights around its hash value move, which keeps
caches and sessions steady. The DNS fast path (``dnsserver/fastpath.py``)
inlines the same arithmetic for speed; ``tests/test_pick.py`` proves the two
equal over random inputs.
"""

from __future__ import annotations

import zlib
from bisect import bisect_right
from collections.abc import Collection, Sequence
from dataclasses import dataclass

import dns.name

from steering.table import RoutingTable

GOLDEN = 0x9E3779B1  # 2^32 / phi: the multiplicative mix after crc32


@dataclass(frozen=True)
class Split:
    """A geo's weighted choice: ``targets[i]`` is picked for hash values below ``cumulative[i]``."""

    targets: tuple[str, ...]
    cumulative: tuple[int, ...]
    fallback: str = ""  # why the table was not used ("" when it was)

    @property
    def total(self) -> int:
        return self.cumulative[-1]


def split(weights: Sequence[tuple[str, int]], fallback: str = "") -> Split:
    """(target, weight) pairs, in order, as a ``Split``."""
    cum: list[int] = []
    acc = 0
    for _, w in weights:
        acc += w
        cum.append(acc)
    return Split(tuple(t for t, _ in weights), tuple(cum), fallback)


def spread(targets: Sequence[str], reason: str) -> Split:
    """Equal weights over ``targets``: the fail-open split, ``reason`` saying why the table was not used."""
    return split([(t, 1) for t in targets], reason)


def table_split(table: RoutingTable | None, service: str, geo: str,
                answers: Collection[str]) -> tuple[Split | None, str]:
    """The table's split for (service, geo), or None and why not: ``no-table``, ``service-not-in-table``,
    ``geo-not-in-table``, ``no-answerable-target`` (the reasons the DNS server counts)."""
    if table is None:
        return None, "no-table"
    route_svc = table.services.get(service)
    if route_svc is None:
        return None, "service-not-in-table"
    route = route_svc.geos.get(geo)
    if route is None:
        return None, "geo-not-in-table"
    usable = [(t, w) for t, w in route.serving() if t in answers]
    if not usable:
        return None, "no-answerable-target"
    return split(usable), ""


def name_seed(name: str | dns.name.Name) -> int:
    """Per-name hash seed: crc32 of the lower-case wire form, so every replica and client computes the same."""
    n = dns.name.from_text(name) if isinstance(name, str) else name
    return zlib.crc32(n.canonicalize().to_wire() or b"")


def pick(cumulative: Sequence[int], subnet: bytes, seed: int) -> int:
    """Index into a split's targets for a client subnet key (stable: same inputs, same index).

    ``cumulative`` must end with a positive total; a zero-weight target (equal to its predecessor's
    cumulative value) is never picked."""
    if len(cumulative) == 1:
        return 0
    h = ((zlib.crc32(subnet, seed) * GOLDEN) & 0xFFFFFFFF) * cumulative[-1] >> 32
    return bisect_right(cumulative, h)
