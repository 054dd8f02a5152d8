"""The UDP workers over real sockets: batched, plain thread and event loop answer alike (IPv4 and IPv6),
table swaps under load are clean, and SIGTERM stops the daemon with its threads."""

from __future__ import annotations

import asyncio
import signal
import socket
import threading
import time
from pathlib import Path

import dns.asyncquery
import dns.edns
import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
import pytest

from dnsserver.persist import save_table
from dnsserver.server import DnsServer
from dnsserver.udpbatch import batch_available
from tests.support import eventually_sync, free_port
from tests.support.dns_server import EAST, SPLIT, WEST, DnsProcess, addresses, load, table_with, write_config

MODES = [("batch", True, True), ("thread", True, False), ("loop", False, False)]


def udp_threads(server: DnsServer) -> int:
    """The live UDP worker threads of ``server`` (each is named for the address it serves)."""
    names = {f"dns-udp-{host}:{port}" for host, port in server.addresses}
    return sum(1 for t in threading.enumerate() if t.name in names and t.is_alive())


@pytest.mark.parametrize("mode,threads,batch", MODES)
async def test_workers_answer_alike(tmp_path: Path, mode: str, threads: bool, batch: bool) -> None:
    cfg = load(tmp_path)
    server = DnsServer(cfg, table_with(cfg, 1, SPLIT), udp_threads=threads, udp_batch=batch)
    hosts = ["127.0.0.1", "::1"]  # IPv6 is part of the contract: no quiet fallback to IPv4 only
    await server.start([f"[{h}]:0" if ":" in h else f"{h}:0" for h in hosts])
    try:
        assert server.udp_mode == ("thread" if mode == "batch" and not batch_available() else mode)
        # a thread per socket, named for its address, in both thread modes; none on the event loop
        assert udp_threads(server) == (len(hosts) if threads else 0)
        for host, port in server.addresses:
            # many subnets over ECS: each answer is the one the slow path computes for that subnet
            picks = set()
            for i in range(40):
                q = dns.message.make_query("aPi.Example.TEST", "A", use_edns=0,
                                           options=[dns.edns.ECSOption(f"10.{i}.{i * 3}.0", 24)])
                r = await dns.asyncquery.udp(q, host, port=port, timeout=3)
                ref = dns.message.from_wire(server.slow.answer(server.snapshot, q.to_wire(), host, 0))
                assert r.answer == ref.answer and r.question[0].name.to_text() == "aPi.Example.TEST."
                assert r.options[0].scopelen == 24
                picks.add(frozenset(addresses(r)))
            assert picks == {frozenset(EAST), frozenset(WEST)}
            # by source address (no ECS): stable
            q = dns.message.make_query("api.example.test", "A")
            first = await dns.asyncquery.udp(q, host, port=port, timeout=3)
            again = await dns.asyncquery.udp(q, host, port=port, timeout=3)
            assert addresses(first) == addresses(again) and addresses(first) in (EAST, WEST)
            # the slow path from the worker: FORMERR for trailing junk, TC when the answer does not fit
            bad = q.to_wire() + b"\xff"
            loop = asyncio.get_running_loop()
            with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.setblocking(False)
                await loop.sock_connect(s, (host, port))
                await loop.sock_sendall(s, bad)
                reply = await asyncio.wait_for(loop.sock_recv(s, 65535), 3)
            assert reply[:2] == bad[:2] and reply[3] & 0x0F == dns.rcode.FORMERR
    finally:
        await server.close()
    assert udp_threads(server) == 0  # close() stopped them


async def test_table_swaps_under_load_are_clean(tmp_path: Path) -> None:
    """A thread queries as fast as it can while the loop swaps tables: every reply is wholly old or new."""
    cfg = load(tmp_path, dns={"rrl": {"enabled": False}})  # one source, as fast as it can: not an attack
    east = table_with(cfg, 1, {"api.example.test.": {g: {"us-east-1": 1} for g in SPLIT["api.example.test."]}})
    west = table_with(cfg, 2, {"api.example.test.": {g: {"us-west-2": 1} for g in SPLIT["api.example.test."]}})
    server = DnsServer(cfg, east)
    await server.start(["127.0.0.1:0"])
    port = server.addresses[0][1]
    seen: list[frozenset[str]] = []
    errors: list[str] = []
    done = threading.Event()

    def client() -> None:
        q = dns.message.make_query("api.example.test", "A")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(2)
            deadline = time.monotonic() + 20
            for i in range(3000):  # bounded in count and time
                if done.is_set() or time.monotonic() > deadline:
                    break
                q.id = i & 0xFFFF
                s.sendto(q.to_wire(), ("127.0.0.1", port))
                try:
                    r = dns.message.from_wire(s.recv(65535))
                except (TimeoutError, dns.exception.DNSException) as exc:
                    errors.append(repr(exc))
                    continue
                seen.append(frozenset(addresses(r)))

    t = threading.Thread(target=client)
    t.start()
    try:
        for i in range(30):
            server.set_table(west if i % 2 == 0 else east, persist=False)
            await asyncio.sleep(0.01)
    finally:
        done.set()
        await asyncio.to_thread(t.join, 30)
        await server.close()
    assert not errors
    assert seen and set(seen) <= {frozenset(EAST), frozenset(WEST)}


def test_sigterm_stops_daemon_and_threads(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    cfg = load(tmp_path)
    save_table(tmp_path / "dns-table.json", table_with(cfg, 1, SPLIT))
    port = free_port()
    with DnsProcess(config, "--listen", f"127.0.0.1:{port}", "--no-etcd", metrics=False) as d:
        q = dns.message.make_query("api.example.test", "A")

        def answer() -> dns.message.Message | None:
            assert d.proc.poll() is None, d.log()
            try:
                return dns.query.udp(q, "127.0.0.1", port=port, timeout=0.3)
            except (dns.exception.Timeout, OSError):
                return None

        answered = eventually_sync(answer, 20, "an answer")
        assert addresses(answered) in (EAST, WEST)
        d.proc.send_signal(signal.SIGTERM)
        assert d.wait(15) == 0, d.log()


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_batched_bursts_with_unanswered_datagrams(tmp_path: Path, host: str) -> None:
    """Bursts mixing queries with datagrams that get no reply (responses, a lone byte) from several
    sockets: every query gets its own reply, at its own address."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET

    async def run() -> None:
        cfg = load(tmp_path, dns={"rrl": {"enabled": False}})
        server = DnsServer(cfg, table_with(cfg, 1, SPLIT))
        await server.start([f"[{host}]:0" if ":" in host else f"{host}:0"])
        port = server.addresses[0][1]
        socks = [socket.socket(family, socket.SOCK_DGRAM) for _ in range(3)]
        try:
            for s in socks:
                s.bind((host, 0))
                s.settimeout(3)
            for burst in range(20):  # bounded
                sent: dict[int, set[int]] = {k: set() for k in range(len(socks))}
                for n in range(30):
                    k = n % len(socks)
                    if n % 7 == 3:
                        resp = dns.message.make_response(dns.message.make_query("api.example.test", "A"))
                        socks[k].sendto(resp.to_wire(), (host, port))  # a response: no reply
                    elif n % 11 == 5:
                        socks[k].sendto(b"\x01", (host, port))  # too short to answer: no reply
                    else:
                        qid = burst * 100 + n
                        ecs = [dns.edns.ECSOption(f"127.{1 + n % 5}.{n}.0", 24)] if n % 2 else None
                        q = dns.message.make_query("api.example.test", "A", id=qid, use_edns=0 if ecs else None,
                                                   options=ecs)
                        socks[k].sendto(q.to_wire(), (host, port))
                        sent[k].add(qid)
                for k, s in enumerate(socks):
                    got = set()
                    while len(got) < len(sent[k]):
                        r = dns.message.from_wire(await asyncio.to_thread(s.recv, 65535))
                        assert r.rcode() == dns.rcode.NOERROR and addresses(r) in (EAST, WEST)
                        got.add(r.id)
                    assert got == sent[k]
        finally:
            for s in socks:
                s.close()
            await server.close()

    asyncio.run(run())
