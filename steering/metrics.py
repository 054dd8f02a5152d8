"""Prometheus exposition for every daemon (``--metrics-addr HOST:PORT``)."""

from __future__ import annotations

from prometheus_client import start_http_server

from steering.addr import parse_hostport


def serve(addr: str | None) -> None:
    """Start the /metrics HTTP server on ``addr`` (no-op for None or empty)."""
    if not addr:
        return
    host, port = parse_hostport(addr)
    start_http_server(port, addr=host)
