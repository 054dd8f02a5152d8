"""DNS Cookies (RFC 7873, RFC 9018 server cookies): the construction against the RFC's vectors, the rules,
secrets from a file and from the environment, and every rule again over real UDP and TCP sockets."""

from __future__ import annotations

import ipaddress
import os
import time
from pathlib import Path

import dns.asyncquery
import dns.edns
import dns.message
import dns.rcode
import pytest

from dnsserver import cookies as ck
from dnsserver.cookies import Cookies, packed_address, server_cookie
from steering.config import ConfigError
from tests.support import eventually
from tests.support.dns_server import load, serving, table_with

SECRET = bytes.fromhex("e5e973e5a6b2a43f48e7dc849e37bfcf")
V1 = b"\x01\x00\x00\x00"


def ip(text: str) -> bytes:
    return ipaddress.ip_address(text).packed


# ---- the construction: RFC 9018 Appendix A


@pytest.mark.parametrize("secret, client, address, stamp, want", [
    # A.1: learning a new server cookie
    ("e5e973e5a6b2a43f48e7dc849e37bfcf", "2464c4abcf10c957", "198.51.100.100", 1559731985,
     "010000005cf79f111f8130c3eee29480"),
    # A.2: the same client, a renewed cookie
    ("e5e973e5a6b2a43f48e7dc849e37bfcf", "2464c4abcf10c957", "198.51.100.100", 1559734385,
     "010000005cf7a871d4a564a1442aca77"),
    # A.3: another client
    ("e5e973e5a6b2a43f48e7dc849e37bfcf", "fc93fc62807ddb86", "203.0.113.203", 1559734700,
     "010000005cf7a9acf73a7810aca2381e"),
    # A.4: an IPv6 client, after the secret rolled over
    ("445536bcd2513298075a5d379663c962", "22681ab97d52c298", "2001:db8:220:1:59de:d0f4:8769:82b8", 1559741961,
     "010000005cf7c609a6bb79d16625507a"),
])
def test_server_cookie_matches_rfc9018_vectors(secret: str, client: str, address: str, stamp: int, want: str) -> None:
    got = server_cookie(bytes.fromhex(secret), bytes.fromhex(client), V1 + stamp.to_bytes(4, "big"), ip(address))
    assert got.hex() == want


def test_rfc9018_vectors_through_the_rules() -> None:
    # A.2: the A.1 cookie, 40 minutes old, is valid but due for renewal: a fresh one, the RFC's bytes
    c = Cookies([SECRET], clock=lambda: 1559734385)
    result, reply = c.answer(bytes.fromhex("2464c4abcf10c957010000005cf79f111f8130c3eee29480"), ip("198.51.100.100"))
    assert (result, reply.hex() if reply else None) == ("valid", "2464c4abcf10c957010000005cf7a871d4a564a1442aca77")
    # A.3: a cookie with reserved bytes set by whoever made it: the hash covers them (valid when it was made)...
    a3 = bytes.fromhex("fc93fc62807ddb8601abcdef5cf78f71a314227b6679ebf5")
    assert Cookies([SECRET], clock=lambda: 0x5cf78f71 + 10).answer(a3, ip("203.0.113.203"))[0] == "valid"
    # ... and at the RFC's reply time it is older than an hour: a new one, the RFC's bytes
    result, reply = Cookies([SECRET], clock=lambda: 1559734700).answer(a3, ip("203.0.113.203"))
    assert (result, reply.hex() if reply else None) == ("invalid", "fc93fc62807ddb86010000005cf7a9acf73a7810aca2381e")
    # A.4: made with the old secret, accepted while the old secret is still listed, renewed with the new one
    old, new = bytes.fromhex("dd3bdf9344b678b185a6f5cb60fca715"), bytes.fromhex("445536bcd2513298075a5d379663c962")
    a4 = bytes.fromhex("22681ab97d52c298010000005cf7c57926556bd0934c72f8")
    v6 = ip("2001:db8:220:1:59de:d0f4:8769:82b8")
    result, reply = Cookies([new, old], clock=lambda: 1559741961).answer(a4, v6)
    assert (result, reply.hex() if reply else None) == ("valid", "22681ab97d52c298010000005cf7c609a6bb79d16625507a")
    assert Cookies([new], clock=lambda: 1559741961).answer(a4, v6)[0] == "invalid"


# ---- the rules


def test_cookie_rules_by_age_secret_and_address() -> None:
    now = [1_700_000_000.0]
    c = Cookies([SECRET], clock=lambda: now[0])
    client = bytes.fromhex("0102030405060708")
    addr = ip("127.0.0.1")
    result, first = c.answer(client, addr)
    assert result == "client_only" and first is not None and len(first) == 24 and first[:8] == client
    assert first[8:12] == V1 and int.from_bytes(first[12:16], "big") == int(now[0])
    # young and made with the signing secret: sent back as it is
    now[0] += 600
    assert c.answer(first, addr) == ("valid", first)
    # older than half an hour: still valid, renewed
    now[0] += 1300
    result, renewed = c.answer(first, addr)
    assert result == "valid" and renewed != first and int.from_bytes(renewed[12:16], "big") == int(now[0])
    # older than an hour: invalid, a fresh one
    now[0] += 1800
    result, fresh = c.answer(first, addr)
    assert result == "invalid" and int.from_bytes(fresh[12:16], "big") == int(now[0])
    # another address, another secret, another version: invalid
    assert c.answer(fresh, ip("127.0.0.2"))[0] == "invalid"
    assert Cookies([bytes(16)], clock=lambda: now[0]).answer(fresh, addr)[0] == "invalid"
    assert c.answer(fresh[:8] + b"\x02" + fresh[9:], addr)[0] == "invalid"
    assert c.answer(fresh[:8] + bytes(8), addr)[0] == "invalid"  # a server cookie of another kind (8 bytes)
    # stamped up to five minutes ahead (another server's clock) is fine; more is not
    ahead = c.answer(client, addr)[1]
    assert ahead is not None
    now[0] -= 299
    assert c.answer(ahead, addr)[0] == "valid"
    now[0] -= 2
    assert c.answer(ahead, addr)[0] == "invalid"
    # malformed lengths (RFC 7873 §5.2.2)
    for n in (0, 1, 7, 9, 15, 41, 60):
        assert c.answer(bytes(n), addr) == ("malformed", None), n
    assert {k: v[0] for k, v in c.stats.cookies.items()} == {"client_only": 2, "valid": 3, "invalid": 5,
                                                            "malformed": 7}


def test_serial_arithmetic_across_the_wrap() -> None:
    # stamped just before 2**32 seconds, read just after: ten minutes old, not 136 years
    stamp = 2**32 - 300
    made = server_cookie(SECRET, b"c" * 8, V1 + stamp.to_bytes(4, "big"), ip("127.0.0.1"))
    assert Cookies([SECRET], clock=lambda: 2**32 + 300).answer(b"c" * 8 + made, ip("127.0.0.1"))[0] == "valid"


def test_addresses_as_the_hash_takes_them() -> None:
    assert packed_address("127.0.0.1") == b"\x7f\x00\x00\x01"
    assert packed_address("::ffff:127.0.0.1") == b"\x7f\x00\x00\x01"  # dual-stack sockets: the IPv4 address
    assert packed_address("::1") == ip("::1")
    assert packed_address("fe80::1%lo") == ip("fe80::1")


def test_query_has_valid_server_cookie() -> None:
    c = Cookies([SECRET])
    client = b"\x11" * 8
    reply = c.answer(client, ip("127.0.0.1"))[1]
    assert reply is not None

    def wire(data: bytes | None, edns: bool = True) -> bytes:
        opts = [dns.edns.GenericOption(10, data)] if data is not None else None
        return dns.message.make_query("api.example.test", "A", use_edns=0 if edns else None, options=opts).to_wire()

    assert c.query_has_valid_server_cookie(wire(reply), "127.0.0.1")
    assert c.query_has_valid_server_cookie(wire(reply), "::ffff:127.0.0.1")
    assert not c.query_has_valid_server_cookie(wire(reply), "127.0.0.2")
    assert not c.query_has_valid_server_cookie(wire(client), "127.0.0.1")
    assert not c.query_has_valid_server_cookie(wire(None), "127.0.0.1")
    assert not c.query_has_valid_server_cookie(wire(None, edns=False), "127.0.0.1")
    assert not c.query_has_valid_server_cookie(wire(reply[:20]), "127.0.0.1")
    assert not c.query_has_valid_server_cookie(b"\x00" * 5, "127.0.0.1")
    assert not c.query_has_valid_server_cookie(wire(reply)[:-3], "127.0.0.1")
    assert not Cookies([bytes(16)]).query_has_valid_server_cookie(wire(reply), "127.0.0.1")
    assert sum(v[0] for v in c.stats.cookies.values()) == 1  # only the answer() above was counted


# ---- secrets


def test_secrets_from_environment_or_random(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ck.ENV_SECRET, SECRET.hex())
    assert Cookies.create(None).secrets == (SECRET,)
    monkeypatch.delenv(ck.ENV_SECRET)
    a, b = Cookies.create(None), Cookies.create(None)
    assert len(a.secrets[0]) == 16 and a.secrets != b.secrets
    monkeypatch.setenv(ck.ENV_SECRET, "abcd")
    with pytest.raises(ConfigError, match=ck.ENV_SECRET):
        Cookies.create(None)


def test_secret_file_is_checked_and_reloaded(tmp_path: Path) -> None:
    path = tmp_path / "cookie-secrets"
    new = bytes(range(16))
    for bad in ("", "zz\n", "00" * 15 + "\n"):
        path.write_text(bad)
        with pytest.raises(ConfigError, match="secret_file"):
            Cookies.create(path)
    path.write_text(f"# signing secret first\n{SECRET.hex()}\n\n")
    c = Cookies.create(path)
    assert c.secrets == (SECRET,)
    client = b"\x22" * 8
    issued = c.answer(client, ip("127.0.0.1"))[1]
    assert issued is not None
    c.reload_every = 0.0  # look at the file at every query (the default is every few seconds)
    path.write_text(f"{new.hex()}\n{SECRET.hex()}\n")
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 1_000_000_000))  # a later mtime, whatever the clock
    # the old cookie is still accepted (rotation), and renewed under the new signing secret
    result, renewed = c.answer(issued, ip("127.0.0.1"))
    assert c.secrets == (new, SECRET) and result == "valid" and renewed != issued
    assert Cookies([new]).answer(renewed, ip("127.0.0.1"))[0] == "valid"
    # a broken file keeps the secrets in use
    path.write_text("not hex\n")
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 2_000_000_000))
    assert c.answer(renewed, ip("127.0.0.1"))[0] == "valid" and c.secrets == (new, SECRET)


# ---- over sockets


@pytest.fixture
def cfg(tmp_path: Path):
    return load(tmp_path, dns={"rrl": {"enabled": False}})


def query(name: str, cookie: bytes | None, qtype: str = "A") -> dns.message.Message:
    opts = [dns.edns.GenericOption(10, cookie)] if cookie is not None else None
    return dns.message.make_query(name, qtype, use_edns=0, options=opts)


async def send(port: int, q: dns.message.Message, use_tcp: bool) -> dns.message.Message:
    if use_tcp:
        return await dns.asyncquery.tcp(q, "127.0.0.1", port=port, timeout=3)
    return await dns.asyncquery.udp(q, "127.0.0.1", port=port, timeout=3)


def reply_cookie(r: dns.message.Message) -> bytes:
    (opt,) = [o for o in r.options if o.otype == dns.edns.COOKIE]
    return opt.to_wire()


NAMES = ["api.example.test", "www.example.test", "example.test", "missing.example.test", "www.example.com"]


async def test_cookies_over_udp_and_tcp(cfg) -> None:
    async with serving(cfg, table_with(cfg, 1, {})) as (server, port):
        assert server.cookies is not None
        for use_tcp in (False, True):
            for name in NAMES:
                client = os.urandom(8)
                r = await send(port, query(name, client), use_tcp)
                assert r.rcode() in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN, dns.rcode.REFUSED), name
                got = reply_cookie(r)
                assert got[:8] == client and len(got) == 24 and got[8:12] == V1
                wire = query(name, got).to_wire()
                assert server.cookies.query_has_valid_server_cookie(wire, "127.0.0.1")
                # the client returns it: answered, and the same cookie comes back (young, our signing secret)
                again = await send(port, query(name, got), use_tcp)
                assert again.rcode() == r.rcode() and reply_cookie(again) == got
                assert again.answer == r.answer
                # someone else's (a cookie for another secret): answered, with a fresh cookie of ours
                forged = got[:16] + bytes(8)
                r3 = await send(port, query(name, forged), use_tcp)
                assert r3.rcode() == r.rcode()
                fresh = reply_cookie(r3)
                assert fresh != forged and server.cookies.query_has_valid_server_cookie(query(name, fresh).to_wire(),
                                                                                       "127.0.0.1")
        counts = {k: v[0] for k, v in server.stats.cookies.items()}
        assert counts == {"client_only": 10, "valid": 10, "invalid": 10, "malformed": 0}


async def test_malformed_cookie_is_formerr_the_same_way_on_every_path(cfg) -> None:
    async with serving(cfg, table_with(cfg, 1, {})) as (server, port):
        for use_tcp in (False, True):
            for n in (0, 7, 9, 15, 41):
                shapes = set()
                for name in NAMES:
                    q = query(name, bytes(n))
                    r = await send(port, q, use_tcp)
                    # FORMERR that keeps the question and an OPT, without options, for steered, static,
                    # missing and foreign names alike (the fast path hands COOKIE over)
                    assert r.rcode() == dns.rcode.FORMERR, (name, n)
                    assert r.question == q.question and r.edns == 0 and not r.options
                    assert not r.answer and not r.authority
                    shapes.add((r.flags, r.ednsflags, r.payload))
                assert len(shapes) == 1
        assert server.stats.cookies["malformed"][0] == 2 * 5 * len(NAMES)


async def test_cookies_disabled_ignores_the_option(tmp_path: Path) -> None:
    cfg = load(tmp_path, dns={"cookies": {"enabled": False}, "rrl": {"enabled": False}})
    async with serving(cfg, table_with(cfg, 1, {})) as (server, port):
        assert server.cookies is None
        before = server.stats.slow_path[0]
        for data in (b"\x01" * 8, bytes(9)):
            r = await send(port, query("api.example.test", data), False)
            assert r.rcode() == dns.rcode.NOERROR and r.answer and not r.options
        assert server.stats.slow_path[0] == before  # the fast path answered: the option is just unknown


async def test_workers_sharing_the_environment_secret_accept_each_others_cookies(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ck.ENV_SECRET, os.urandom(16).hex())
    cfg = load(tmp_path, dns={"rrl": {"enabled": False}})
    async with serving(cfg, table_with(cfg, 1, {})) as (_, port_a), serving(cfg, table_with(cfg, 1, {})) as (_, port_b):
        got = reply_cookie(await send(port_a, query("api.example.test", b"\x33" * 8), False))
        # server B takes A's cookie as valid, so it sends it back unchanged
        assert reply_cookie(await send(port_b, query("api.example.test", got), False)) == got


async def test_secret_file_rotation_over_sockets(tmp_path: Path) -> None:
    secrets = tmp_path / "cookie.secrets"
    first, second = os.urandom(16), os.urandom(16)
    secrets.write_text(first.hex() + "\n")
    cfg = load(tmp_path, dns={"cookies": {"secret_file": str(secrets)}, "rrl": {"enabled": False}})
    async with serving(cfg, table_with(cfg, 1, {})) as (server, port):
        assert server.cookies is not None
        server.cookies.reload_every = 0.05
        issued = reply_cookie(await send(port, query("api.example.test", b"\x44" * 8), False))
        assert Cookies([first]).answer(issued, ip("127.0.0.1"))[0] == "valid"
        tmp = tmp_path / "cookie.secrets.new"
        tmp.write_text(f"{second.hex()}\n{first.hex()}\n")
        tmp.replace(secrets)  # the way to rotate: write aside, rename over
        async def renewed_cookie() -> bytes | None:
            cookie = reply_cookie(await send(port, query("api.example.test", issued), True))
            return cookie if cookie != issued else None

        renewed = await eventually(renewed_cookie, 10, "the new secret file to be picked up")
        # the old cookie was still accepted (valid, counted so) and replaced by one signed with the new secret
        assert Cookies([second]).answer(renewed, ip("127.0.0.1"))[0] == "valid"
        assert server.stats.cookies["invalid"][0] == 0
