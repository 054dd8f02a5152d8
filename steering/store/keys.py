"""The etcd keyspace of docs/architecture.md §4, under a configurable prefix. Pure: no I/O.

Every key the store touches is built here, so the layout lives in one place:
``Keys`` gives full keys under one prefix; the ``*_path`` functions give the
same keys relative to the prefix, the form pure code (operator change sets,
``Skipped.key``) names them in.
Components that end up inside a key (site, region, service, geo, request id)
must not contain ``/`` or whitespace, or one record could shadow another.
"""

from __future__ import annotations

import re

_COMPONENT = re.compile(r"^[^/\s]{1,253}$")
VERSION_DIGITS = 20  # zero-padded so that key order is version order


def check_component(what: str, value: str) -> str:
    """Return ``value`` if it can be one path component of a key, else raise ValueError naming it."""
    if not isinstance(value, str) or not _COMPONENT.match(value):
        raise ValueError(f"{what}: {value!r} cannot be part of an etcd key (empty, too long, or has '/' or spaces)")
    return value


def range_end(prefix: bytes) -> bytes:
    """The exclusive end of the key range that starts with ``prefix``."""
    b = bytearray(prefix)
    for i in range(len(b) - 1, -1, -1):
        if b[i] < 0xFF:
            b[i] += 1
            return bytes(b[: i + 1])
    return b"\x00"


# ---- paths relative to the prefix (pure strings): what operator change sets write and ``Skipped.key`` names
EVACUATIONS = "overrides/evacuations/"
RESTORES = "overrides/restores/"
PINS = "overrides/weights/"
OPERATOR_SEQ = "oplog/seq"
EVENTS = "events/"
# What operator actions may never write: the leader's, the table's, the operator log's own, the agents' keys
# and the leader's event timeline.
RESERVED = ("election/", "routing/", "requests/", "audit/", "health/", "oplog/", EVENTS, "drills/")


def evacuation_path(region: str) -> str:
    return EVACUATIONS + check_component("region", region)


def restore_path(region: str) -> str:
    return RESTORES + check_component("region", region)


def pin_path(service: str, geo: str) -> str:
    return PINS + check_component("service", service) + "/" + check_component("geo", geo)


def request_path(request_id: str) -> str:
    return "requests/" + check_component("request_id", request_id)


def audit_path(audit_id: str) -> str:
    return "audit/" + check_component("audit_id", audit_id)


def status_path(name: str) -> str:
    return "status/" + check_component("status name", name)


def health_path(site: str) -> str:
    return "health/" + check_component("site", site)


def event_path(event_id: str) -> str:
    """``events/<UTC time>-<hex>``: event keys sort by the time the leader wrote them."""
    return EVENTS + check_component("event id", event_id)


class Keys:
    """Key builder for one prefix, e.g. ``Keys("/steering/v1").health("site-a")``."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix.rstrip("/")
        self._p = self.prefix.encode() + b"/"

    def rel(self, relative: str) -> bytes:
        """A key given relative to the prefix (``overrides/evacuations/x``); rejects ``..`` and empty parts."""
        parts = relative.split("/")
        if not relative or any(not p or p in (".", "..") or p != p.strip() for p in parts):
            raise ValueError(f"key {relative!r}: must be a relative path with non-empty components")
        return self._p + relative.encode()

    def strip(self, key: bytes) -> str:
        """The part of ``key`` after the prefix."""
        if not key.startswith(self._p):
            raise ValueError(f"key {key!r} is outside prefix {self.prefix!r}")
        return key[len(self._p):].decode()

    # ---- single keys
    @property
    def topology(self) -> bytes:
        return self._p + b"topology"

    @property
    def routing_current(self) -> bytes:
        return self._p + b"routing/current"

    @property
    def leader(self) -> bytes:
        return self._p + b"election/leader"

    def health(self, site: str) -> bytes:
        return self._p + health_path(site).encode()

    def evacuation(self, region: str) -> bytes:
        return self._p + evacuation_path(region).encode()

    def restore(self, region: str) -> bytes:
        return self._p + restore_path(region).encode()

    def pin(self, service: str, geo: str) -> bytes:
        return self._p + pin_path(service, geo).encode()

    @property
    def operator_seq(self) -> bytes:
        """Bumped by every operator action: actions compare it to refuse acting on a stale read."""
        return self._p + OPERATOR_SEQ.encode()

    def request(self, request_id: str) -> bytes:
        return self._p + request_path(request_id).encode()

    def audit(self, audit_id: str) -> bytes:
        return self._p + audit_path(audit_id).encode()

    def status(self, name: str) -> bytes:
        return self.rel(status_path(name))

    def event(self, event_id: str) -> bytes:
        return self._p + event_path(event_id).encode()

    def routing_chunk(self, version: int, blob_id: str, index: int) -> bytes:
        return self.routing_version(version) + f"{blob_id}/{index:04d}".encode()

    def routing_version(self, version: int) -> bytes:
        """Prefix of one version's chunks: ``routing/v<zero-padded N>/``."""
        if version < 0:
            raise ValueError(f"version: {version} is negative")
        return self._p + f"routing/v{version:0{VERSION_DIGITS}d}/".encode()

    # ---- prefixes
    @property
    def health_prefix(self) -> bytes:
        return self._p + b"health/"

    @property
    def overrides_prefix(self) -> bytes:
        return self._p + b"overrides/"

    @property
    def restores_prefix(self) -> bytes:
        return self._p + RESTORES.encode()

    @property
    def audit_prefix(self) -> bytes:
        return self._p + b"audit/"

    @property
    def events_prefix(self) -> bytes:
        return self._p + EVENTS.encode()

    @property
    def routing_versions_prefix(self) -> bytes:
        return self._p + b"routing/v"

    def version_of(self, chunk_key: bytes) -> int | None:
        """The version a chunk key belongs to, or None if it is not a chunk key."""
        p = self.routing_versions_prefix
        if not chunk_key.startswith(p):
            return None
        digits = chunk_key[len(p): len(p) + VERSION_DIGITS]
        return int(digits) if digits.isdigit() else None
