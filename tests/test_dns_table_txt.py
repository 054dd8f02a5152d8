"""``table.steering. CH TXT``: the version and leader of the table a server answers from (the lab's history
checker reads it, docs/lab.md), over real UDP and TCP; other CH names stay refused."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import dns.asyncquery
import dns.message
import dns.rcode
import dns.rdataclass

from tests.support.dns_server import load, serving, table_with


def txt_of(r: dns.message.Message) -> list[bytes]:
    return [s for rrset in r.answer for rd in rrset for s in rd.strings]


async def ask(port: int, name: str, use_tcp: bool) -> dns.message.Message:
    q = dns.message.make_query(name, "TXT", rdclass=dns.rdataclass.CH)
    if use_tcp:
        return await dns.asyncquery.tcp(q, "127.0.0.1", port=port, timeout=3)
    return await dns.asyncquery.udp(q, "127.0.0.1", port=port, timeout=3)


async def test_the_table_version_and_leader_in_a_chaos_txt(tmp_path: Path) -> None:
    cfg = load(tmp_path, dns={"rrl": {"enabled": False}})
    table = dataclasses.replace(table_with(cfg, 42, {}), leader='ctl-"us" east')
    async with serving(cfg, table) as (server, port):
        for use_tcp in (False, True):
            r = await ask(port, "table.steering.", use_tcp)
            assert r.rcode() == dns.rcode.NOERROR and txt_of(r) == [b"version=42", b'leader=ctl-"us" east']
            assert (await ask(port, "version.bind.", use_tcp)).rcode() == dns.rcode.REFUSED
        server.set_table(dataclasses.replace(table_with(cfg, 43, {}), leader="ctl-b"), persist=False)
        assert txt_of(await ask(port, "TABLE.steering.", False)) == [b"version=43", b"leader=ctl-b"]
