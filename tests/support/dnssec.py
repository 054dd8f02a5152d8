"""DNSSEC for tests: a signed copy of the example zone, and validation of a reply the way a resolver's
validator would (every RRset against the zone's DNSKEY, the DNSKEY against a DS-derived trust anchor)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dns.dnssec
import dns.message
import dns.name
import dns.node
import dns.rdataset
import dns.rdatatype
import dns.rrset

from dnsserver.dnssec import write_key
from tests.support.dns_server import write_config

ZONE = dns.name.from_text("example.test.")


def signed_config(directory: Path, algorithm: str = "ECDSAP256SHA256", split: bool = False,
                  extra_zone: str = "", dns_settings: dict[str, Any] | None = None) -> tuple[Path, list[Path]]:
    """The example config with ``example.test.`` signed: a combined key, or a KSK and a ZSK (``split``)."""
    import yaml

    keydir = directory / "keys"
    roles = ["ksk", "zsk"] if split else ["csk"]
    paths = [write_key(keydir, ZONE, algorithm, role)[0] for role in roles]
    path = write_config(directory, dns=dns_settings, extra_zone=extra_zone)
    data = yaml.safe_load(path.read_text())
    for zone in data["zones"]:
        if zone["origin"].rstrip(".") == "example.test":
            zone["dnssec"] = {"algorithm": algorithm,
                              "keys": [{"file": str(p), "role": r} for p, r in zip(paths, roles, strict=True)]}
    path.write_text(yaml.safe_dump(data))
    return path, paths


def validate(reply: dns.message.Message, dnskey: dns.rrset.RRset, sections: tuple[str, ...] = ("answer", "authority"),
             now: float | None = None) -> int:
    """Every RRset of ``sections`` (but RRSIGs, and the NS of a referral, which the parent does not sign)
    validated with its RRSIG against ``dnskey``; the number validated. AssertionError when one is unsigned
    or does not validate."""
    keys: dict[dns.name.Name, dns.node.Node | dns.rdataset.Rdataset] = {dnskey.name: dnskey}
    count = 0
    for section_name in sections:
        section = getattr(reply, section_name)
        for rrset in section:
            if rrset.rdtype == dns.rdatatype.RRSIG:
                continue
            if rrset.rdtype == dns.rdatatype.NS and section_name == "authority" and rrset.name != dnskey.name:
                continue  # a referral's NS set is the child's data: unsigned on the parent side
            sigs = [r for r in section if r.rdtype == dns.rdatatype.RRSIG and r.name == rrset.name
                    and r[0].type_covered == rrset.rdtype]
            assert sigs, f"no RRSIG for {rrset.name} {dns.rdatatype.to_text(rrset.rdtype)} in {section_name}"
            dns.dnssec.validate(rrset, sigs[0], keys, now=now)
            count += 1
    return count
