"""DNS Cookies (RFC 7873) with interoperable server cookies (RFC 9018, version 1).

A server cookie is 16 bytes: version 1, three reserved bytes (zero when we
make one), a 32-bit timestamp (seconds, serial arithmetic) and
SipHash-2-4(client cookie | version | reserved | timestamp | client IP)
under a 16-byte secret. Every server that shares the secret (the workers of
one server, the members of an anycast group) accepts the others' cookies.

Secrets: ``dns.cookies.secret_file`` holds hex secrets, one a line; the
first signs, every one is accepted, so a new secret goes first and the old
one stays below it for an hour. The file is re-read when its mtime, size or
inode change, looked at no more than every ``RELOAD_SECONDS`` (never per
query). Without a file the secret is ``STEERING_DNS_COOKIE_SECRET`` (hex,
set by the supervisor so its workers agree), else random per start.

What a query gets (we never answer BADCOOKIE: an authoritative server gains
nothing from making a legitimate client that lost its cookie retry, and rate
limiting asks ``query_has_valid_server_cookie`` when it matters):

* client cookie only: the answer, and a fresh server cookie;
* a valid server cookie: the answer and the same cookie while it is younger
  than half an hour and made with the signing secret, else a fresh one;
* an invalid one (another secret, another address, older than an hour, more
  than five minutes ahead, not version 1): the answer and a fresh cookie;
* a malformed option (fewer than 8 bytes, 9 to 15, more than 40): FORMERR.
"""

from __future__ import annotations

import os
import secrets as _random
import socket
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from siphashc import siphash

from dnsserver import ednsopts
from dnsserver.metrics import Stats
from steering import logs
from steering.config import ConfigError

log = logs.get(__name__)

ENV_SECRET = "STEERING_DNS_COOKIE_SECRET"
RELOAD_SECONDS = 5.0
MAX_AGE = 3600  # RFC 9018 §4.3: older cookies are invalid
MAX_AHEAD = 300  # ... and so are cookies stamped more than five minutes in the future
RENEW_AGE = 1800  # ... and a valid cookie is replaced once it is half an hour old

CLIENT_ONLY, VALID, INVALID, MALFORMED = "client_only", "valid", "invalid", "malformed"
RESULTS = (CLIENT_ONLY, VALID, INVALID, MALFORMED)
_V1 = b"\x01\x00\x00\x00"


def well_formed(data: bytes) -> bool:
    """RFC 7873 §5.2.2: a client cookie of 8 bytes, alone or followed by a server cookie of 8 to 32."""
    n = len(data)
    return n == 8 or 16 <= n <= 40


def parse_secrets(text: str) -> list[bytes]:
    """Hex secrets, one a line (blank lines and ``#`` comments skipped); each must be 16 bytes."""
    out = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            secret = bytes.fromhex(line)
        except ValueError:
            raise ValueError(f"line {number}: not hex") from None
        if len(secret) != 16:
            raise ValueError(f"line {number}: {len(secret)} bytes, want 16")
        out.append(secret)
    if not out:
        raise ValueError("no secret")
    return out


def packed_address(host: str) -> bytes:
    """The client address as the hash takes it: 4 bytes for IPv4 (also when mapped into IPv6), else 16."""
    host = host.split("%", 1)[0]
    try:
        return socket.inet_pton(socket.AF_INET, host)
    except OSError:
        raw = socket.inet_pton(socket.AF_INET6, host)
        return raw[12:] if raw[:12] == b"\x00" * 10 + b"\xff\xff" else raw


def server_cookie(secret: bytes, client_cookie: bytes, head: bytes, client_ip: bytes) -> bytes:
    """The 16-byte server cookie for ``head`` (version, reserved, timestamp: 8 bytes) under ``secret``."""
    return head + siphash(secret, client_cookie + head + client_ip).to_bytes(8, "little")


class Cookies:
    """The secrets and the rules above; safe to share between threads (the secrets are one tuple, swapped)."""

    def __init__(self, secrets: Sequence[bytes], stats: Stats | None = None, secret_file: Path | None = None,
                 clock: Callable[[], float] = time.time, monotonic: Callable[[], float] = time.monotonic) -> None:
        if not secrets or any(len(s) != 16 for s in secrets):
            raise ValueError("cookie secrets must be 16 bytes each, at least one")
        self.secrets: tuple[bytes, ...] = tuple(secrets)
        self.stats = stats or Stats()
        self.secret_file = secret_file
        self.clock = clock
        self.monotonic = monotonic
        self.reload_every = RELOAD_SECONDS
        self._stamp = self._file_stamp() if secret_file else None
        self._checked = float("-inf")  # monotonic time of the last look at the file

    @classmethod
    def create(cls, secret_file: Path | None, stats: Stats | None = None) -> Cookies:
        """From the secret file when given, else the environment's shared secret, else a random one.
        An unusable file or variable is a ``ConfigError``: a server must not start with secrets it cannot use."""
        if secret_file is not None:
            try:
                secrets = parse_secrets(secret_file.read_text())
            except (OSError, ValueError) as exc:
                raise ConfigError(str(secret_file), [f"dns.cookies.secret_file: {exc}"]) from None
            return cls(secrets, stats, secret_file)
        shared = os.environ.get(ENV_SECRET)
        if shared:
            try:
                return cls(parse_secrets(shared), stats)
            except ValueError as exc:
                raise ConfigError(ENV_SECRET, [str(exc)]) from None
        return cls([_random.token_bytes(16)], stats)

    # ---- secrets

    def _file_stamp(self) -> tuple[int, int, int] | None:
        assert self.secret_file is not None
        try:
            st = self.secret_file.stat()
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size, st.st_ino

    def _maybe_reload(self) -> None:
        if self.secret_file is None:
            return
        now = self.monotonic()
        if now - self._checked < self.reload_every:
            return
        self._checked = now
        stamp = self._file_stamp()
        if stamp == self._stamp or stamp is None:
            return  # unchanged, or gone for a moment (a rename in progress): keep what we have
        self._stamp = stamp
        try:
            self.secrets = tuple(parse_secrets(self.secret_file.read_text()))
        except (OSError, ValueError) as exc:
            log.warning("dns.cookies.secret_file_unreadable", path=str(self.secret_file), error=str(exc))
            return
        log.info("dns.cookies.secrets_reloaded", path=str(self.secret_file), count=len(self.secrets))

    # ---- cookies

    def _check(self, data: bytes, client_ip: bytes, now: int) -> tuple[str, bool]:
        """(result, whether the cookie can be sent back as it is) for a well-formed option."""
        if len(data) == 8:
            return CLIENT_ONLY, False
        sc = data[8:]
        if len(sc) != 16 or sc[0] != 1:
            return INVALID, False  # not an RFC 9018 version 1 cookie: perhaps another server's own format
        age = (now - int.from_bytes(sc[4:8], "big")) & 0xFFFFFFFF
        if age >= 0x80000000:
            age -= 0x100000000  # serial arithmetic (RFC 1982): stamped in the future
        if age > MAX_AGE or age < -MAX_AHEAD:
            return INVALID, False
        msg = data[:8] + sc[:8] + client_ip
        mac = sc[8:]
        for i, secret in enumerate(self.secrets):
            if siphash(secret, msg).to_bytes(8, "little") == mac:
                return VALID, i == 0 and age < RENEW_AGE
        return INVALID, False

    def answer(self, data: bytes, client_ip: bytes) -> tuple[str, bytes | None]:
        """For a query's COOKIE option data: (result, the reply's option data, None when malformed)."""
        if not well_formed(data):
            self.stats.cookies[MALFORMED][0] += 1
            return MALFORMED, None
        self._maybe_reload()
        now = int(self.clock()) & 0xFFFFFFFF
        result, keep = self._check(data, client_ip, now)
        self.stats.cookies[result][0] += 1
        if keep:
            return result, data
        head = _V1 + now.to_bytes(4, "big")
        return result, data[:8] + server_cookie(self.secrets[0], data[:8], head, client_ip)

    def query_has_valid_server_cookie(self, wire: bytes, client_ip_text: str) -> bool:
        """Whether the query carries a server cookie of ours for this address: a client that can receive at
        its address (for rate limiting, asked only about a response it is about to limit). Counts nothing."""
        where = ednsopts.locate_opt(wire)
        if where is None:
            return False
        options = ednsopts.parse_options(wire[where[1]:where[2]])
        if not options:
            return False
        data = next((d for c, d in options if c == ednsopts.COOKIE), b"")
        if len(data) != 24:
            return False
        try:
            ip = packed_address(client_ip_text)
        except (OSError, ValueError):
            return False
        self._maybe_reload()
        return self._check(data, ip, int(self.clock()) & 0xFFFFFFFF)[0] == VALID
