"""Fuzzing over real sockets: random bytes and mutated valid queries, UDP and TCP.

The server runs on its own event loop in a thread so Hypothesis can drive
plain blocking sockets. Each reply must parse, and a normal query must still
be answered afterwards.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import dns.edns
import dns.message
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dnsserver.server import DnsServer
from tests.support.dns_server import load, table_with

VALID = [
    dns.message.make_query("api.example.test", "A").to_wire(),
    dns.message.make_query("ApI.example.test", "AAAA", use_edns=0,
                           options=[dns.edns.ECSOption("198.51.100.128", 26)]).to_wire(),
    dns.message.make_query("www.example.test", "ANY", use_edns=0, payload=4096).to_wire(),
    dns.message.make_query("missing.example.test", "TXT").to_wire(),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DnsServer, int]]:
    cfg = load(Path(tmp_path_factory.mktemp("fuzz")), dns={"rrl": {"enabled": False}})
    srv = DnsServer(cfg, table_with(cfg, 1, {"api.example.test.": {"world": {"us-east-1": 500, "eu-west-1": 500}}}))
    loop = asyncio.new_event_loop()
    ready = threading.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(srv.start(["127.0.0.1:0"]))
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert ready.wait(10)
    try:
        yield srv, srv.addresses[0][1]
    finally:
        asyncio.run_coroutine_threadsafe(srv.close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def expects_reply(wire: bytes) -> bool:
    return len(wire) >= 12 and not wire[2] & 0x80


def udp_exchange(port: int, wire: bytes, want: bool) -> bytes | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(3)
        s.sendto(wire, ("127.0.0.1", port))
        if not want:
            return None
        return s.recv(65535)


def alive(port: int) -> None:
    reply = dns.message.from_wire(udp_exchange(port, VALID[0], True) or b"")
    assert reply.answer


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    return mutate(draw)


def mutate(draw: st.DrawFn) -> bytes:
    class _D:
        @staticmethod
        def draw(strategy: st.SearchStrategy) -> object:
            return draw(strategy)

    data = _D
    wire = bytearray(data.draw(st.sampled_from(VALID)))
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "cut", "insert", "set"]))
        pos = data.draw(st.integers(0, max(0, len(wire) - 1)))
        if op == "flip" and wire:
            wire[pos] ^= 1 << data.draw(st.integers(0, 7))
        elif op == "cut":
            del wire[pos:]
        elif op == "insert":
            wire[pos:pos] = data.draw(st.binary(min_size=1, max_size=8))
        elif wire:
            wire[pos] = data.draw(st.integers(0, 255))
    return bytes(wire)


SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@SETTINGS
@given(st.binary(min_size=0, max_size=600))
def test_random_bytes_over_udp(server, wire: bytes) -> None:
    _srv, port = server
    want = expects_reply(wire)
    reply = udp_exchange(port, wire, want)
    if want:
        assert reply is not None and reply[:2] == wire[:2]
        dns.message.from_wire(reply)
    alive(port)


@SETTINGS
@given(mutated())
def test_mutated_queries_over_udp(server, wire: bytes) -> None:
    _srv, port = server
    want = expects_reply(wire)
    reply = udp_exchange(port, wire, want)
    if want:
        assert reply is not None
        dns.message.from_wire(reply)
    alive(port)


@SETTINGS
@given(st.lists(st.one_of(st.binary(max_size=300), mutated()), min_size=1, max_size=4))
def test_mutated_and_random_over_tcp(server, wires: list[bytes]) -> None:
    _srv, port = server
    # a frame shorter than a DNS header is no DNS message: the server answers what came before it, then
    # closes gracefully (dnsserver/README.md, TCP), so nothing after it is answered
    cut = next((i for i, w in enumerate(wires) if len(w) < 12), len(wires))
    with socket.create_connection(("127.0.0.1", port), timeout=3) as s:
        s.sendall(b"".join(len(w).to_bytes(2, "big") + w for w in wires))
        for w in wires[:cut]:
            if not expects_reply(w):
                continue
            head = _recv_exact(s, 2)
            reply = _recv_exact(s, int.from_bytes(head, "big"))
            assert reply[:2] == w[:2]
            dns.message.from_wire(reply)
        if cut < len(wires):
            assert _recv_eof(s), "the connection stays open after a zero-length frame"
    alive(port)


def _recv_eof(s: socket.socket) -> bool:
    """True when the server closes (EOF or reset) before sending anything more."""
    try:
        return s.recv(65535) == b""
    except ConnectionResetError:
        return True


def _recv_exact(s: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        assert chunk, "connection closed early"
        buf += chunk
    return buf


def test_no_internal_errors(server) -> None:
    srv, port = server
    alive(port)
    assert srv.stats.errors[0] == 0
