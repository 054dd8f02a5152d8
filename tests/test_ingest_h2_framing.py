"""The ingest listener's own framing (``h2ingest``: reports read and acked without ``h2``), against an ``h2``
client, in memory: the client's bytes reach the listener cut at any places, the listener's bytes go back
to the client, which reads them as a strict HTTP/2 peer (a frame beyond its window, a DATA frame before
its stream's HEADERS, a bad frame: it raises). Whatever the cuts, every report is acked once, in order,
on its own stream, the streams that end get their trailers, and the windows keep both sides moving
(more reports than one window holds). The sockets, TLS and the agents themselves: tests/test_ingest_h2.py.
"""

from __future__ import annotations

import itertools
import struct
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.exceptions
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from steering.controller import h2ingest
from steering.controller.ingest import Ingest
from steering.v1 import steering_pb2 as pb
from tests.support.controller import make_config
from tests.support.reporters import REGIONS, report

CONFIG = make_config(["http://127.0.0.1:1"])


class _Store:
    """The ingest's etcd side is not used here: no writer task runs."""


class _Transport:
    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written.append(bytes(data))

    def take(self) -> bytes:
        out = b"".join(self.written)
        self.written.clear()
        return out

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def _message(body: bytes) -> bytes:
    return struct.pack(">BI", 0, len(body)) + body


class _Client:
    """An h2 client whose every received byte is checked by h2, and who gives back the windows it reads."""

    def __init__(self) -> None:
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
        self.conn.initiate_connection()
        self.acks: dict[int, list[int]] = {}
        self.trailers: dict[int, dict[bytes, bytes]] = {}
        self.buf: dict[int, bytes] = {}

    def receive(self, data: bytes) -> None:
        for ev in self.conn.receive_data(data):
            if isinstance(ev, h2.events.DataReceived):
                self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                buf = self.buf.get(ev.stream_id, b"") + (ev.data or b"")
                while len(buf) >= 5 and len(buf) >= 5 + struct.unpack_from(">I", buf, 1)[0]:
                    n = struct.unpack_from(">I", buf, 1)[0]
                    self.acks.setdefault(ev.stream_id, []).append(pb.ReportAck.FromString(buf[5:5 + n]).sequence)
                    buf = buf[5 + n:]
                self.buf[ev.stream_id] = buf
            elif isinstance(ev, h2.events.TrailersReceived):
                self.trailers[ev.stream_id] = dict(ev.headers or ())
            elif isinstance(ev, (h2.events.StreamReset, h2.events.ConnectionTerminated)):
                raise AssertionError(f"the listener ended something: {ev}")


def _open(client: _Client, sid: int) -> None:
    client.conn.send_headers(sid, [(b":method", b"POST"), (b":scheme", b"http"), (b":path", h2ingest.PATH),
                                   (b":authority", b"x"), (b"content-type", b"application/grpc"),
                                   (b"te", b"trailers")])


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cuts=st.lists(st.integers(1, 700), min_size=1, max_size=30), splits=st.lists(st.integers(1, 40), max_size=20),
       pings=st.integers(0, 3))
async def test_reports_cut_anywhere_are_each_acked_once_in_order_and_the_windows_keep_moving(
        cuts: list[int], splits: list[int], pings: int) -> None:
    ingest = Ingest(CONFIG, _Store(), "c1", lambda: True)  # type: ignore[arg-type]
    server = h2ingest.H2Ingest(ingest, CONFIG, "127.0.0.1:0")
    transport = _Transport()
    conn = h2ingest._Connection(server)
    conn.connection_made(transport)  # type: ignore[arg-type]
    client = _Client()
    client.receive(transport.take())  # the listener's SETTINGS
    sites = {1: REGIONS[0], 3: REGIONS[1], 5: REGIONS[2]}
    for sid in sites:
        _open(client, sid)
    # 1,500 reports of ~200 bytes over three streams: several windows' worth (65,535 bytes), so the listener must
    # give them back; some reports split over frames (the `splits`), the last stream ended by the client.
    sent: dict[int, list[int]] = {sid: [] for sid in sites}
    cut_at = itertools.cycle(cuts)
    pending = b""

    def pump(final: bool = False) -> None:
        nonlocal pending
        pending += client.conn.data_to_send()
        while pending and (final or len(pending) > 700):
            n = next(cut_at)
            conn.data_received(pending[:n])
            pending = pending[n:]
            client.receive(transport.take())
            pending += client.conn.data_to_send()

    split = itertools.cycle(splits) if splits else None
    for seq in range(1, 501):
        for sid, site in sites.items():
            checks = [pb.CheckResult(name=f"check-{i}", kind="http", ok=True, detail="x" * 40) for i in range(3)]
            body = _message(report(site, sequence=seq, load=float(seq), capacity=100.0,
                                   checks=checks).SerializeToString())
            while client.conn.local_flow_control_window(sid) < len(body):
                pump(final=True)
                assert client.conn.local_flow_control_window(sid) >= len(body), "the listener gave no window back"
            if split is not None and seq % 7 == 0:
                at = min(next(split), len(body) - 1)
                client.conn.send_data(sid, body[:at])
                client.conn.send_data(sid, body[at:])
            else:
                client.conn.send_data(sid, body)
            sent[sid].append(seq)
        if pings and seq % 97 == 0:
            client.conn.ping(seq.to_bytes(8, "big"))
        pump()
    client.conn.end_stream(5)
    pump(final=True)
    assert client.acks == sent
    assert client.trailers == {5: {b"grpc-status": b"0"}}
    assert set(ingest.sessions) == {s.session.key for s in conn.streams.values()} and set(conn.streams) == {1, 3}
    # h2's view of its outbound windows stayed exact: the client's view of what it may still receive.
    for sid in (1, 3):
        assert conn.conn.streams[sid].outbound_flow_control_window == client.conn._get_stream_by_id(sid) \
            ._inbound_window_manager.current_window_size
    assert conn.conn.outbound_flow_control_window == client.conn._inbound_flow_control_window_manager \
        .current_window_size
    assert not transport.closed
    conn.connection_lost(None)
    assert ingest.sessions == {}


async def test_data_inside_a_header_block_and_an_oversized_frame_end_the_connection() -> None:
    for bad in (b"inside", b"oversized"):
        ingest = Ingest(CONFIG, _Store(), "c1", lambda: True)  # type: ignore[arg-type]
        transport = _Transport()
        conn = h2ingest._Connection(h2ingest.H2Ingest(ingest, CONFIG, "127.0.0.1:0"))
        conn.connection_made(transport)  # type: ignore[arg-type]
        client = _Client()
        client.receive(transport.take())
        _open(client, 1)
        client.conn.send_data(1, _message(report(REGIONS[0], sequence=1).SerializeToString()))
        conn.data_received(client.conn.data_to_send())
        client.receive(transport.take())
        assert client.acks == {1: [1]}
        if bad == b"inside":  # HEADERS without END_HEADERS, then DATA on the served stream
            frame = struct.pack(">BHBBI", 0, 1, 0x1, 0, 3) + b"\x82"
            data = _message(report(REGIONS[0], sequence=2).SerializeToString())
            frame += struct.pack(">BHBBI", 0, len(data), 0x0, 0, 1) + data
        else:  # one byte more than the frame size we allow
            n = conn.conn.max_inbound_frame_size + 1
            frame = struct.pack(">BHBBI", n >> 16, n & 0xFFFF, 0x0, 0, 1) + b"\0" * n
        conn.data_received(frame)
        assert transport.closed, bad
        goaway = transport.take()
        assert goaway and goaway[3] == 0x7, bad  # GOAWAY
        assert client.acks == {1: [1]}  # the report after the bad frame was not taken
        conn.connection_lost(None)
        assert ingest.sessions == {}



@settings(max_examples=200, deadline=None)
@given(steps=st.lists(st.tuples(st.integers(1, 2**40), st.booleans()), min_size=1, max_size=12),
       replica=st.text(min_size=1, max_size=40), start=st.integers(0, 2**64 - 2**45))
async def test_the_listeners_hand_made_acks_are_what_protobuf_writes(steps: list[tuple[int, bool]],
                                                                     replica: str, start: int) -> None:
    # take_wire puts an ack together from the sequence's varint and a tail serialized once per leader flag.
    from steering.controller import agentauth

    leading = [False]
    ingest = Ingest(CONFIG, _Store(), replica, lambda: leading[0])  # type: ignore[arg-type]
    session = ingest.open_stream("test", agentauth.OPEN)
    seq = start
    for gap, lead in steps:
        seq += gap  # strictly increasing, anywhere up to near 2**64 (varints of 1 to 10 bytes)
        leading[0] = lead
        got = ingest.take_wire(session, report(REGIONS[0], sequence=seq))
        assert got == pb.ReportAck(sequence=seq, controller_id=replica, leader=lead).SerializeToString()
        assert pb.ReportAck.FromString(got).sequence == seq
    ingest.close_stream(session)
