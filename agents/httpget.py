"""A small asyncio HTTP GET, enough for probes and capacity endpoints.

Why not a library: aiohttp/httpx are not dependencies, and urllib in a thread
cannot be cancelled when a target hangs. This speaks HTTP/1.0 (so servers
never answer chunked), reads at most ``max_body`` bytes, and is cancellable
at every await; the caller bounds it with a timeout.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

MAX_BODY = 1 << 20


class HttpError(Exception):
    """The exchange failed before a status line arrived, or the answer was malformed."""


@dataclass(frozen=True)
class Response:
    status: int
    headers: dict[str, str]
    body: bytes


async def get(url: str, max_body: int = MAX_BODY, ssl_context: ssl.SSLContext | None = None) -> Response:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise HttpError(f"unsupported URL {url!r}")
    tls = parts.scheme == "https"
    port = parts.port or (443 if tls else 80)
    host = parts.hostname
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    host_header = f"[{host}]" if ":" in host else host
    if parts.port:
        host_header += f":{parts.port}"
    context = (ssl_context or ssl.create_default_context()) if tls else None
    try:
        reader, writer = await asyncio.open_connection(host, port, ssl=context)
    except OSError as exc:
        raise HttpError(f"connect {host}:{port}: {exc.strerror or exc}") from None
    try:
        writer.write(
            f"GET {path} HTTP/1.0\r\nHost: {host_header}\r\nUser-Agent: steering-agent\r\n"
            "Accept: */*\r\nConnection: close\r\n\r\n".encode("latin-1")
        )
        await writer.drain()
        status_line = await reader.readline()
        if not status_line:
            raise HttpError("connection closed before a status line")
        fields = status_line.decode("latin-1").split(None, 2)
        if len(fields) < 2 or not fields[0].startswith("HTTP/") or not fields[1].isdigit():
            raise HttpError(f"malformed status line {status_line[:80]!r}")
        status = int(fields[1])
        headers: dict[str, str] = {}
        for _ in range(200):
            line = await reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        else:
            raise HttpError("too many header lines")
        length = headers.get("content-length", "")
        want = min(int(length), max_body) if length.isdigit() else max_body
        body = b""
        while len(body) < want:
            more = await reader.read(want - len(body))
            if not more:
                break
            body += more
        return Response(status, headers, body)
    except (OSError, asyncio.IncompleteReadError) as exc:
        raise HttpError(f"{host}:{port}: {exc}") from None
    finally:
        writer.close()
        try:
            await asyncio.wait_for(writer.wait_closed(), 1.0)
        except (TimeoutError, OSError, ssl.SSLError):
            pass
