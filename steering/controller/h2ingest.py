"""``HealthService.Report`` on its own listener, gRPC over HTTP/2 spoken with ``h2`` on the event loop.

Why a second way in: a grpc.aio servicer costs 83-147 µs of CPU per report before the controller does
anything (docs/benchmarks.md, "Ingest"): two batch operations per message through gRPC core's completion
queue, a poller thread waking the loop. Here a report is one DATA frame parsed where it arrived, and the
acks of one read go out in one write: the agents are unchanged (grpc.aio clients; any gRPC client works),
only their ``controllers`` point at ``controller.ingest_listen``. Every other RPC, and Report too, stays on
the gRPC listener.

What is spoken: POST ``/steering.v1.HealthService/Report`` with ``content-type: application/grpc``,
uncompressed length-prefixed messages both ways, trailers with ``grpc-status`` and a percent-encoded
``grpc-message``; anything else is answered with a gRPC status (UNIMPLEMENTED for another method or a
compressed message) or, below gRPC, an HTTP/2 error (GOAWAY) that closes only that connection. Credentials
are the gRPC listener's: a bearer token with the agent (or operator) role, and with ``tls.client_ca`` a
client certificate whose URI SANs name the sites (``agentauth``); the stream's headers are sent once they
are accepted, as on the gRPC listener, so an agent writes only to a stream that is not being refused.
The per-report rules are ``Ingest.take``'s, shared with the gRPC path.

The report path skips ``h2`` (docs/architecture.md §9, "The ingest listener"): the listener splits the
bytes into frames itself, and a DATA frame without flags on a stream it serves (most of what arrives) is
read where it lies, credited back with WINDOW_UPDATEs of our own, and its ack is written as a DATA frame
by hand, taken off ``h2``'s outbound windows so they stay exact. Every other frame (and a DATA frame that
ends a stream, is padded, or comes for a stream not served) goes to ``h2`` whole, in order; ``h2`` never
holds part of a frame, so either path may take the next one. ``h2`` parsed, logged (a ``repr`` of every
frame) and accounted each report and ack at about a third of the listener's CPU.
"""

from __future__ import annotations

import asyncio
import ssl
import struct
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import quote

import grpc
import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
from google.protobuf.message import DecodeError
from prometheus_client import Counter, Gauge

from steering import auth, logs
from steering.config import Config
from steering.controller import agentauth
from steering.controller.ingest import Ingest, Refused, Session
from steering.v1 import steering_pb2 as pb

log = logs.get("steering.ingest.h2")

PATH = b"/steering.v1.HealthService/Report"
METHOD = PATH.decode()
MAX_MESSAGE = 1 << 20  # bytes of one report; validation bounds what is in it far below this
MAX_STREAMS = 1000  # concurrent streams per connection (an agent needs one)
MAX_HEADER_LIST = 16 * 1024
HANDSHAKE_SECONDS = 10.0  # a connection that has not sent its preface and settings by then is closed
HIGH_WATER = 1 << 20  # bytes queued for a peer before its connection stops being read

CONNECTIONS = Gauge("steering_ingest_h2_connections", "HTTP/2 connections open on the ingest listener")
PROTOCOL_ERRORS = Counter("steering_ingest_h2_protocol_errors_total",
                          "Ingest listener connections closed for an HTTP/2 or TLS error", ["kind"])
CALLS_REFUSED = Counter("steering_ingest_h2_calls_refused_total",
                        "Ingest listener streams ended before a report: credentials, method or encoding",
                        ["code"])

_PREFIX = struct.Struct(">BI")
_HEAD = struct.Struct(">BHBBI")  # an HTTP/2 frame header: length (24 bits as 8 + 16), type, flags, stream
_ACK_HEAD = struct.Struct(">BHBBIBI")  # a DATA frame's header and a gRPC message prefix, for one ack
_DATA, _HEADERS, _PUSH_PROMISE, _WINDOW_UPDATE, _CONTINUATION = 0x0, 0x1, 0x5, 0x8, 0x9
_END_HEADERS = 0x4
# A quarter of a window is read before it is given back: the connection's starts at 65,535 bytes whatever
# SETTINGS say (RFC 9113 §6.9.2); a stream's is our SETTINGS_INITIAL_WINDOW_SIZE (``_Connection.quarter``).
_CONNECTION_QUARTER = 65_535 // 4
_PREFACE = len(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")


def _frame(message: bytes) -> bytes:
    return _PREFIX.pack(0, len(message)) + message


def _trailers(code: grpc.StatusCode, message: str) -> list[tuple[bytes, bytes]]:
    out = [(b"grpc-status", str(code.value[0]).encode())]
    if message:
        # The gRPC spec's percent-encoding: printable ASCII but '%' as is, the rest as %XX of UTF-8.
        out.append((b"grpc-message", quote(message, safe=" !\"#$&'()*+,-./:;<=>?@[\\]^_`{|}~").encode()))
    return out


@dataclass
class _Stream:
    id: int
    session: Session
    buf: bytearray = field(default_factory=bytearray)
    queued: deque[bytes] = field(default_factory=deque)  # acks waiting for the peer's flow-control window
    unacked: int = 0  # bytes of DATA read on the report path and not yet given back (WINDOW_UPDATE)


class _Connection(asyncio.Protocol):
    def __init__(self, server: H2Ingest) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=False, header_encoding=None, validate_inbound_headers=True))
        self.streams: dict[int, _Stream] = {}
        self.peer = "unknown"
        self.cert_grant: agentauth.Grant | None = None
        self.handshake: asyncio.TimerHandle | None = None
        self.reading_paused = False
        self.preface = _PREFACE  # bytes of the client preface still to come (h2 checks them)
        self.partial = b""  # the start of a frame not whole yet
        self.h2_only = False  # h2 holds part of a frame: every byte goes to it from then on
        self.in_headers = False  # inside a header block (HEADERS without END_HEADERS): every frame to h2
        self.unacked = 0  # connection-level DATA bytes read on the report path, not yet given back
        self.out: list[bytes] = []  # frames for the peer, in order, written at the end of each read
        self.quarter = self.conn.local_settings.initial_window_size // 4  # of a stream's window

    # ------------------------------------------------------------ transport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # cast: uvloop's transports (the shipped daemon's) are not asyncio.Transport subclasses
        self.transport = transport = cast(asyncio.Transport, transport)
        self.peer = _peer(transport.get_extra_info("peername"))
        if self.server.ssl is not None:
            self.cert_grant = _certificate_grant(transport.get_extra_info("ssl_object"))
        self.server.connections.add(self)
        CONNECTIONS.set(len(self.server.connections))
        transport.set_write_buffer_limits(high=HIGH_WATER)
        self.conn.update_settings({h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: MAX_STREAMS,
                                   h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: MAX_HEADER_LIST,
                                   h2.settings.SettingCodes.ENABLE_PUSH: 0})
        self.conn.initiate_connection()
        self.handshake = asyncio.get_running_loop().call_later(HANDSHAKE_SECONDS, self._handshake_expired)
        self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.handshake is not None:
            self.handshake.cancel()
        for st in self.streams.values():
            self.server.ingest.close_stream(st.session)
        self.streams.clear()
        self.server.connections.discard(self)
        CONNECTIONS.set(len(self.server.connections))

    def pause_writing(self) -> None:
        # The peer does not read its acks: stop reading its reports until it does.
        if self.transport is not None and not self.reading_paused:
            self.reading_paused = True
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.transport is not None and self.reading_paused:
            self.reading_paused = False
            self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        if self.h2_only:
            if self._to_h2(data):
                self._flush()
            return
        if self.preface:  # h2 checks the preface; the frames after it are split here
            head, data = data[:self.preface], data[self.preface:]
            self.preface -= len(head)
            if not self._to_h2(head):
                return
        if self.partial:
            data = self.partial + data
            self.partial = b""
        size = len(data)
        pos = 0
        run = -1  # where the frames for h2 that are not handed over yet start
        streams = self.streams
        while size - pos >= 9:
            hi, lo, kind, flags, sid = _HEAD.unpack_from(data, pos)
            length = hi << 16 | lo
            if length > self.conn.max_inbound_frame_size:  # h2 refuses it (FRAME_SIZE_ERROR) from its header
                self.h2_only = True  # should it not, it keeps the frame's start: every later byte is its
                if self._to_h2(data[pos if run < 0 else run:]):
                    self._flush()
                return
            end = pos + 9 + length
            if end > size:
                break
            if kind == _DATA and not flags and not self.in_headers:
                if run >= 0:  # what came before it first: it may open, end or reset this stream
                    if not self._to_h2(data[run:pos]):
                        return
                    run = -1
                st = streams.get(sid & 0x7FFFFFFF)
                if st is not None:
                    self.unacked += length
                    st.unacked += length
                    if st.unacked >= self.quarter:
                        self._put(_HEAD.pack(0, 4, _WINDOW_UPDATE, 0, st.id) + st.unacked.to_bytes(4, "big"))
                        st.unacked = 0
                    self._message(st, data[pos + 9:end])
                    pos = end
                    continue
            elif kind in (_HEADERS, _PUSH_PROMISE, _CONTINUATION):
                self.in_headers = not flags & _END_HEADERS
            if run < 0:
                run = pos
            pos = end
        if run >= 0 and not self._to_h2(data[run:pos]):
            return
        if pos < size:
            self.partial = data[pos:]
        self._credit()
        self._flush()

    def _to_h2(self, data: bytes) -> bool:
        """Whole frames (or the preface) through h2, then their events; False when the connection failed."""
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            self._fail("protocol", exc)
            return False
        except Exception as exc:  # h2 itself failing on odd bytes: this connection ends, not the listener
            log.exception("ingest connection failed in h2", peer=self.peer)
            self._fail("internal", exc)
            return False
        try:
            for ev in events:
                self._event(ev)
        except h2.exceptions.ProtocolError as exc:
            self._fail("protocol", exc)
            return False
        except Exception as exc:  # a bug here ends this connection, never the listener
            log.exception("ingest connection failed", peer=self.peer)
            self._fail("internal", exc)
            return False
        return True

    def _credit(self) -> None:
        """Give back the connection's window the report path read, once a quarter of it is read (a stream's is
        given back in ``data_received``): so a peer never waits for room, as h2 would do it."""
        if self.unacked >= _CONNECTION_QUARTER:
            self._put(_HEAD.pack(0, 4, _WINDOW_UPDATE, 0, 0) + self.unacked.to_bytes(4, "big"))
            self.unacked = 0

    def _put(self, frame: bytes) -> None:
        """``frame`` for the peer, after what h2 has written so far (a stream's HEADERS before its DATA)."""
        pending = self.conn.data_to_send()
        if pending:
            self.out.append(pending)
        self.out.append(frame)

    def _flush(self) -> None:
        out = self.out
        pending = self.conn.data_to_send()
        if out:
            if pending:
                out.append(pending)
            pending = b"".join(out)
            out.clear()
        if pending and self.transport is not None and not self.transport.is_closing():
            self.transport.write(pending)

    def _fail(self, kind: str, exc: BaseException) -> None:
        PROTOCOL_ERRORS.labels(kind=kind).inc()
        log.info("ingest connection closed on an HTTP/2 error", peer=self.peer, error=f"{type(exc).__name__}: {exc}")
        try:
            self.conn.close_connection(h2.errors.ErrorCodes.PROTOCOL_ERROR)
            self._flush()
        except h2.exceptions.ProtocolError:
            pass
        if self.transport is not None:
            self.transport.close()

    def _handshake_expired(self) -> None:
        self.handshake = None
        self._fail("handshake_timeout", TimeoutError(f"no HTTP/2 preface within {HANDSHAKE_SECONDS:g}s"))

    def close(self) -> None:
        """Stop: every stream ends UNAVAILABLE (the agent moves to another replica), then GOAWAY."""
        for st in list(self.streams.values()):
            self._end(st, grpc.StatusCode.UNAVAILABLE, "controller stopping")
        try:
            self.conn.close_connection()
            self._flush()
        except h2.exceptions.ProtocolError:
            pass
        if self.transport is not None:
            self.transport.close()

    # ------------------------------------------------------------ HTTP/2 events

    def _event(self, ev: h2.events.Event) -> None:
        if isinstance(ev, h2.events.DataReceived):
            self._data(ev)
        elif isinstance(ev, h2.events.RequestReceived):
            self._request(ev)
        elif isinstance(ev, h2.events.StreamEnded):
            st = self.streams.get(ev.stream_id)
            if st is not None:  # the agent half-closed: the stream ends well
                self._end(st, grpc.StatusCode.OK, "")
        elif isinstance(ev, h2.events.StreamReset):
            st = self.streams.pop(ev.stream_id, None)
            if st is not None:
                self.server.ingest.close_stream(st.session)
        elif isinstance(ev, h2.events.WindowUpdated):
            self._drain(ev.stream_id)
        elif isinstance(ev, h2.events.RemoteSettingsChanged):
            if self.handshake is not None:
                self.handshake.cancel()
                self.handshake = None
        elif isinstance(ev, h2.events.ConnectionTerminated) and self.transport is not None:
            self.transport.close()

    def _request(self, ev: h2.events.RequestReceived) -> None:
        sid = ev.stream_id
        headers: dict[bytes, bytes] = {}
        for k, v in ev.headers or ():
            headers.setdefault(bytes(k), bytes(v))
        if headers.get(b":method") != b"POST" or headers.get(b":path") != PATH:
            self._refuse(sid, grpc.StatusCode.UNIMPLEMENTED,
                         f"{headers.get(b':path', b'').decode(errors='replace')[:200]!r}: this listener serves "
                         f"only {METHOD} (POST)")
            return
        ctype = headers.get(b"content-type", b"")
        if not (ctype == b"application/grpc" or ctype.startswith((b"application/grpc+", b"application/grpc;"))):
            self.conn.send_headers(sid, [(b":status", b"415"), (b"content-type", b"text/plain")])
            self.conn.send_data(sid, b"content-type: expected application/grpc\n", end_stream=True)
            CALLS_REFUSED.labels(code="unsupported_media_type").inc()
            return
        encoding = headers.get(b"grpc-encoding", b"identity")
        if encoding != b"identity":
            self._refuse(sid, grpc.StatusCode.UNIMPLEMENTED,
                         f"grpc-encoding: {encoding.decode(errors='replace')[:50]!r} not supported; send identity",
                         accept_encoding=True)
            return
        grant = self._grant(headers.get(b"authorization"))
        if isinstance(grant, auth.Denied):
            self._refuse(sid, grant.code, grant.message)
            return
        session = self.server.ingest.open_stream(self.peer, grant)
        self.streams[sid] = _Stream(sid, session)
        self.conn.send_headers(sid, [(b":status", b"200"), (b"content-type", b"application/grpc")])

    def _grant(self, authorization: bytes | None) -> agentauth.Grant | auth.Denied:
        grants = []
        tokens = self.server.tokens
        if tokens is not None:
            header = authorization.decode(errors="replace") if authorization is not None else None
            found = auth.authorize(tokens, auth.bearer(header), METHOD, self.server.roles)
            if isinstance(found, auth.Denied):
                # As the gRPC interceptor: the token's name at most, never the secret.
                auth.log_denied(found, peer=self.peer, method=METHOD)
                return found
            grants.append(agentauth.token_grant(found))
        if self.cert_grant is not None:
            grants.append(self.cert_grant)
        return agentauth.combine(grants)

    def _data(self, ev: h2.events.DataReceived) -> None:
        """DATA that h2 read (it ends its stream, is padded, or its stream is not served): h2 counted it."""
        sid = ev.stream_id
        if ev.flow_controlled_length:
            self.conn.acknowledge_received_data(ev.flow_controlled_length, sid)
        st = self.streams.get(sid)
        if st is not None:  # else a stream already ended (refused): what the peer still had in flight
            self._message(st, ev.data or b"")

    def _message(self, st: _Stream, data: bytes) -> None:
        """``data`` of ``st``'s length-prefixed messages: each whole report is taken and acked."""
        buf = st.buf
        if not buf and len(data) >= 5:  # the usual case: one whole report in one frame, nothing before it
            compressed, length = _PREFIX.unpack_from(data)
            if not compressed and len(data) == 5 + length:
                self._report(st, data[5:])
                return
        buf += data
        while len(buf) >= 5:
            compressed, length = _PREFIX.unpack_from(buf)
            if compressed:
                self._end(st, grpc.StatusCode.UNIMPLEMENTED, "a compressed message without grpc-encoding")
                return
            if length > MAX_MESSAGE:
                self._end(st, grpc.StatusCode.RESOURCE_EXHAUSTED,
                          f"report of {length} bytes; at most {MAX_MESSAGE}")
                return
            if len(buf) < 5 + length:
                return
            body = bytes(buf[5:5 + length])
            del buf[:5 + length]
            if not self._report(st, body):
                return

    def _report(self, st: _Stream, body: bytes) -> bool:
        """One report of ``st``: acked, or the stream ended (False)."""
        try:
            report = pb.HealthReport.FromString(body)
        except DecodeError:
            self._end(st, grpc.StatusCode.INVALID_ARGUMENT, "report: not a HealthReport message")
            return False
        try:
            ack = self.server.ingest.take_wire(st.session, report)
        except Refused as exc:
            self._end(st, exc.code, exc.message)
            return False
        n = len(ack) + 5
        stream = self.conn.streams.get(st.id)
        if st.queued or stream is None or n > self.conn.max_outbound_frame_size or \
                self.conn.outbound_flow_control_window < n or stream.outbound_flow_control_window < n:
            self._send(st, _frame(ack))
            return True
        # By hand, and off h2's windows as its send_data would (they stay exact for the frames it sends).
        self.conn.outbound_flow_control_window -= n
        stream.outbound_flow_control_window -= n
        self._put(_ACK_HEAD.pack(0, n, _DATA, 0, st.id, 0, n - 5) + ack)
        return True

    # ------------------------------------------------------------ sending

    def _send(self, st: _Stream, data: bytes) -> None:
        if st.queued or self.conn.local_flow_control_window(st.id) < len(data):
            st.queued.append(data)
            if len(st.queued) > 1000:  # the agent stopped reading acks long ago
                self._end(st, grpc.StatusCode.RESOURCE_EXHAUSTED, "acks not read; stream closed")
            return
        self.conn.send_data(st.id, data)

    def _drain(self, sid: int) -> None:
        """Send the acks a window update (``sid`` 0: the connection's) made room for."""
        one = self.streams.get(sid)
        for st in (one,) if one is not None else self.streams.values() if sid == 0 else ():
            while st.queued and self.conn.local_flow_control_window(st.id) >= len(st.queued[0]):
                self.conn.send_data(st.id, st.queued.popleft())

    def _end(self, st: _Stream, code: grpc.StatusCode, message: str) -> None:
        """End ``st`` with trailers (acks that wait for the window are dropped: the stream is over)."""
        self.streams.pop(st.id, None)
        self.server.ingest.close_stream(st.session)
        try:
            self.conn.send_headers(st.id, _trailers(code, message), end_stream=True)
            if code != grpc.StatusCode.OK and self._open_remote(st.id):
                # The agent may still be writing: tell it to stop (gRPC servers do the same after trailers).
                self.conn.reset_stream(st.id, h2.errors.ErrorCodes.NO_ERROR)
        except h2.exceptions.StreamClosedError:
            pass

    def end_idle(self, cutoff: float) -> None:
        """End the streams whose last report is older than ``cutoff`` (monotonic), as the gRPC listener does."""
        idle = [st for st in self.streams.values() if st.session.last_report <= cutoff]
        for st in idle:
            self.server.ingest.log_idle(st.session)
            self._end(st, grpc.StatusCode.DEADLINE_EXCEEDED, self.server.ingest.idle_message())
        if idle:
            self._flush()

    def _refuse(self, sid: int, code: grpc.StatusCode, message: str, accept_encoding: bool = False) -> None:
        """A Trailers-Only answer: the stream ends before any report."""
        CALLS_REFUSED.labels(code=code.name.lower()).inc()
        headers = [(b":status", b"200"), (b"content-type", b"application/grpc"), *_trailers(code, message)]
        if accept_encoding:
            headers.append((b"grpc-accept-encoding", b"identity"))
        self.conn.send_headers(sid, headers, end_stream=True)
        if self._open_remote(sid):
            self.conn.reset_stream(sid, h2.errors.ErrorCodes.NO_ERROR)

    def _open_remote(self, sid: int) -> bool:
        # Called after our END_STREAM: a stream the peer had half-closed is CLOSED now, else HALF_CLOSED_LOCAL.
        stream = self.conn.streams.get(sid)
        return stream is not None and not stream.closed


def _peer(name: Any) -> str:
    """As grpc's ``context.peer()`` names it: ``ipv4:127.0.0.1:5000``, ``ipv6:[::1]:5000``."""
    if isinstance(name, tuple) and len(name) >= 2:
        host, port = name[0], name[1]
        return f"ipv6:[{host}]:{port}" if ":" in str(host) else f"ipv4:{host}:{port}"
    return "unknown"


def _certificate_grant(ssl_object: ssl.SSLObject | None) -> agentauth.Grant | None:
    """The grant of the peer's client certificate (None: TLS without client certificates)."""
    if ssl_object is None:
        return None
    cert: dict[str, Any] = dict(ssl_object.getpeercert() or {})
    if not cert:
        return agentauth.certificate_grant({})
    uris = [str(v).encode() for k, v in cert.get("subjectAltName", ()) if k == "URI"]
    names = [str(v).encode() for rdn in cert.get("subject", ()) for k, v in rdn if k == "commonName"]
    return agentauth.certificate_grant({"peer_uri": uris, "x509_common_name": names or [b"?"],
                                        "x509_pem_cert": [b"-"]})


class H2Ingest:
    """The ingest listener: ``start`` binds, ``close`` ends every stream UNAVAILABLE and closes."""

    def __init__(self, ingest: Ingest, config: Config, listen: str) -> None:
        self.ingest = ingest
        self.config = config
        self.listen = listen
        self.tokens = auth.tokens_for(config)
        self.roles = auth.allowed_roles(METHOD) or frozenset()
        self.ssl = auth.server_ssl_context(config, alpn=["h2"])
        self.connections: set[_Connection] = set()
        self._server: asyncio.Server | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self.port = 0

    async def start(self) -> int:
        from steering.addr import parse_hostport

        host, port = parse_hostport(self.listen)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Connection(self), host.strip("[]"), port,
                                                ssl=self.ssl, reuse_address=True, backlog=1024)
        self.port = self._server.sockets[0].getsockname()[1]
        self._sweeper = asyncio.create_task(self._sweep(), name="ingest-h2-idle")
        log.info("ingest listening", listen=self.listen, port=self.port, tls=self.ssl is not None)
        return self.port

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._server is not None:
            self._server.close()
        for c in list(self.connections):
            c.close()
        if self._server is not None:
            try:
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
            except TimeoutError:
                pass

    async def _sweep(self) -> None:
        """Ends the streams idle for ``ingest.idle_seconds`` (DEADLINE_EXCEEDED, as the gRPC listener)."""
        while True:
            await asyncio.sleep(max(0.05, self.ingest.idle_seconds / 4))
            cutoff = time.monotonic() - self.ingest.idle_seconds
            for c in list(self.connections):
                c.end_idle(cutoff)
