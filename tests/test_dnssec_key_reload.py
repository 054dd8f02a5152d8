"""DNSSEC key files replaced under a running server (docs/dnssec.md, "Replacing key files").

The shipped ``steering dns`` (one process, and a supervisor with two workers) reads its key files again on
SIGHUP: a new valid key signs the answers from then on; a file that is not a usable key leaves the previous
key in use, with one log line naming the file and a counter. In-process, the re-signing timer notices a
replaced file by itself. Every answer is a real UDP query, validated with dns.dnssec.validate.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import dns.asyncquery
import dns.dnssec
import dns.message
import dns.query
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import pytest
from structlog.testing import capture_logs

from dnsserver.dnssec import write_key
from dnsserver.server import DnsServer
from steering.config import load_config
from tests.support.dns_server import DnsProcess, table_with
from tests.support.dnssec import ZONE, signed_config, validate
from tests.support.wait import eventually, eventually_sync

FIELD = "zones[0].dnssec.keys[0].file"


def query(name: str, qtype: str) -> dns.message.Message:
    return dns.message.make_query(name, qtype, use_edns=0, want_dnssec=True, payload=1232)


def dnskey_of(reply: dns.message.Message) -> dns.rrset.RRset:
    dnskey = reply.find_rrset(reply.answer, ZONE, dns.rdataclass.IN, dns.rdatatype.DNSKEY)
    assert validate(reply, dnskey, ("answer",)) == 1  # self-signed by the key it publishes
    return dnskey


def tags_of(dnskey: dns.rrset.RRset) -> set[int]:
    return {dns.dnssec.key_id(k) for k in dnskey}


def signer_tags(reply: dns.message.Message) -> set[int]:
    return {sig.key_tag for rrset in reply.answer if rrset.rdtype == dns.rdatatype.RRSIG for sig in rrset}


def replace_file(path: Path, data: bytes | None) -> None:
    """As an operator's deployment does: written aside, renamed over (``None``: the file removed)."""
    if data is None:
        path.unlink()
        return
    tmp = path.with_name(path.name + ".new")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def new_key_bytes(directory: Path, algorithm: str = "ECDSAP256SHA256") -> tuple[bytes, int]:
    made, key = write_key(directory, ZONE, algorithm, "csk")
    return made.read_bytes(), key.tag


def signed_by(port: int, tag: int) -> bool:
    """Over UDP: the DNSKEY RRset is the one key ``tag``, and answers are signed by it and validate."""
    dnskey = dnskey_of(dns.query.udp(query("example.test", "DNSKEY"), "127.0.0.1", port=port, timeout=5))
    if tags_of(dnskey) != {tag}:
        return False
    for name in ("api.example.test", "mail.example.test", "nope.example.test"):
        reply = dns.query.udp(query(name, "A"), "127.0.0.1", port=port, timeout=5)
        validate(reply, dnskey)
        assert signer_tags(reply) <= {tag}
    return True


@pytest.mark.parametrize("workers", ["1", "2"])
def test_sighup_switches_to_new_key_files_and_keeps_the_old_on_a_bad_one(tmp_path: Path, workers: str) -> None:
    path, (key_file,) = signed_config(tmp_path / "cfg")
    first_tag = tags_of(load_dnskey(path))
    with DnsProcess(path, "--workers", workers, "--no-etcd", "--listen", "127.0.0.1:0") as d:
        port = d.ready()
        n = int(workers)
        assert eventually_sync(lambda: signed_by(port, *first_tag), 10, "answers signed by the first key")

        data, new_tag = new_key_bytes(tmp_path / "rolled")
        replace_file(key_file, data)
        os.kill(d.proc.pid, signal.SIGHUP)
        eventually_sync(lambda: len(d.named("dns.dnssec.keys_reloaded")) >= n, 30, "every worker reloaded")
        # every worker answers with the new key (SO_REUSEPORT spreads the queries' source ports over them)
        for _ in range(4 * n):
            assert signed_by(port, new_tag)
        assert d.metric("steering_dns_dnssec_key_reloads_total") == n
        assert d.metric("steering_dns_dnssec_key_reload_errors_total") == 0

        replace_file(key_file, b"not a key\n")
        os.kill(d.proc.pid, signal.SIGHUP)
        failed = eventually_sync(lambda: (lambda e: e if len(e) >= n else None)(
            d.named("dns.dnssec.key_reload_failed")), 30, "every worker refused the garbage")
        for event in failed:
            assert event["field"] == FIELD and event["file"] == str(key_file) and event["reason"] == "sighup"
            assert f"example.test./csk/{new_tag}" in event["kept"]
        assert eventually_sync(lambda: d.metric("steering_dns_dnssec_key_reload_errors_total") == n, 15,
                               "the errors counted")
        for _ in range(4 * n):
            assert signed_by(port, new_tag)  # the previous key still signs, and nobody stopped answering
        assert d.proc.poll() is None
        assert d.metric("steering_dns_dnssec_key_reloads_total") == n
        assert d.stop() == 0
    assert "BEGIN" not in d.log() and "PRIVATE" not in d.log()  # key material never logged


def load_dnskey(path: Path) -> dns.rrset.RRset:
    from dnsserver.keyreload import read_zone_keys

    return read_zone_keys(load_config(path))[0].dnskey_rrset()


async def udp_dnskey_tags(port: int) -> set[int]:
    reply = await dns.asyncquery.udp(query("example.test", "DNSKEY"), "127.0.0.1", port=port, timeout=3)
    return tags_of(dnskey_of(reply))


@pytest.mark.parametrize("problem", ["missing", "garbage", "wrong_algorithm"])
async def test_the_resigning_timer_notices_a_replaced_key_file(tmp_path: Path, problem: str) -> None:
    path, (key_file,) = signed_config(tmp_path / "cfg")
    cfg = load_config(path)
    server = DnsServer(cfg, table_with(cfg, 1, {}))
    server.key_check_seconds = 0.05  # the timer's look at the files' stamps: 30 s in the daemon
    port = (await server.start(["127.0.0.1:0"]))[0][1]
    try:
        data, new_tag = new_key_bytes(tmp_path / "rolled")
        replace_file(key_file, data)

        async def switched() -> bool:
            return await udp_dnskey_tags(port) == {new_tag}

        await eventually(switched, 10, "the new key published")
        assert server.stats.dnssec_key_reloads[0] == 1
        with capture_logs() as logs:
            if problem == "wrong_algorithm":
                replace_file(key_file, new_key_bytes(tmp_path / "ed", "ED25519")[0])
            else:
                replace_file(key_file, None if problem == "missing" else b"-----BEGIN PRIVATE KEY-----\nxx\n")
            await eventually(lambda: server.stats.dnssec_key_reload_errors[0] == 1, 10, "the error counted")
        failed = [e for e in logs if e["event"] == "dns.dnssec.key_reload_failed"]
        assert len(failed) == 1  # once per change, not at every look
        assert failed[0]["field"] == FIELD and failed[0]["file"] == str(key_file)
        assert failed[0]["reason"] == "key_files_changed"
        assert "xx" not in str(failed[0])
        reply = await dns.asyncquery.udp(query("api.example.test", "A"), "127.0.0.1", port=port, timeout=3)
        dnskey = dnskey_of(await dns.asyncquery.udp(query("example.test", "DNSKEY"), "127.0.0.1", port=port,
                                                    timeout=3))
        assert tags_of(dnskey) == {new_tag} and signer_tags(reply) == {new_tag}
        validate(reply, dnskey)
        # fixed again: picked up at the next look
        replace_file(key_file, data)
        await eventually(lambda: server.stats.dnssec_key_reloads[0] == 2, 10, "the fixed file read")
        assert server.stats.dnssec_key_reload_errors[0] == 1
    finally:
        await server.close()
