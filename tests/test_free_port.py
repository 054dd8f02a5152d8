"""Test ports are chosen where no outgoing connection can take them first (``steering.etcdproc.free_port``)."""

from __future__ import annotations

import socket

from steering import etcdproc
from tests.support.ports import free_port_block


def test_ports_are_chosen_outside_the_ephemeral_range_and_are_free() -> None:
    low, high = (int(x) for x in etcdproc._EPHEMERAL.read_text().split())
    span = etcdproc._outside_ephemeral()
    assert span is not None, (low, high)  # this machine's range leaves room below or above it
    ports = {etcdproc.free_port() for _ in range(50)}
    assert all(span[0] <= p <= span[1] and not low <= p <= high for p in ports), sorted(ports)
    assert len(ports) > 40  # spread, not one port handed to every caller
    base = free_port_block(2)
    for p in (base, base + 1):
        with socket.socket() as s:
            s.bind(("127.0.0.1", p))  # free for the taking
