"""DNSSEC key files read again while the server runs (docs/dnssec.md, "Replacing key files").

Operators roll keys by replacing the files the config names. The server reads
them again on SIGHUP, or when a file's stamp (modification time, size, inode)
changes, looked at on the re-signing timer. ``read_zone_keys`` reads every
signed zone's files the way the start does; it raises ``KeyError_`` naming
the field and the file when one cannot be used, and the caller keeps the keys
it has. ``same_keys`` tells whether anything a signature depends on changed.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from dnsserver.dnssec import ZoneKeys, load_zone_keys
from steering.config import Config

# (st_mtime_ns, st_size, st_ino); None: the file cannot be stat'ed (missing, a directory gone)
Stamp = tuple[int, int, int] | None


def _signed(cfg: Config) -> list[int]:
    return [i for i, z in enumerate(cfg.zones) if z.dnssec is not None and z.dnssec.enabled]


def key_stamps(cfg: Config) -> dict[str, Stamp]:
    """Each configured key file's stamp: a rename over it (as keygen writes) changes the inode, an edit
    in place the time or the size."""
    out: dict[str, Stamp] = {}
    for i in _signed(cfg):
        settings = cfg.zones[i].dnssec
        assert settings is not None
        for k in settings.keys:
            path = str(cfg.resolve_path(k.file))
            try:
                st = os.stat(path)
            except OSError:
                out[path] = None
                continue
            out[path] = (st.st_mtime_ns, st.st_size, st.st_ino)
    return out


def read_zone_keys(cfg: Config) -> list[ZoneKeys]:
    """Every signed zone's keys from its files now; ``KeyError_`` (field and file named, never the file's
    contents) when one is missing, unreadable, not a private key or not of the zone's algorithm."""
    import dns.name

    out = []
    for i in _signed(cfg):
        zone = cfg.zones[i]
        out.append(load_zone_keys(dns.name.from_text(zone.origin), zone.dnssec, f"zones[{i}].dnssec",
                                  cfg.resolve_path))
    return out


def _identity(keys: ZoneKeys) -> tuple[object, ...]:
    return (keys.origin, keys.algorithm, keys.dnskey_ttl, keys.validity_days,
            tuple((k.role, k.dnskey.to_digestable(), k.active, k.publish, k.activate, k.inactive, k.delete)
                  for k in keys.keys))


def same_keys(old: Sequence[ZoneKeys], new: Sequence[ZoneKeys]) -> bool:
    """True when ``new`` would sign exactly as ``old`` does (the same public keys, roles and timelines)."""
    return sorted(map(_identity, old), key=repr) == sorted(map(_identity, new), key=repr)


def tags(keys: Sequence[ZoneKeys]) -> list[str]:
    """``zone/role/tag`` for each key: what a log line may say about keys."""
    return [f"{z.origin.to_text()}/{k.role}/{k.tag}" for z in keys for k in z.keys]
