"""One blocking UDP socket served by a dedicated thread, outside the event loop.

Under an event loop every datagram pays for a readiness poll and the loop's
bookkeeping around the callback; a thread that sits in ``recvfrom`` pays for
the two system calls only (docs/dependencies.md, "DNS speed"). The GIL is released
while the thread waits, so the event loop (TCP, etcd, metrics) runs then; the
answer functions are the same as over TCP, and read the server's tables
through one reference, so a table swap on the loop thread is safe.

Stopping: ``stop`` sets a flag and shuts the socket down, which wakes a
blocked ``recvfrom`` on Linux; a datagram to the socket's own address wakes
it elsewhere. The thread then returns and the socket is closed.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable

from dnsserver.rrl import RateLimiter
from steering import logs

log = logs.get(__name__)

Answer = Callable[[bytes, str, int], "bytes | None"]
# the fast path also takes the address raw (``udpbatch``: an IPv4 ``sin_addr`` int or 16 IPv6 bytes)
FastAnswer = Callable[[bytes, "str | bytes | int", int], "bytes | None"]
MAX_DATAGRAM = 65535  # read whole datagrams: a cut-short query would be misread, not refused


def bind_udp(host: str, port: int) -> socket.socket:
    """A blocking UDP socket bound to HOST:PORT (IPv4 or IPv6, as the address says)."""
    family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM,
                                                      flags=socket.AI_PASSIVE | socket.AI_NUMERICHOST)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.bind(addr)
    except OSError:
        sock.close()
        raise
    return sock


class UdpWorker:
    """Serves ``sock`` on its own thread: fast path first, then the slow path, never raising.

    With a rate limiter (``rrl``), ``fast`` is ``FastPath.answer_udp``: it limits what it answers itself
    (b"": drop), counting in the window this loop moves with ``rrl.tick``; the slow path's replies pass
    ``rrl.check`` here. A limiter that fails lets the reply go (a bug there must not silence the server)."""

    def __init__(self, sock: socket.socket, fast: FastAnswer, slow: Answer, rrl: RateLimiter | None = None) -> None:
        self.sock = sock
        self.fast = fast
        self.slow = slow
        self.rrl = rrl
        self._stop = [False]
        host, port = sock.getsockname()[:2]
        name = f"dns-udp-{host}:{port}"
        self.thread = threading.Thread(target=self._serve, name=name, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _serve(self) -> None:
        # locals: the loop body is the whole per-query cost outside the answer functions
        recvfrom = self.sock.recvfrom
        sendto = self.sock.sendto
        fast = self.fast
        slow = self.slow
        rrl = self.rrl
        limit = rrl.check if rrl is not None else None
        tick = rrl.tick if rrl is not None else None
        clock = time.monotonic
        stop = self._stop
        now = 0
        while not stop[0]:
            try:
                data, addr = recvfrom(MAX_DATAGRAM)
            except OSError:
                continue  # e.g. ICMP errors reported on a later read; stop is checked above
            if addr is None:
                continue  # woken by shutdown (Linux)
            host = addr[0]
            if tick is not None:
                now = int(clock())
                tick(now)
            try:
                resp = fast(data, host, 0)
            except Exception:
                resp = None
            if resp is None:
                resp = slow(data, host, 0)  # never raises: it answers SERVFAIL on internal errors
                if resp is None:
                    continue
                if limit is not None:
                    try:
                        resp = limit(data, resp, host, now)
                    except Exception:
                        pass
                    if resp is None:
                        continue
            if not resp:
                continue  # the fast path's rate limit dropped it
            try:
                sendto(resp, addr)
            except OSError:
                pass  # the client's socket is gone or the buffer is full: UDP may drop

    def request_stop(self) -> None:
        self._stop[0] = True

    def stop(self, timeout: float = 5.0) -> None:
        self.request_stop()
        sock = self.sock
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)  # ENOTCONN on an unconnected socket, but wakes recvfrom
        self.thread.join(0.5)
        if self.thread.is_alive():
            self._wake()
            self.thread.join(timeout)
        if self.thread.is_alive():
            log.error("dns.udp.thread_stuck", thread=self.thread.name)
        sock.close()

    def _wake(self) -> None:
        host, port = self.sock.getsockname()[:2]
        if host in ("0.0.0.0", "::"):
            host = "127.0.0.1" if self.sock.family == socket.AF_INET else "::1"
        with contextlib.suppress(OSError), socket.socket(self.sock.family, socket.SOCK_DGRAM) as s:
            s.sendto(b"", (host, port))
