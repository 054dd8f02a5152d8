"""The weighted pick: which target one client of (service, geo) gets. Pure; the one definition.

The DNS server (slow path, and the render step behind its fast path),
``RoutingService.Resolve`` and ``steering.client`` all answer a client with
``pick``, so one client gets one target wherever it asks. Its inputs:

* the **split** (``table_split``): the table's serving targets for
  (service, geo) that the service has answers for, with their weights
  (``GeoRoute.serving``); without any (no table, no route, none answerable)
  an equal ``spread`` over the topology's fail-open targets
  (``steering.topology.fail_open_targets``), with the reason;
* the **client key**: the client's subnet bytes from
  ``steering.topology.GeoMap.key`` (the address cut to /24 for IPv4, /56 for
  IPv6, or to the longest configured prefix when that is longer; an ECS
  option's source prefix when shorter);
* the **seed**: ``name_seed``, crc32 of the service name's lower-case wire
  form, so services over the same targets do not send a subnet to the same
  place.

The pick, in two steps:

1. **Slot** (``slot``): crc32 of the key, seeded, mixed by a multiplication
   (crc32 is linear, so neighbouring subnets give related values); its top
   ``SLOT_BITS`` (16) bits are the subnet's slot, one of 65,536.
2. **Weighted rendezvous over the slot** (``race``): every target ``t`` with
   weight ``w > 0`` draws ``u_t`` in (0, 1) from (seed, slot, *target name*)
   (``unit``: a 64-bit key per (seed, name) from blake2b, then SplitMix64 of
   key + slot); its score is ``-ln(u_t) / w`` (an exponential race) and the
   lowest score wins, ties to the lower name. A zero weight never wins. The
   index of the winner in ``split.targets`` is the pick.

Why this shape (P-MinHash; tests/test_pick_movement.py checks each claim):

* Hashing the target's **name**, not its position, means reordering a
  split (positions move when weights change) moves nobody.
* Scaling every weight by one factor does not change the winner, so an
  evacuation or restore step (one weight changes, the others change in
  proportion) moves exactly the clients leaving, or joining, that target:
  the share moved equals the weight moved, the least any pick can move.
* For any change the share of slots that move is at most
  ``2·TV / (1 + TV)``, TV being the total variation distance between the
  normalised weight vectors: at most ``Σ|w − w′| / 1000`` for weights of
  1000, twice the least any pick can do.
* Along a linear interpolation between two weight vectors (a ramp) every
  pairwise ratio ``w_i / w_j`` is monotone, so a slot that leaves a target
  never returns to it during the ramp.

**Slots**, not the key itself, are raced so that the DNS fast path can pick
in O(1) (a race costs about 1 µs per target): a ``SlotTable``
(``slot_table``) memoises the race per slot for one (seed, targets,
weights), one byte per slot: 64 KiB per distinct split being served (two
bytes per slot past 254 targets; a one-target split shares one read-only
table), filled lazily on a slot's first query (0xFF: not raced yet) and
shared between splits with identical inputs. A weak dictionary keeps a
table only while a rendered snapshot holds it, so memory is bounded by the
distinct splits of the snapshots alive (the one served and the one being
built), and a new routing table reuses the raced slots of every split whose
weights it did not change. Per query the fast path pays one crc32, one
multiply and shift and one index, a little less than the bisect over
cumulative weights it replaces. 65,536 slots keep the quantisation well
inside the 1 % the movement claims allow (about 0.2 % at 100,000 subnets).
The memo is the race, not a second definition: ``tests/test_pick.py``
proves the fast path, the tables and ``pick`` agree.

**The table version is not hashed in**, on purpose: the choice depends on
the subnet, the service and the weights only, so every replica, every
restart and every worker gives the same answer for the same weights, and a
new table whose weights for a geo did not change moves none of its clients
(hashing the version would reshuffle every client on every publication,
costing each its session and caches). ``-ln`` is libm's ``log``; two
platforms could differ only for a score tie within one ulp. A fixed vector
(tests/test_pick_movement.py) pins the definition: changing it moves
clients once and makes replicas of two versions disagree. docs/pick.md
has the whole argument and the figures.
"""

from __future__ import annotations

import hashlib
import threading
import weakref
import zlib
from array import array
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from functools import lru_cache
from math import log
from typing import ClassVar

import dns.name

from steering.table import RoutingTable

GOLDEN = 0x9E3779B1  # 2^32 / phi: the multiplicative mix after crc32
SLOT_BITS = 16
SLOTS = 1 << SLOT_BITS
SLOT_SHIFT = 32 - SLOT_BITS  # slot = the mixed hash's top SLOT_BITS bits
UNSET = 0xFF  # a byte-table slot not raced yet (the fast path tests for it)
_UNSET_WIDE = 0xFFFF  # the same in a two-byte table (more than 254 targets)
_GAMMA = 0x9E3779B97F4A7C15  # SplitMix64's increment: 2^64 / phi
_M64 = (1 << 64) - 1
_HALF_ULP = 2.0 ** -54
_ONE = bytes(SLOTS)  # the index of a one-target split: target 0 everywhere


@dataclass(frozen=True)
class Split:
    """A geo's weighted choice: ``targets[i]`` has weight ``weights[i]`` (0 = never picked)."""

    _retire_whole: ClassVar[bool] = True  # flat: steering.retire frees one whole

    targets: tuple[str, ...]
    weights: tuple[int, ...]
    fallback: str = ""  # why the table was not used ("" when it was)


def split(weights: Sequence[tuple[str, int]], fallback: str = "") -> Split:
    """(target, weight) pairs, in order, as a ``Split``."""
    return Split(tuple(t for t, _ in weights), tuple(w for _, w in weights), fallback)


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


def slot(subnet: bytes, seed: int) -> int:
    """The client subnet's slot in ``[0, SLOTS)``: the top bits of its seeded, mixed crc32."""
    return ((zlib.crc32(subnet, seed) * GOLDEN) & 0xFFFFFFFF) >> SLOT_SHIFT


@lru_cache(maxsize=8192)
def target_key(seed: int, target: str) -> int:
    """64 bits per (seed, target name): where the target's draws for this service start."""
    digest = hashlib.blake2b(target.encode(), digest_size=8, key=seed.to_bytes(4, "big")).digest()
    return int.from_bytes(digest, "big")


def unit(key: int, slot_: int) -> float:
    """The draw ``u`` in (0, 1) of a target (its ``target_key``) for a slot: SplitMix64 of key + slot."""
    z = (key + (slot_ + 1) * _GAMMA) & _M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
    return ((z ^ (z >> 31)) >> 11) * 2.0 ** -53 + _HALF_ULP  # 53 bits, centred: never 0, never 1


def _race(keys: Sequence[int], weights: Sequence[int], targets: Sequence[str], slot_: int) -> int:
    best = -1
    best_score = 0.0
    for i, w in enumerate(weights):
        if w <= 0:
            continue
        score = -log(unit(keys[i], slot_)) / w
        if best < 0 or score < best_score or (score == best_score and targets[i] < targets[best]):
            best, best_score = i, score
    if best < 0:
        raise ValueError("a split needs a target with a positive weight")
    return best


def race(targets: Sequence[str], weights: Sequence[int], seed: int, slot_: int) -> int:
    """Index of the target a slot goes to: the lowest ``-ln(unit) / weight``; zero weights never win."""
    return _race([target_key(seed, t) for t in targets], weights, targets, slot_)


def pick(split: Split, subnet: bytes, seed: int) -> int:
    """Index into ``split.targets`` for a client subnet key (same inputs, same index, on any replica).

    ``split`` needs a target with a positive weight (ValueError otherwise); a zero weight is never picked."""
    return race(split.targets, split.weights, seed, slot(subnet, seed))


class SlotTable:
    """``pick`` for every slot of one (seed, targets, weights), raced on first use: the fast path's memo.

    ``index[s]`` is the target index of slot ``s``, or ``UNSET`` until raced; ``fill(s)`` races slot ``s``,
    stores and returns its index (``fill`` also answers for a slot already raced). A byte per slot, two past
    254 targets (an index of 255 or more then always goes through ``fill``, which looks it up first); one
    target: the shared zero bytes, nothing to race."""

    __slots__ = ("__weakref__", "fill", "index", "seed", "targets", "weights")

    def __init__(self, targets: Sequence[str], weights: Sequence[int], seed: int) -> None:
        self.targets = tuple(targets)
        self.weights = tuple(weights)
        self.seed = seed
        keys = [target_key(seed, t) for t in self.targets]
        if not any(w > 0 for w in self.weights):
            raise ValueError("a split needs a target with a positive weight")
        wide = len(self.targets) >= UNSET
        unset = _UNSET_WIDE if wide else UNSET
        index: bytes | bytearray | array[int]
        if len(self.targets) == 1:
            index = _ONE  # one target: every slot is raced already (shared, read-only)
        elif wide:
            index = array("H", [_UNSET_WIDE]) * SLOTS
        else:
            index = bytearray([UNSET]) * SLOTS
        w, names = self.weights, self.targets

        def fill(s: int) -> int:
            i = index[s]
            if i == unset:
                i = _race(keys, w, names, s)
                index[s] = i  # type: ignore[index]  # never _ONE (all raced); racing threads store the same i
            return i

        self.index = index
        self.fill: Callable[[int], int] = fill

    def pick(self, subnet: bytes) -> int:
        """``pick`` through the memo."""
        s = slot(subnet, self.seed)
        i = self.index[s]
        return self.fill(s) if i >= UNSET else i


_tables: weakref.WeakValueDictionary[tuple[int, tuple[str, ...], tuple[int, ...]], SlotTable] = (
    weakref.WeakValueDictionary())
_tables_lock = threading.Lock()


def slot_table(split: Split, seed: int) -> SlotTable:
    """The ``SlotTable`` for ``split`` under ``seed``: one per distinct (seed, targets, weights) in use.

    Held weakly here: a table lives as long as a rendered snapshot refers to it, so a new table whose
    weights did not change reuses the slots the old one already raced, and nothing outlives its use."""
    key = (seed, split.targets, split.weights)
    with _tables_lock:
        table = _tables.get(key)
        if table is None:
            table = _tables[key] = SlotTable(split.targets, split.weights, seed)
    return table
