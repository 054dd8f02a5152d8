"""Free loopback ports. ``free_port`` is ``steering.etcdproc``'s (the demo's etcd needs it too): one copy."""

from __future__ import annotations

import socket

from steering.etcdproc import free_port

__all__ = ["dual_free_port", "free_port", "free_port_block"]

_KINDS = (socket.SOCK_STREAM, socket.SOCK_DGRAM)


def _bindable(family: socket.AddressFamily, host: str, port: int) -> bool:
    for kind in _KINDS:
        with socket.socket(family, kind) as s:
            try:
                s.bind((host, port))
            except OSError:
                return False
    return True


def dual_free_port() -> int:
    """A port free for UDP and TCP on both 127.0.0.1 and ::1 (a DNS server listening on both families)."""
    for _ in range(50):
        port = free_port()
        if _bindable(socket.AF_INET, "127.0.0.1", port) and _bindable(socket.AF_INET6, "::1", port):
            return port
    raise RuntimeError("no port free for UDP and TCP on both loopback families")


def free_port_block(n: int) -> int:
    """A base port with ``n`` consecutive ports free for TCP and UDP on 127.0.0.1 (the demo takes port, port+1)."""
    for _ in range(50):
        base = free_port()
        if base + n <= 65000 and all(_bindable(socket.AF_INET, "127.0.0.1", p) for p in range(base, base + n)):
            return base
    raise RuntimeError(f"no block of {n} free ports")
