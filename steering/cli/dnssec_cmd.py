"""``steerctl dnssec``: a zone's signing keys (docs/dnssec.md).

* ``keygen ZONE [--algorithm A] [--split] [--out DIR]``: new key files (PKCS#8 PEM, mode 0600), the DS
  records to give the registrar, and the config lines that use them.
* ``ds ZONE --config FILE``: the DS records again, from the configured key files.
* ``status --config FILE [--server HOST:PORT]``: per signed zone its keys, tags and DS; with ``--server``,
  the DNSKEY RRset a running server publishes, whether it validates against those DS records, its
  signature's validity and when the server re-signs.

Key material is never printed or logged: only public keys, tags and digests.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import click

EXIT_USAGE = 2


def _fail(message: str, code: int = EXIT_USAGE) -> None:
    click.echo(f"steerctl dnssec: {message}", err=True)
    sys.exit(code)


@click.group(name="dnssec")
def dnssec() -> None:
    """DNSSEC keys: generate them, print the DS for the registrar, show signing status."""


@dnssec.command(name="keygen")
@click.argument("zone")
@click.option("--algorithm", type=click.Choice(["ECDSAP256SHA256", "ED25519"], case_sensitive=False),
              default="ECDSAP256SHA256", show_default=True, help="the keys' algorithm (13 or 15)")
@click.option("--split", is_flag=True, help="a KSK and a ZSK instead of one combined signing key")
@click.option("--out", "out", default=".", type=click.Path(file_okay=False), show_default=True,
              help="directory for the key files")
def keygen(zone: str, algorithm: str, split: bool, out: str) -> None:
    """Write new key files for ZONE and print its DS records and config lines."""
    from dnsserver.dnssec import write_key

    origin = _origin(zone)
    roles = ["ksk", "zsk"] if split else ["csk"]
    written = []
    try:
        for role in roles:
            written.append((role, *write_key(Path(out), origin, algorithm.upper(), role)))
    except OSError as exc:
        _fail(f"--out: cannot write {out}: {exc.strerror or exc}")
    for role, path, key in written:
        click.echo(f"; {role} key {key.tag}: {path}")
    for _role, _path, key in written:
        if key.signs_keys:
            click.echo(_ds_line(origin, key.dnskey))
    click.echo("; config (zones[].dnssec):")
    click.echo(f";   dnssec: {{algorithm: {algorithm.upper()}, keys: [")
    for role, path, _key in written:
        click.echo(f";     {{file: {path}, role: {role}}},")
    click.echo(";   ]}")


@dnssec.command(name="ds")
@click.argument("zone")
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False),
              help="the deployment's steering.yaml")
def ds(zone: str, config_path: str) -> None:
    """Print ZONE's DS records (SHA-256) from its configured key files, for the registrar."""
    keys = _zone_keys(config_path).get(_origin(zone))
    if keys is None:
        _fail(f"{zone}: not a zone with DNSSEC enabled in {config_path}")
        return
    for key in keys.sep_keys():
        click.echo(_ds_line(keys.origin, key.dnskey))


@dnssec.command(name="status")
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False),
              help="the deployment's steering.yaml")
@click.option("--server", default=None, help="HOST:PORT of a running `steering dns` to ask for its DNSKEY")
def status(config_path: str, server: str | None) -> None:
    """Signed zones: keys, tags, DS; with --server, the published DNSKEY, its signature and re-signing."""
    zone_keys = _zone_keys(config_path)
    if not zone_keys:
        click.echo("no zone has DNSSEC enabled")
        return
    problems = 0
    for origin, keys in zone_keys.items():
        click.echo(f"zone {origin}  algorithm {keys.algorithm}  validity {keys.validity_days} d "
                   f"(re-signed every {keys.validity_days / 2:g} d)")
        now = time.time()
        for key in keys.keys:
            state = ("signing" if key.signing(now) else "signs DNSKEY" if key.signs_keys and key.published(now)
                     else "published" if key.published(now) else "not published")
            timeline = "  ".join(f"{name} {_when(t)}" for name, t in (
                ("publish", key.publish), ("activate", key.activate), ("inactive", key.inactive),
                ("delete", key.delete)) if t is not None)
            click.echo(f"  {key.role:3} tag {key.tag:5}  flags {key.dnskey.flags}  {state:13}  {key.path}"
                       + (f"  ({timeline})" if timeline else ""))
        for key in keys.sep_keys():
            click.echo(f"  {_ds_line(origin, key.dnskey)}")
        if server is not None:
            problems += _server_status(server, keys)
    if problems:
        sys.exit(1)


def _server_status(server: str, keys: Any) -> int:
    """What the server at ``server`` publishes for ``keys.origin``; 1 when it does not match or validate."""
    import dns.dnssec
    import dns.exception
    import dns.message
    import dns.query
    import dns.rdataclass
    import dns.rdatatype

    from steering.addr import parse_hostport

    host, port = parse_hostport(server)
    q = dns.message.make_query(keys.origin, dns.rdatatype.DNSKEY, want_dnssec=True)
    try:
        reply = dns.query.tcp(q, host, port=port, timeout=5)
    except (OSError, dns.exception.DNSException) as exc:
        click.echo(f"  server {server}: no answer ({type(exc).__name__}: {exc})")
        return 1
    dnskey = reply.get_rrset(reply.answer, keys.origin, dns.rdataclass.IN, dns.rdatatype.DNSKEY)
    sigs = reply.get_rrset(reply.answer, keys.origin, dns.rdataclass.IN, dns.rdatatype.RRSIG, dns.rdatatype.DNSKEY)
    if dnskey is None or sigs is None:
        click.echo(f"  server {server}: no signed DNSKEY RRset for {keys.origin}")
        return 1
    published = {dns.dnssec.key_id(k) for k in dnskey}
    configured = {k.tag for k in keys.keys}
    click.echo(f"  server {server}: DNSKEY tags {sorted(published)}"
               + ("" if published == configured else f" (configured {sorted(configured)}: restart to load them)"))
    try:
        dns.dnssec.validate(dnskey, sigs, {keys.origin: dnskey})
        trusted = any(dns.dnssec.make_ds(keys.origin, k, "SHA256") in set(keys.ds()) for k in dnskey)
    except dns.exception.DNSException as exc:
        click.echo(f"  signature: does not validate ({exc})")
        return 1
    now = time.time()
    for sig in sigs:
        inception, expiration = sig.inception, sig.expiration
        # epochs start on a grid of half the validity, the inception an hour before (clock skew); a key
        # timeline event may start one sooner
        resign = inception + 3600 + keys.validity_days * 86400 / 2
        click.echo(f"  RRSIG key {sig.key_tag}: valid {_when(inception)} .. {_when(expiration)} "
                   f"({(expiration - now) / 86400:.1f} d left), next re-signing at {_when(resign)} at the latest")
    click.echo(f"  chain: {'DNSKEY matches the DS' if trusted else 'no DNSKEY matches the configured DS'}")
    return 0 if trusted else 1


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(t))


def _ds_line(origin: Any, dnskey: Any) -> str:
    import dns.dnssec

    return f"{origin} IN DS {dns.dnssec.make_ds(origin, dnskey, 'SHA256').to_text()}"


def _origin(zone: str) -> Any:
    import dns.exception
    import dns.name

    try:
        return dns.name.from_text(zone.lower())
    except dns.exception.DNSException as exc:
        _fail(f"ZONE: {zone!r} is not a domain name ({exc})")


def _zone_keys(config_path: str) -> dict[Any, Any]:
    """Every signed zone's keys, read as the DNS server reads them; one line and exit 2 on a problem."""
    from dnsserver.zones import ZoneError, load_zones
    from steering.config import ConfigError, load_config

    try:
        cfg = load_config(config_path)
        zones = load_zones(cfg)
    except ConfigError as exc:
        for line in str(exc).splitlines():
            click.echo(f"steerctl dnssec: {line}", err=True)
        sys.exit(EXIT_USAGE)
    except ZoneError as exc:
        _fail(f"{config_path}: {exc}")
    return {z.origin: z.keys for z in zones if z.keys is not None}
