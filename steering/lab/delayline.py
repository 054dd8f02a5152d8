"""The delay line of the lab's relay, pure: which region a frame is for, and per pair of regions a bounded FIFO of held frames.

``destination`` reads a frame's Ethernet type and, for IPv4 and IPv6, its
destination address; the relay maps that to a region. ARP and every other type
(and addresses of no region: the lab namespace, broadcast, link-local) get
None: they pass at once, so neighbour discovery never waits behind a delay.

``DelayLine`` holds frames per (source region, destination region): a frame is
due ``delay`` after it arrived, plus a uniform draw in ``[-jitter, +jitter]``,
but never before the frame ahead of it in its pair's queue, so a pair never
reorders (netem with jitter does; TCP then takes the reordering for loss). A
pair whose delay is 0 and whose queue is empty sends at once, which is what
keeps the relay's cost near nothing on a 0 ms lab. A full queue (frames or
bytes) drops the frame and counts it. A changed delay applies to frames that
arrive after the change; those already held keep their time, as on a wire.
"""

from __future__ import annotations

import ipaddress
import random
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Generic, TypeVar

ETH_HEADER = 14
ETHERTYPE_IPV4 = 0x0800
ETHERTYPE_IPV6 = 0x86DD
IPV4_DST = slice(16, 20)
IPV6_DST = slice(24, 40)
QUEUE_FRAMES = 20_000  # per pair: 300 ms of the lab's own traffic is a few hundred frames
QUEUE_BYTES = 32 << 20  # per pair: bounds memory when frames are 64 KiB GSO segments

T = TypeVar("T")  # what the caller sends a released frame with (the relay: its output socket)


def destination(frame: bytes | memoryview) -> bytes | None:
    """The destination address of an IPv4 or IPv6 frame (4 or 16 bytes); None for ARP and everything else."""
    if len(frame) < ETH_HEADER:
        return None
    kind = int.from_bytes(frame[12:14], "big")
    ip = frame[ETH_HEADER:]
    if kind == ETHERTYPE_IPV4 and len(ip) >= IPV4_DST.stop:
        return bytes(ip[IPV4_DST])
    if kind == ETHERTYPE_IPV6 and len(ip) >= IPV6_DST.stop:
        return bytes(ip[IPV6_DST])
    return None


def address_key(text: str) -> bytes:
    """An address as ``destination`` returns it (``10.77.1.1`` -> 4 bytes); ValueError if it is none."""
    return ipaddress.ip_address(text).packed


@dataclass
class PairStats:
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    held: int = 0  # frames that went through the queue
    dropped: int = 0  # frames refused because the queue was full
    max_queued: int = 0


@dataclass
class _Queue(Generic[T]):
    frames: deque[tuple[float, bytes, T]] = field(default_factory=deque)
    size: int = 0  # bytes held
    last_due: float = 0.0


class DelayLine(Generic[T]):
    """Frames held per (source, destination) pair until due; bounded; in order per pair."""

    def __init__(self, queue_frames: int = QUEUE_FRAMES, queue_bytes: int = QUEUE_BYTES,
                 rng: random.Random | None = None) -> None:
        if queue_frames < 1 or queue_bytes < 1:
            raise ValueError("a delay line needs room for at least one frame")
        self.queue_frames = queue_frames
        self.queue_bytes = queue_bytes
        self._rng = rng or random.Random()
        self._delays: dict[tuple[str, str], tuple[float, float]] = {}  # seconds: delay, jitter
        self._queues: dict[tuple[str, str], _Queue[T]] = {}
        self.stats: dict[tuple[str, str], PairStats] = {}

    def set_delays(self, delays: dict[tuple[str, str], tuple[float, float]]) -> None:
        """One-way ``(delay_ms, jitter_ms)`` per ordered pair; a pair not named has none."""
        for key, (delay, jitter) in delays.items():
            if delay < 0 or jitter < 0:
                raise ValueError(f"{key[0]} -> {key[1]}: a delay and its jitter are not negative")
        self._delays = {k: (d / 1000, j / 1000) for k, (d, j) in delays.items() if d or j}
        for key in set(self.stats) | set(delays):
            st = self.stats.setdefault(key, PairStats())
            st.delay_ms, st.jitter_ms = delays.get(key, (0.0, 0.0))

    def passes(self, src: str, dst: str) -> bool:
        """Whether a frame from ``src`` to ``dst`` goes at once: no delay and nothing of the pair held."""
        q = self._queues.get((src, dst))
        return (src, dst) not in self._delays and (q is None or not q.frames)

    def offer(self, src: str, dst: str, frame: bytes, out: T, now: float) -> bool:
        """True: send ``frame`` now (no delay and nothing held ahead of it). False: held (or dropped, when the
        pair's queue is full); ``release`` gives it back when due."""
        key = (src, dst)
        delay, jitter = self._delays.get(key, (0.0, 0.0))
        q = self._queues.get(key)
        if not delay and not jitter and (q is None or not q.frames):
            return True
        if q is None:
            q = self._queues[key] = _Queue()
        st = self.stats.setdefault(key, PairStats())
        if len(q.frames) >= self.queue_frames or q.size + len(frame) > self.queue_bytes:
            st.dropped += 1
            return False
        due = now + delay + (self._rng.uniform(-jitter, jitter) if jitter else 0.0)
        due = max(due, now, q.last_due)
        q.frames.append((due, frame, out))
        q.size += len(frame)
        q.last_due = due
        st.held += 1
        st.max_queued = max(st.max_queued, len(q.frames))
        return False

    def release(self, now: float) -> Iterator[tuple[bytes, T]]:
        """The frames due by ``now``, each pair's in the order they came."""
        for q in self._queues.values():
            while q.frames and q.frames[0][0] <= now:
                _, frame, out = q.frames.popleft()
                q.size -= len(frame)
                yield frame, out

    def next_due(self) -> float | None:
        """When the next held frame is due (None: nothing held)."""
        heads = [q.frames[0][0] for q in self._queues.values() if q.frames]
        return min(heads) if heads else None

    def queued(self, src: str, dst: str) -> int:
        q = self._queues.get((src, dst))
        return len(q.frames) if q else 0
