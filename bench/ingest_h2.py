"""The ingest bench's load: many ``HealthService.Report`` streams over a few raw HTTP/2 connections.

Why not grpc.aio: with thousands of streams per process it costs ~190 µs of
the generator's CPU per report (two batch operations per report through the
completion queue's poller thread and asyncio), so on this 2-core machine
5,000 reports/s from grpc.aio clients take about as much CPU as the
controller they measure, and 10,000/s cannot be offered at all. This client
speaks the same gRPC over HTTP/2 to the same server (real sockets, the real
controller), but one report is one pre-built DATA frame joined into one
socket write per connection per tick, and one ack is one frame counted: a
few µs each.

What it implements of HTTP/2 (RFC 9113) is what a gRPC client needs: the
preface and SETTINGS (answered), PING (answered), flow control both ways
(its own receive windows are opened wide once; the server's send windows are
honoured, a report that does not fit is counted as ``blocked``, not sent),
RST_STREAM, GOAWAY and trailers. It advertises an HPACK table size of 0, so
the server's header blocks can be read without a dynamic table (RFC 7541
§4.2); that is how the trailers' ``grpc-status`` becomes an error kind.

Each simulated agent sends on a fixed beat (one report per interval) while
its stream is open. Streams open at a bounded rate: a Python gRPC server
takes new calls one at a time on its event loop, and grpc core cancels the
calls waiting beyond its pending limits (``grpc.server.max_pending_requests``)
with CANCELLED before any handler sees them. A failed stream is reopened
after the agents' own backoff.
"""

from __future__ import annotations

import asyncio
import heapq
import random
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

from agents import backoff
from steering.v1 import steering_pb2 as pb

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = 0, 1, 3, 4, 6, 7, 8, 9
END_STREAM = ACK = 0x1
END_HEADERS, PADDED, PRIORITY = 0x4, 0x8, 0x20
SETTINGS_HEADER_TABLE_SIZE, SETTINGS_ENABLE_PUSH, SETTINGS_MAX_CONCURRENT_STREAMS = 1, 2, 3
SETTINGS_INITIAL_WINDOW_SIZE = 4
MAX_WINDOW = 2**31 - 1
DEFAULT_WINDOW = 65535
CANCEL = 8
PATH = "/steering.v1.HealthService/Report"
# grpc-status codes by number (the gRPC spec's table), for the error kinds.
STATUS = ["OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS",
          "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
          "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED"]
H2_ERRORS = ["NO_ERROR", "PROTOCOL_ERROR", "INTERNAL_ERROR", "FLOW_CONTROL_ERROR", "SETTINGS_TIMEOUT",
             "STREAM_CLOSED", "FRAME_SIZE_ERROR", "REFUSED_STREAM", "CANCEL", "COMPRESSION_ERROR",
             "CONNECT_ERROR", "ENHANCE_YOUR_CALM", "INADEQUATE_SECURITY", "HTTP_1_1_REQUIRED"]
_HEAD = struct.Struct(">HBBBI")  # a frame header: 24-bit length as 16 + 8 bits, type, flags, stream id
TICK = 0.005  # the beat's granularity: reports due within one tick share a write
ACK_TIMEOUT = 5.0  # as the agents' default: a stream with a report unacked this long is dead


def frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    n = len(payload)
    return _HEAD.pack(n >> 8, n & 0xFF, kind, flags, stream) + payload


def hpack_int(value: int, prefix_bits: int, first: int) -> bytes:
    """An HPACK integer (RFC 7541 §5.1) whose first byte carries ``first``'s high bits."""
    top = (1 << prefix_bits) - 1
    if value < top:
        return bytes([first | value])
    out = [first | top]
    value -= top
    while value >= 128:
        out.append(value % 128 + 128)
        value //= 128
    out.append(value)
    return bytes(out)


def hpack_str(text: str) -> bytes:
    raw = text.encode()
    return hpack_int(len(raw), 7, 0) + raw  # not Huffman-coded: legal and simpler


def request_headers(authority: str) -> bytes:
    """The Report call's header block: static-table entries and literals never indexed."""
    return (b"\x83\x86"  # :method POST, :scheme http (static table 3 and 6)
            + hpack_int(4, 4, 0) + hpack_str(PATH)  # :path, name from the static table
            + hpack_int(1, 4, 0) + hpack_str(authority)  # :authority
            + hpack_int(31, 4, 0) + hpack_str("application/grpc")  # content-type
            + b"\x00" + hpack_str("te") + hpack_str("trailers"))


def _read_int(block: bytes, pos: int, prefix_bits: int) -> tuple[int, int]:
    top = (1 << prefix_bits) - 1
    value = block[pos] & top
    pos += 1
    if value < top:
        return value, pos
    shift = 0
    while True:
        b = block[pos]
        pos += 1
        value += (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return value, pos


def _read_str(block: bytes, pos: int) -> tuple[bytes | None, int]:
    huffman = bool(block[pos] & 0x80)
    n, pos = _read_int(block, pos, 7)
    return (None if huffman else block[pos:pos + n]), pos + n


def literal_headers(block: bytes) -> dict[str, str]:
    """The header fields with literal names in ``block``, decoded without a dynamic table (we advertised
    size 0). Indexed fields and static-table names (:status, content-type) are skipped: grpc-status and
    grpc-message are not in the static table. A Huffman-coded string reads as "?"."""
    out: dict[str, str] = {}
    pos = 0
    while pos < len(block):
        b = block[pos]
        if b & 0x80:  # indexed field
            _, pos = _read_int(block, pos, 7)
            continue
        if b & 0xE0 == 0x20:  # table size update
            _, pos = _read_int(block, pos, 5)
            continue
        index, pos = _read_int(block, pos, 6 if b & 0x40 else 4)
        name = None
        if index == 0:
            name, pos = _read_str(block, pos)
        value, pos = _read_str(block, pos)
        if name is not None:
            out[name.decode(errors="replace")] = "?" if value is None else value.decode(errors="replace")
    return out


def error_kind(trailers: dict[str, str]) -> str:
    code = trailers.get("grpc-status", "?")
    name = STATUS[int(code)] if code.isdigit() and int(code) < len(STATUS) else f"status {code}"
    message = trailers.get("grpc-message", "")[:60]
    return f"{name}:{message}" if message else name


@dataclass
class Agent:
    """One simulated agent: its site and the state of its current stream."""

    site: str
    region: str
    kind: pb.SiteKind
    status: pb.HealthStatus = pb.HEALTH_STATUS_HEALTHY
    sequence: int = 0
    conn: Connection | None = None
    stream: int = 0  # 0: no stream open
    open_at: float = 0.0  # when it may open its next stream (monotonic)
    attempt: int = 0  # failed streams in a row (backoff)
    sent: int = 0  # on the current stream
    acked: int = 0
    unacked_since: float | None = None
    send_window: int = DEFAULT_WINDOW
    rbuf: bytes = b""  # a partial gRPC message


@dataclass
class Counts:
    """What one load process saw: in the window (``start`` <= t < ``until``) and overall."""

    start: float
    until: float
    acks: int = 0
    sent: int = 0
    blocked: int = 0  # beats whose report did not fit the server's flow-control window
    no_stream: int = 0  # beats while the agent had no stream (backing off after an error)
    flips: int = 0
    opened: int = 0
    errors: dict[str, int] = field(default_factory=dict)  # in the window, by kind
    all_errors: int = 0
    late_max: float = 0.0  # the generator's own lag: how late a beat was sent, at most (in the window)
    cpu0: float | None = None  # this process's CPU time at the window's start and end
    cpu1: float | None = None

    def inside(self, now: float) -> bool:
        return self.start <= now < self.until

    def error(self, kind: str, now: float) -> None:
        self.all_errors += 1
        if self.inside(now):
            self.errors[kind] = self.errors.get(kind, 0) + 1


class Connection(asyncio.Protocol):
    """One HTTP/2 connection to the controller carrying the streams of some agents."""

    def __init__(self, load: Load) -> None:
        self.load = load
        self.transport: asyncio.Transport | None = None
        self.ready = asyncio.get_running_loop().create_future()  # the server's first SETTINGS arrived
        self.closed = False
        self.buf = b""
        self.out: list[bytes] = []
        self.streams: dict[int, Agent] = {}
        self.next_id = 1
        self.send_window = DEFAULT_WINDOW
        self.initial_window = DEFAULT_WINDOW  # the server's, for our sends on new streams
        self.max_streams = 2**31
        self.received = 0  # DATA bytes since our last connection-level WINDOW_UPDATE
        self.headers: tuple[int, int, bytes] | None = None  # a header block awaiting CONTINUATION

    # ------------------------------------------------------------ asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport = cast(asyncio.Transport, transport)  # uvloop's are not asyncio's classes
        settings = struct.pack(">HIHIHI", SETTINGS_HEADER_TABLE_SIZE, 0, SETTINGS_ENABLE_PUSH, 0,
                               SETTINGS_INITIAL_WINDOW_SIZE, MAX_WINDOW)
        transport.write(PREFACE + frame(SETTINGS, 0, 0, settings)
                        + frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", MAX_WINDOW - DEFAULT_WINDOW)))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(str(exc or "closed before SETTINGS")))
        for agent in list(self.streams.values()):
            self.load.ended(agent, "connection lost")
        self.streams.clear()

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        pos, end = 0, len(buf)
        unpack = _HEAD.unpack_from
        while end - pos >= 9:
            hi, lo, kind, flags, stream = unpack(buf, pos)
            n = (hi << 8) | lo
            if end - pos - 9 < n:
                break
            payload = buf[pos + 9:pos + 9 + n]
            pos += 9 + n
            if kind == DATA:
                self._data(flags, stream & MAX_WINDOW, payload)
            else:
                self._control(kind, flags, stream & MAX_WINDOW, payload)
        self.buf = buf[pos:]
        if self.received > 1 << 30:
            self.out.append(frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", self.received)))
            self.received = 0
        self.flush()

    # ------------------------------------------------------------ frames in

    def _data(self, flags: int, stream: int, payload: bytes) -> None:
        self.received += len(payload)
        if flags & PADDED:
            payload = payload[1:len(payload) - payload[0]]
        agent = self.streams.get(stream)
        if agent is None:
            return
        if agent.rbuf:
            payload = agent.rbuf + payload
            agent.rbuf = b""
        pos, end = 0, len(payload)
        acks = 0
        while end - pos >= 5:
            n = int.from_bytes(payload[pos + 1:pos + 5], "big")
            if end - pos - 5 < n:
                break
            pos += 5 + n
            acks += 1
        if pos < end:
            agent.rbuf = payload[pos:]
        if acks:
            self.load.acked(agent, acks)
        if flags & END_STREAM:
            self._end(stream, "ended without trailers")

    def _control(self, kind: int, flags: int, stream: int, payload: bytes) -> None:
        if kind in (HEADERS, CONTINUATION):
            if kind == HEADERS:
                if flags & PADDED:
                    payload = payload[1:len(payload) - payload[0]]
                if flags & PRIORITY:
                    payload = payload[5:]
                self.headers = (stream, flags & END_STREAM, payload)
            elif self.headers is not None:
                self.headers = (self.headers[0], self.headers[1], self.headers[2] + payload)
            if flags & END_HEADERS and self.headers is not None:
                sid, ends, block = self.headers
                self.headers = None
                if ends:  # trailers (or a trailers-only response): the stream is over
                    self._end(sid, error_kind(literal_headers(block)))
        elif kind == SETTINGS:
            if flags & ACK:
                return
            for i in range(0, len(payload) - 5, 6):
                key, value = struct.unpack_from(">HI", payload, i)
                if key == SETTINGS_INITIAL_WINDOW_SIZE:
                    delta = value - self.initial_window
                    self.initial_window = value
                    for agent in self.streams.values():
                        agent.send_window += delta
                elif key == SETTINGS_MAX_CONCURRENT_STREAMS:
                    self.max_streams = value
            self.out.append(frame(SETTINGS, ACK, 0))
            if not self.ready.done():
                self.ready.set_result(None)
        elif kind == WINDOW_UPDATE:
            grant = struct.unpack(">I", payload)[0] & MAX_WINDOW
            if stream == 0:
                self.send_window += grant
            elif (target := self.streams.get(stream)) is not None:
                target.send_window += grant
        elif kind == PING:
            if not flags & ACK:
                self.out.append(frame(PING, ACK, 0, payload))
        elif kind == RST_STREAM:
            code = struct.unpack(">I", payload)[0]
            self._end(stream, f"RST_STREAM {H2_ERRORS[code] if code < len(H2_ERRORS) else code}")
        elif kind == GOAWAY:
            last, code = struct.unpack_from(">II", payload)
            self.closed = True  # no new streams here; the ones above ``last`` were never seen
            for sid in [s for s in self.streams if s > last & MAX_WINDOW]:
                self._end(sid, f"GOAWAY {H2_ERRORS[code] if code < len(H2_ERRORS) else code}")

    def _end(self, stream: int, kind: str) -> None:
        agent = self.streams.pop(stream, None)
        if agent is not None:
            self.load.ended(agent, kind)

    # ------------------------------------------------------------ frames out

    def open(self, agent: Agent, headers: bytes) -> bool:
        if self.closed or len(self.streams) >= self.max_streams or self.next_id > MAX_WINDOW:
            return False
        sid = self.next_id
        self.next_id += 2
        agent.conn, agent.stream = self, sid
        agent.send_window = self.initial_window
        agent.sent = agent.acked = 0
        agent.unacked_since = None
        agent.rbuf = b""
        self.streams[sid] = agent
        self.out.append(frame(HEADERS, END_HEADERS, sid, headers))
        return True

    def send(self, agent: Agent, message: bytes) -> bool:
        """Queue one gRPC message on the agent's stream; False when flow control does not let it."""
        payload = b"\x00" + len(message).to_bytes(4, "big") + message
        n = len(payload)
        if n > self.send_window or n > agent.send_window:
            return False
        self.send_window -= n
        agent.send_window -= n
        self.out.append(frame(DATA, 0, agent.stream, payload))
        return True

    def cancel(self, agent: Agent) -> None:
        if self.streams.pop(agent.stream, None) is not None:
            self.out.append(frame(RST_STREAM, 0, agent.stream, struct.pack(">I", CANCEL)))

    def finish(self) -> None:
        """Half-close every stream, as an agent that stops does."""
        for sid in self.streams:
            self.out.append(frame(DATA, END_STREAM, sid))

    def flush(self) -> None:
        if self.out and self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"".join(self.out))
        self.out.clear()


class Load:
    """One load process's agents on a fixed beat over ``connections`` HTTP/2 connections."""

    def __init__(self, host: str, port: int, agents: list[Agent], *, interval: float, connections: int,
                 open_rate: float, counts: Counts, flip: float, rng: random.Random,
                 make_report: Callable[[Agent, random.Random], bytes] | None = None) -> None:
        self.host, self.port = host, port
        self.agents = agents
        self.interval = interval
        self.nconn = max(1, connections)
        self.open_rate = open_rate
        self.counts = counts
        self.flip = flip
        self.rng = rng
        self.headers = request_headers(f"{host}:{port}")
        self.conns: list[Connection] = []
        self.make_report = make_report or self._report
        self.stopping = False

    # ------------------------------------------------------------ callbacks from connections

    def acked(self, agent: Agent, n: int) -> None:
        agent.acked += n
        agent.attempt = 0
        agent.unacked_since = None if agent.acked >= agent.sent else time.monotonic()
        now = time.monotonic()
        if self.counts.inside(now):
            self.counts.acks += n

    def ended(self, agent: Agent, kind: str) -> None:
        agent.conn, agent.stream = None, 0
        if self.stopping and kind in ("OK", "connection lost"):
            return
        now = time.monotonic()
        self.counts.error(kind, now)
        agent.open_at = now + backoff.delay(agent.attempt, 0.5, 10.0, 2.0, self.rng)
        agent.attempt += 1

    # ------------------------------------------------------------ the beat

    def _report(self, agent: Agent, rng: random.Random) -> bytes:
        if agent.kind == pb.SITE_KIND_CACHE and rng.random() < self.flip:  # a rare real change
            agent.status = (pb.HEALTH_STATUS_UNHEALTHY if agent.status == pb.HEALTH_STATUS_HEALTHY
                            else pb.HEALTH_STATUS_HEALTHY)
            self.counts.flips += 1
        return pb.HealthReport(site=agent.site, region=agent.region, kind=agent.kind, status=agent.status,
                               capacity=1000, load=500 + rng.uniform(-10, 10), sequence=agent.sequence,
                               agent_id=f"bench-{agent.site}").SerializeToString()

    async def _connection(self) -> Connection:
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(lambda: Connection(self), self.host, self.port)
        await asyncio.wait_for(conn.ready, 10)
        return conn

    def _conn_for(self, index: int) -> Connection | None:
        conn = self.conns[index % self.nconn]
        return None if conn.closed else conn

    async def run(self, first: float) -> None:
        """Beat from ``first`` until the window ends; agent k opens its stream at first + k / open_rate."""
        self.conns = [await self._connection() for _ in range(self.nconn)]
        beats: list[tuple[float, int]] = []
        for k, agent in enumerate(self.agents):
            agent.open_at = first + k / self.open_rate
            beats.append((agent.open_at, k))
        heapq.heapify(beats)
        counts, interval = self.counts, self.interval
        while True:
            now = time.monotonic()
            if now >= counts.until:
                break
            if counts.cpu0 is None and now >= counts.start:
                counts.cpu0 = time.process_time()
            while beats and beats[0][0] <= now:
                due, k = beats[0]
                heapq.heapreplace(beats, (due + interval, k))
                self._beat(self.agents[k], k, due, now)
            for conn in self.conns:
                conn.flush()
            await self._reconnect()
            # One tick's beats go out together: one write per connection, not one per report.
            await asyncio.sleep(max(TICK, min(beats[0][0] if beats else now + TICK, counts.until) - time.monotonic()))
        counts.cpu1 = time.process_time()
        await self._finish()

    def _beat(self, agent: Agent, k: int, due: float, now: float) -> None:
        counts = self.counts
        inside = counts.inside(now)
        if inside and now - due > counts.late_max:
            counts.late_max = now - due
        if agent.stream and agent.unacked_since is not None and now - agent.unacked_since > ACK_TIMEOUT:
            assert agent.conn is not None
            agent.conn.cancel(agent)
            self.ended(agent, "ack timeout")
        if not agent.stream:
            conn = self._conn_for(k)
            if now < agent.open_at or conn is None or not conn.open(agent, self.headers):
                if inside:
                    counts.no_stream += 1
                return
            counts.opened += 1
        assert agent.conn is not None
        agent.sequence += 1
        if not agent.conn.send(agent, self.make_report(agent, self.rng)):
            if inside:
                counts.blocked += 1
            return
        agent.sent += 1
        if agent.unacked_since is None:
            agent.unacked_since = now
        if inside:
            counts.sent += 1

    async def _reconnect(self) -> None:
        for i, conn in enumerate(self.conns):
            if conn.closed and (conn.transport is None or conn.transport.is_closing()):
                try:
                    self.conns[i] = await self._connection()
                except (OSError, TimeoutError) as exc:
                    self.counts.error(f"connect: {type(exc).__name__}", time.monotonic())

    async def _finish(self) -> None:
        """Half-close every stream and wait (bounded) for the controller to end them."""
        self.stopping = True
        for conn in self.conns:
            conn.finish()
            conn.flush()
        deadline = time.monotonic() + 3.0
        while any(c.streams and not c.closed for c in self.conns) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for conn in self.conns:
            if conn.transport is not None:
                conn.transport.close()
