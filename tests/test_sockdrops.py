"""The kernel's drop count of the server's UDP sockets (dnsserver/sockdrops.py): parsed from /proc/net/udp,
checked against a real socket whose receive buffer overflows."""

from __future__ import annotations

import os
import socket

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dnsserver import sockdrops
from dnsserver.metrics import Stats, StatsCollector

HEADER = ("  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref "
          "pointer drops")


def line(inode: int, drops: int) -> str:
    return (f"  1: 0100007F:14E9 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 {inode} 2 "
            f"0000000000000000 {drops}")


@given(st.dictionaries(st.integers(1, 2**40), st.integers(0, 2**32), max_size=20), st.data())
def test_parse_finds_the_asked_sockets_and_skips_the_rest(rows: dict[int, int], data: st.DataObject) -> None:
    asked = frozenset(data.draw(st.sets(st.sampled_from(sorted(rows)))) if rows else set())
    text = "\n".join([HEADER, *(line(i, d) for i, d in rows.items()), "garbage", "1: a b c"])
    assert sockdrops.parse(text, asked) == {i: rows[i] for i in asked}


def test_the_total_never_goes_down_when_a_socket_goes() -> None:
    seen: dict[int, int] = {}
    assert sockdrops.total(seen, {1: 5, 2: 7}) == 12
    assert sockdrops.total(seen, {2: 9}) == 14  # socket 1 closed: its 5 stay
    assert sockdrops.total(seen, {1: 0, 2: 9}) == 14  # a smaller reading (a new socket, same inode) adds none


def test_a_missing_table_counts_nothing(tmp_path: os.PathLike[str]) -> None:
    assert sockdrops.read([1, 2], [os.path.join(tmp_path, "nope")]) == {}
    assert sockdrops.read([], sockdrops.TABLES) == {}


@pytest.mark.parametrize("family, host", [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")])
def test_drops_of_a_socket_whose_buffer_overflows(family: socket.AddressFamily, host: str) -> None:
    """A socket nobody reads, with the smallest receive buffer: of 200 datagrams sent over loopback (which
    loses none otherwise) the kernel keeps what fits; every other one is a drop, counted exactly. Not
    skipped: the suite runs on Linux (``make test``, CI), where a /proc without the tables is a defect to
    see, not a pass; off Linux the counter is documented to stay at zero (the test above)."""
    with socket.socket(family, socket.SOCK_DGRAM) as server, socket.socket(family, socket.SOCK_DGRAM) as client:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1)  # the kernel's minimum
        server.bind((host, 0))
        stats = Stats()
        stats.udp_inodes.append(os.fstat(server.fileno()).st_ino)
        assert stats.udp_receive_drops() == 0
        sent = 200
        for _ in range(sent):
            client.sendto(b"q" * 512, server.getsockname())
        server.setblocking(False)
        kept = 0
        while True:
            try:
                server.recv(2048)
            except BlockingIOError:
                break
            kept += 1
        assert 0 < kept < sent
        assert stats.udp_receive_drops() == sent - kept
        fams = {f.name: f for f in StatsCollector(stats).collect()}
        assert fams["steering_dns_udp_receive_drops"].samples[0].value == sent - kept
    assert stats.udp_receive_drops() == sent - kept  # the socket gone: what it counted stays
