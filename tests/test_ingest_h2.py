"""The ingest listener (``controller.ingest_listen``): agents' reports over HTTP/2 without grpc core.

Real sockets throughout: the controller on a real etcd, agents as grpc.aio clients (the agent's own
``ReportStream`` and the tests' reporter), and a raw HTTP/2 client (``h2``) for what a gRPC client never
sends: other methods, compressed or oversized messages, garbage, a peer that never reads its acks.
"""

from __future__ import annotations

import asyncio
import random
import socket
import struct
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import h2.config
import h2.connection
import h2.events
import pytest
import yaml
from structlog.testing import capture_logs

from agents.config import Backoff
from agents.stream import ReportStream
from steering.controller import h2ingest
from steering.controller.server import Controller
from steering.etcdproc import EtcdCluster
from steering.store import Store
from steering.v1 import steering_pb2 as pb
from tests.support import eventually
from tests.support.controller import ControllerProcess, Running, make_config, start_controller, write_config
from tests.support.pki import make_pki
from tests.support.reporters import exchange, report, send, send_refused

EAST, VIEW = "east-secret-123", "viewer-secret-1"


@pytest.fixture
async def run(etcd: EtcdCluster) -> AsyncIterator[Running]:
    r = await start_controller(make_config(etcd.endpoints, {"controller": {"ingest_listen": "127.0.0.1:0"}}),
                               agents=False)
    try:
        yield r
    finally:
        await r.stop()


def target(r: Running) -> str:
    return f"127.0.0.1:{r.ctl.ingest_port}"


class RawH2:
    """A blocking HTTP/2 client on a real socket: one request's headers, frames and trailers, by hand."""

    def __init__(self, port: int, window_updates: bool = True) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
        self.conn.initiate_connection()
        self.sock.sendall(self.conn.data_to_send())
        self.window_updates = window_updates  # False: a peer that never gives the server room for its acks
        self.headers: dict[int, dict[bytes, bytes]] = {}
        self.data: dict[int, bytearray] = {}
        self.ended: set[int] = set()

    def request(self, path: bytes = h2ingest.PATH, ctype: bytes = b"application/grpc",
                extra: tuple[tuple[bytes, bytes], ...] = ()) -> int:
        sid = self.conn.get_next_available_stream_id()
        self.conn.send_headers(sid, [(b":method", b"POST"), (b":scheme", b"http"), (b":path", path),
                                     (b":authority", b"127.0.0.1"), (b"content-type", ctype), (b"te", b"trailers"),
                                     *extra])
        self.sock.sendall(self.conn.data_to_send())
        return sid

    def send(self, sid: int, data: bytes, end: bool = False) -> None:
        """Send ``data`` on ``sid`` as the windows allow (reading the server meanwhile); stops once it ended."""
        while data and sid not in self.ended:
            room = min(self.conn.local_flow_control_window(sid), self.conn.max_outbound_frame_size)
            if room <= 0:
                self._pump()
                continue
            self.conn.send_data(sid, data[:room])
            data = data[room:]
            self.sock.sendall(self.conn.data_to_send())
        if end and sid not in self.ended:
            self.conn.end_stream(sid)
            self.sock.sendall(self.conn.data_to_send())

    def _pump(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise AssertionError("connection closed before the stream ended")
        for ev in self.conn.receive_data(chunk):
            sid = getattr(ev, "stream_id", 0)
            if isinstance(ev, (h2.events.ResponseReceived, h2.events.TrailersReceived)):
                self.headers.setdefault(sid, {}).update(dict(ev.headers or ()))
            elif isinstance(ev, h2.events.DataReceived):
                self.data.setdefault(sid, bytearray()).extend(ev.data or b"")
                if self.window_updates:
                    self.conn.acknowledge_received_data(ev.flow_controlled_length, sid)
            elif isinstance(ev, (h2.events.StreamEnded, h2.events.StreamReset)):
                self.ended.add(sid)
        self.sock.sendall(self.conn.data_to_send())

    def outcome(self, sid: int) -> tuple[dict[bytes, bytes], bytes]:
        """Every header and trailer of ``sid`` (merged) and its DATA, once it ended or was reset."""
        while sid not in self.ended:
            self._pump()
        return self.headers.get(sid, {}), bytes(self.data.get(sid, b""))

    def close(self) -> None:
        self.sock.close()


def message(body: bytes, compressed: int = 0) -> bytes:
    return struct.pack(">BI", compressed, len(body)) + body


def acks_in(data: bytes) -> list[int]:
    out = []
    while data:
        _, n = struct.unpack_from(">BI", data)
        out.append(pb.ReportAck.FromString(data[5:5 + n]).sequence)
        data = data[5 + n:]
    return out


async def test_reports_are_acked_stored_and_refused_as_on_grpc(run: Running, etcd: EtcdCluster) -> None:
    t = target(run)
    acks = await send(t, [report("us-east-1", sequence=1), report("us-east-1", sequence=2)])
    assert [(a.sequence, a.controller_id, a.leader) for a in acks] == [(1, "c1", True), (2, "c1", True)]
    err = await send_refused(t, [report("mars-1")])
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.details() == "site: unknown region 'mars-1' (kind region reports use the region id)"
    acks, refusal = await exchange(t, [report("eu-west-1", sequence=5), report("eu-west-1", sequence=4)])
    assert [a.sequence for a in acks] == [5]
    assert refusal is not None and refusal.details() == "sequence: 4 is not above the previous 5 on this stream"
    # Another method of the API: not here (UNIMPLEMENTED names the one it serves).
    async with grpc.aio.insecure_channel(t) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await ch.unary_unary("/steering.v1.OperatorService/Status")(b"")
    assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert "serves only /steering.v1.HealthService/Report" in (info.value.details() or "")
    store = Store(run.ctl.config.etcd)
    await store.open()
    try:
        records = await eventually(lambda: _health(store, 2), what="both sites' records in etcd")
        assert records["us-east-1@c1"] == "healthy" and records["eu-west-1@c1"] == "healthy"
    finally:
        await store.close()
    assert run.ctl.ingest.sessions == {}  # every stream's session went with it


async def _health(store: Store, n: int) -> dict[str, str]:
    records = await store.get_health()
    return {k: h.status for k, h in records.items()} if len(records) >= n else {}


async def test_the_agent_reports_and_moves_on_when_the_listener_stops(etcd: EtcdCluster) -> None:
    cfg = make_config(etcd.endpoints, {"controller": {"ingest_listen": "127.0.0.1:0"}})
    first = await start_controller(cfg, agents=False)
    second = await start_controller(cfg, name="c2", agents=False, lead=False)
    stream = ReportStream([target(first), target(second)], site="us-west-2",
                          policy=Backoff(initial_seconds=0.05, max_seconds=0.2, multiplier=2), rng=random.Random(2))
    stop = asyncio.Event()
    runner = asyncio.create_task(stream.run(stop))
    feeder = asyncio.create_task(_feed(stream, "us-west-2"))
    try:
        await eventually(lambda: stream.acks >= 3, what="acks through the first ingest listener")
        assert stream.last_ack is not None and stream.last_ack.controller_id == "c1"
        assert len(first.ctl.ingest.sessions) == 1 and first.ctl.ingest.streams("us-west-2") == 1
        await first.stop()  # its streams end UNAVAILABLE; the agent goes to the next controller
        await eventually(lambda: stream.last_ack is not None and stream.last_ack.controller_id == "c2",
                         what="acks from the second controller")
    finally:
        stop.set()
        feeder.cancel()
        await asyncio.gather(runner, feeder, return_exceptions=True)
        await second.stop()


async def _feed(stream: ReportStream, site: str) -> None:
    seq = 0
    while True:
        seq += 1
        stream.offer(pb.HealthReport(site=site, region=site, kind=pb.SITE_KIND_REGION,
                                     status=pb.HEALTH_STATUS_HEALTHY, sequence=seq, agent_id="agent-h2"))
        await asyncio.sleep(0.05)


def write_tokens(path: Path) -> Path:
    path.write_text(yaml.safe_dump({"tokens": [
        {"name": "agent-east", "role": "agent", "token": EAST, "sites": ["us-east-1"]},
        {"name": "watcher", "role": "viewer", "token": VIEW},
    ]}))
    return path


async def test_tokens_name_the_sites_and_the_agent_sees_the_refusal(etcd: EtcdCluster, tmp_path: Path) -> None:
    cfg = make_config(etcd.endpoints, {"controller": {"ingest_listen": "127.0.0.1:0"},
                                       "auth": {"tokens_file": str(write_tokens(tmp_path / "tokens.yaml"))}})
    r = await start_controller(cfg, agents=False)
    t = target(r)
    try:
        assert (await send(t, [report("us-east-1")], token=EAST))[0].sequence == 1
        err = await send_refused(t, [report("eu-west-1", agent="agent-east-1")], token=EAST)
        assert (err.code(), err.details()) == (grpc.StatusCode.PERMISSION_DENIED,
                                               "site: token agent-east may not report 'eu-west-1'")
        err = await send_refused(t, [report("us-east-1")])
        assert (err.code(), err.details()) == (grpc.StatusCode.UNAUTHENTICATED, "authorization: missing bearer token")
        err = await send_refused(t, [report("us-east-1")], token="not-a-token-1")
        assert (err.code(), err.details()) == (grpc.StatusCode.UNAUTHENTICATED, "authorization: invalid bearer token")
        err = await send_refused(t, [report("us-east-1")], token=VIEW)
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED and "role viewer" in (err.details() or "")
        # The agent itself, with a wrong token and reports to write at once: every session ends UNAUTHENTICATED.
        stream = ReportStream([t], site="us-east-1", metadata=[("authorization", "Bearer not-a-token-1")],
                              policy=Backoff(initial_seconds=0.01, max_seconds=0.02, multiplier=2),
                              rng=random.Random(3))
        stop = asyncio.Event()
        with capture_logs() as logs:
            runner = asyncio.create_task(stream.run(stop))
            feeder = asyncio.create_task(_feed(stream, "us-east-1"))
            try:
                await eventually(lambda: len(stream.pauses) >= 5, what="5 refused sessions")
            finally:
                stop.set()
                feeder.cancel()
                await asyncio.gather(runner, feeder, return_exceptions=True)
        errors = [e["error"] for e in logs if e["event"] == "controller stream retry"]
        assert errors and all(e == f"{t}: UNAUTHENTICATED: authorization: invalid bearer token" for e in errors)
        assert stream.acks == 0 and r.ctl.ingest.sessions == {}
    finally:
        await r.stop()


async def test_client_certificates_name_the_sites(etcd: EtcdCluster, tmp_path: Path) -> None:
    pki = make_pki(tmp_path, clients={"nyc": ["spiffe://steering.test/site/oc-nyc-1"], "plain": []})
    cfg = make_config(etcd.endpoints, {"controller": {"ingest_listen": "127.0.0.1:0"},
                                       "tls": {"cert": str(pki["server_cert"]), "key": str(pki["server_key"]),
                                               "client_ca": str(pki["ca"])}})
    r = await start_controller(cfg, agents=False)
    ca = pki["ca"].read_bytes()

    def creds(who: str) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(ca, pki[f"{who}_key"].read_bytes(), pki[f"{who}_cert"].read_bytes())

    t = target(r)
    try:
        assert await send(t, [report("oc-nyc-1", "us-east-1")], credentials=creds("nyc"))
        err = await send_refused(t, [report("us-east-1")], credentials=creds("nyc"))
        assert (err.code(), err.details()) == (grpc.StatusCode.PERMISSION_DENIED,
                                               "site: certificate nyc may not report 'us-east-1'")
        err = await send_refused(t, [report("us-east-1")], credentials=creds("plain"))
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "names no site (URI SAN .../site/<id>)" in (err.details() or "")
        # Without a client certificate the TLS handshake fails: no stream, and the listener lives on.
        async with grpc.aio.secure_channel(t, grpc.ssl_channel_credentials(ca)) as ch:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await ch.unary_unary(h2ingest.METHOD)(b"", timeout=3)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        assert await send(t, [report("oc-nyc-1", "us-east-1", sequence=2)], credentials=creds("nyc"))
    finally:
        await r.stop()


async def test_what_no_grpc_client_sends_ends_one_stream_or_connection(run: Running) -> None:
    port = run.ctl.ingest_port

    def check() -> None:
        c = RawH2(port)
        try:
            sid = c.request()
            c.send(sid, message(b"\xff\xff\xff"))  # not a HealthReport
            h, _ = c.outcome(sid)
            assert h[b"grpc-status"] == b"3" and h[b"grpc-message"] == b"report: not a HealthReport message"
            sid = c.request()
            c.send(sid, message(b"x" * 10, compressed=1))
            assert c.outcome(sid)[0][b"grpc-status"] == b"12"
            sid = c.request()
            c.send(sid, struct.pack(">BI", 0, h2ingest.MAX_MESSAGE + 1))
            h, _ = c.outcome(sid)
            assert h[b"grpc-status"] == b"8" and b"at most" in h[b"grpc-message"]
            sid = c.request(extra=((b"grpc-encoding", b"gzip"),))
            assert c.outcome(sid)[0][b"grpc-status"] == b"12"
            sid = c.request(ctype=b"text/plain")
            h, body = c.outcome(sid)
            assert h[b":status"] == b"415" and b"application/grpc" in body
            # A report split over frames at every awkward place still makes one report, then a clean end.
            body_ = report("us-east-1", sequence=9).SerializeToString()
            sid = c.request()
            whole = message(body_)
            for i in range(0, len(whole), 3):
                c.send(sid, whole[i:i + 3])
            c.send(sid, b"", end=True)
            h, data = c.outcome(sid)
            assert h[b"grpc-status"] == b"0" and acks_in(data) == [9]
        finally:
            c.close()
        # Not HTTP/2 at all: GOAWAY and the connection closes.
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" * 3)
            assert _read_to_close(s)

    before = _sample("steering_ingest_h2_protocol_errors_total", {"kind": "protocol"})
    await asyncio.to_thread(check)
    assert _sample("steering_ingest_h2_protocol_errors_total", {"kind": "protocol"}) == before + 1
    assert await send(target(run), [report("us-east-1", sequence=20)])  # still serving
    await eventually(lambda: run.ctl.ingest.sessions == {}, what="every session gone")


def _read_to_close(s: socket.socket) -> bytes:
    out = b""
    while chunk := s.recv(65536):
        out += chunk
    return out


def _sample(name: str, labels: dict[str, str]) -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_a_peer_that_never_reads_its_acks_is_bounded(run: Running) -> None:
    def flood() -> dict[bytes, bytes]:
        c = RawH2(run.ctl.ingest_port, window_updates=False)
        try:
            sid = c.request()
            batch = b"".join(message(report("us-east-1", sequence=n).SerializeToString()) for n in range(1, 6001))
            for i in range(0, len(batch), 16000):
                c.send(sid, batch[i:i + 16000])
            return c.outcome(sid)[0]
        finally:
            c.close()

    headers = await asyncio.to_thread(flood)
    assert headers[b"grpc-status"] == b"8" and headers[b"grpc-message"] == b"acks not read; stream closed"
    await eventually(lambda: run.ctl.ingest.sessions == {}, what="the flooding stream's session gone")


async def test_idle_streams_and_silent_connections_are_closed(etcd: EtcdCluster,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(h2ingest, "HANDSHAKE_SECONDS", 0.3)
    ctl = Controller(make_config(etcd.endpoints), "c1", "127.0.0.1:0", ingest_listen="127.0.0.1:0")
    ctl.ingest.idle_seconds = 0.4
    await ctl.start()
    try:
        def idle() -> dict[bytes, bytes]:
            c = RawH2(ctl.ingest_port)
            try:
                sid = c.request()
                c.send(sid, message(report("us-east-1").SerializeToString()))
                return c.outcome(sid)[0]
            finally:
                c.close()

        headers = await asyncio.to_thread(idle)
        assert headers[b"grpc-status"] == b"4" and b"open a new stream" in headers[b"grpc-message"]

        def silent() -> bytes:
            with socket.create_connection(("127.0.0.1", ctl.ingest_port), timeout=5) as s:
                return _read_to_close(s)

        assert await asyncio.to_thread(silent)  # our SETTINGS, then GOAWAY, then the close
        await eventually(lambda: ctl.ingest.sessions == {}, what="the idle stream's session gone")
    finally:
        await ctl.stop()


def _mutations(seed: int, valid: bytes) -> list[bytes]:
    """A valid client's bytes after its preface, mangled: bytes flipped, cut short, random runs inserted."""
    rng = random.Random(seed)
    cases = []
    for _ in range(120):
        b = bytearray(valid)
        for _ in range(rng.randint(1, 6)):
            kind = rng.random()
            pos = rng.randrange(len(b))
            if kind < 0.5:
                b[pos] = rng.randrange(256)
            elif kind < 0.7:
                del b[pos:]
                if not b:
                    b = bytearray(valid[:1])
            else:
                b[pos:pos] = rng.randbytes(rng.randint(1, 40))
        cases.append(bytes(b))
    cases += [rng.randbytes(rng.randint(1, 300)) for _ in range(40)]
    return cases


def _valid_client_bytes() -> bytes:
    c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
    c.initiate_connection()
    c.send_headers(1, [(b":method", b"POST"), (b":scheme", b"http"), (b":path", h2ingest.PATH),
                       (b":authority", b"x"), (b"content-type", b"application/grpc"), (b"te", b"trailers")])
    c.send_data(1, message(report("us-east-1", sequence=3).SerializeToString()))
    c.send_data(1, message(report("us-east-1", sequence=4).SerializeToString()), end_stream=True)
    c.ping(b"12345678")
    c.send_headers(3, [(b":method", b"POST"), (b":scheme", b"http"), (b":path", b"/other"),
                       (b":authority", b"x"), (b"content-type", b"application/grpc")], end_stream=True)
    return c.data_to_send()


async def test_mangled_client_bytes_never_break_the_listener(etcd: EtcdCluster, tmp_path: Path) -> None:
    # The shipped command (uvloop): a valid client's conversation, mangled 160 ways; each connection may end
    # as it will, the listener must not raise into its event loop, and a report is still acked after.
    from tests.support import free_port

    port = free_port()
    ctl = ControllerProcess(tmp_path, write_config(tmp_path / "steering.yaml", etcd.endpoints),
                            extra=["--ingest-addr", f"127.0.0.1:{port}"])
    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
    valid = _valid_client_bytes()
    assert valid.startswith(preface)

    def one(data: bytes) -> None:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            try:
                s.sendall(data if data.startswith(preface) else preface + data)
                s.shutdown(socket.SHUT_WR)
                _read_to_close(s)
            except OSError:
                pass  # the server reset it

    try:
        await ctl.ready()
        for data in _mutations(7, valid):
            await asyncio.to_thread(one, data)
        assert await send(f"127.0.0.1:{port}", [report("us-east-1", sequence=50)])
    finally:
        ctl.stop()
    text = ctl.log_path.read_text()
    assert "Traceback" not in text and "Exception in callback" not in text, text[-3000:]
    assert '"ingest connection closed on an HTTP/2 error"' in text


async def test_the_shipped_command_serves_it_and_refuses_it_exposed(etcd: EtcdCluster, tmp_path: Path) -> None:
    import subprocess

    from tests.support import free_port
    from tests.support.paths import STEERING

    config = write_config(tmp_path / "steering.yaml", etcd.endpoints)
    port = free_port()
    ctl = ControllerProcess(tmp_path, config, extra=["--ingest-addr", f"127.0.0.1:{port}"])
    try:
        await ctl.ready()
        acks = await send(f"127.0.0.1:{port}", [report("us-east-1")])
        assert acks[0].controller_id == "c1"
        started = [e for e in ctl.logs() if e.get("event") == "controller started"]
        assert started and started[0]["ingest_port"] == port
    finally:
        ctl.stop()
    out = await asyncio.to_thread(subprocess.run, [STEERING, "controller", "--config", str(config),
                                                   "--ingest-addr", "0.0.0.0:1"],
                                  capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert "refusing to serve agents' reports on 0.0.0.0:1 without an auth section" in out.stderr
