"""UDP in batches: ``recvmmsg`` and ``sendmmsg`` (Linux, through ctypes) on the worker thread.

Each Python socket call costs a system call plus the socket module's wrapper
around it; under load the queue holds many queries, and one ``recvmmsg``
takes up to ``BATCH`` of them, one ``sendmmsg`` sends their replies. That is
what knot does in C; here it saves about a µs per query (docs/dependencies.md,
"DNS speed"). At low load a batch is one query, and the cost is close to the
plain loop's.

The message headers, address slots and receive buffers are preallocated
bytearrays that ctypes only points into; per query the loop reads the
length and the source address through ``memoryview`` casts, and the reply
is not copied: reply i goes out as message i, to address slot i, with its
iovec pointing at the reply's own bytes (CPython keeps a bytes object's data
at a fixed offset from its id; checked at load), which the loop holds until
``sendmmsg`` returns. The resolver's address goes to the fast path raw (an
IPv4 ``sin_addr`` as an int, an IPv6 address as 16 bytes); only the slow
path needs it as text. Every reply passes the rate limit (``rrl``) with the
same raw address, against a clock read once per batch: the fast path counts
its own replies (``FastPath.answer_udp``) in the window the batch moved to,
the slow path's pass ``RateLimiter.check`` here.

Not Linux, or no ``recvmmsg`` in the C library: ``batch_available()`` is
False and the server uses the plain ``UdpWorker``.
"""

from __future__ import annotations

import contextlib
import ctypes
import socket
import struct
import sys
import time

from dnsserver import fastpath
from dnsserver.metrics import Stats
from dnsserver.rrl import RateLimiter
from dnsserver.udpthread import Answer, FastAnswer, UdpWorker

BATCH = 64
SLOT = 65536  # a whole datagram (and any reply) fits a slot
_NAME = 32  # sockaddr_in6 is 28 bytes
_MSG = 64  # struct mmsghdr on LP64: msghdr (56) + msg_len (4) + padding
_MSG_WAITFORONE = 0x10000
_DATA = sys.getsizeof(b"") - 1  # where a bytes object's data starts, from its address (its id in CPython)

_libc: ctypes.CDLL | None = None


def _load() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux") or struct.calcsize("P") != 8 or sys.implementation.name != "cpython":
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.recvmmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int, ctypes.c_void_p]
        libc.recvmmsg.restype = ctypes.c_int
        libc.sendmmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int]
        libc.sendmmsg.restype = ctypes.c_int
    except (OSError, AttributeError):
        return None
    probe = b"steering"  # replies are sent from their own bytes: check where those are
    if ctypes.string_at(id(probe) + _DATA, len(probe)) != probe:
        return None
    return libc


def batch_available() -> bool:
    global _libc
    if _libc is None:
        _libc = _load()
    return _libc is not None


def _buffer(size: int) -> tuple[bytearray, int, memoryview]:
    buf = bytearray(size)
    return buf, ctypes.addressof(ctypes.c_char.from_buffer(buf)), memoryview(buf)


class BatchUdpWorker(UdpWorker):
    """``UdpWorker`` with the receive and send loop done ``BATCH`` datagrams per system call."""

    def __init__(self, sock: socket.socket, fast: FastAnswer, slow: Answer, rrl: RateLimiter | None = None,
                 stats: Stats | None = None) -> None:
        if not batch_available():
            raise OSError("recvmmsg/sendmmsg are not available here")
        super().__init__(sock, fast, slow, rrl)
        self.v6 = sock.family == socket.AF_INET6
        self.stats = stats  # the native loop times its batches into stats.udp_timings

    def _serve(self) -> None:
        hot = fastpath.native_module()
        if hot is not None:
            # the same loop in C (dnsserver/_hot.c): it calls a native answer object directly
            rrl = self.rrl
            timings = None
            if self.stats is not None:
                timings = self.stats.udp_timings
                self.stats.udp_timed = True
            hot.serve(self.sock.fileno(), self.v6, self.fast, self.slow, self._text,
                      rrl.tick if rrl is not None else None, rrl.check if rrl is not None else None, self._stop,
                      timings)
            return
        assert _libc is not None
        recvmmsg = _libc.recvmmsg
        sendmmsg = _libc.sendmmsg
        fd = self.sock.fileno()
        # every buffer stays bound for the loop's life: the kernel reads and writes them through their addresses
        _rbuf, raddr, rmv = _buffer(BATCH * SLOT)
        _names, naddr, nmv = _buffer(BATCH * _NAME)
        rmsg, rmaddr, rmmv = _buffer(BATCH * _MSG)
        riov, riaddr, _ = _buffer(BATCH * 16)
        smsg, smaddr, _smmv = _buffer(BATCH * _MSG)
        _siov, siaddr, simv = _buffer(BATCH * 16)
        # a socket of one family always reports the same address length, so the reply to message i
        # goes out as message i to name slot i, with a fixed length: only its iovec changes per query
        namelen = 28 if self.v6 else 16
        for i in range(BATCH):
            struct.pack_into("PN", riov, i * 16, raddr + i * SLOT, SLOT)
            # msghdr: name, namelen, iov, iovlen, control, controllen, flags
            struct.pack_into("PI4xPNPNi4x", rmsg, i * _MSG, naddr + i * _NAME, _NAME, riaddr + i * 16, 1, 0, 0, 0)
            struct.pack_into("PI4xPNPNi4x", smsg, i * _MSG, naddr + i * _NAME, namelen, siaddr + i * 16, 1, 0, 0, 0)
        r32 = rmmv.cast("I")  # msg_len at [16 i + 14]
        si64 = simv.cast("Q")  # iov_base at [2 i], iov_len at [2 i + 1]
        n32 = nmv.cast("I")  # an IPv4 sin_addr at [8 i + 1]
        # per slot: index, data offset, where msg_len is, where the address is, where its iovec is
        slots = [(i, i * SLOT, 16 * i + 14, i * _NAME + 8 if self.v6 else 8 * i + 1, 2 * i, 2 * i + 1)
                 for i in range(BATCH)]
        keep: list[bytes | None] = [None] * BATCH  # the replies the iovecs point into, alive until sent
        fast = self.fast
        slow = self.slow
        rrl = self.rrl
        limit = rrl.check if rrl is not None else None
        tick = rrl.tick if rrl is not None else None
        clock = time.monotonic
        stop = self._stop
        v6 = self.v6

        def send(first: int, end: int) -> None:
            while first < end:
                sent = sendmmsg(fd, smaddr + first * _MSG, end - first, 0)
                # an error after some messages ends the call early (and is not reported): retry from the
                # one that failed; an error on the first one: skip it (UDP may drop)
                first += sent if sent > 0 else 1

        while not stop[0]:
            count = recvmmsg(fd, rmaddr, BATCH, _MSG_WAITFORONE, None)
            if count <= 0:
                continue  # EINTR, ICMP errors, or woken by shutdown: stop is checked above
            first = 0
            now = int(clock())  # one clock read per batch: the rate limit's window is a whole second
            if tick is not None:
                tick(now)  # the window the fast path counts in
            for i, base, lenix, hostix, iov, iovlen in slots[:count]:
                q = bytes(rmv[base:base + r32[lenix]])
                host: bytes | int = bytes(nmv[hostix:hostix + 16]) if v6 else n32[hostix]
                try:
                    resp = fast(q, host, 0)
                except Exception:
                    resp = None
                if resp is None:
                    resp = slow(q, self._text(host), 0)  # never raises
                    if resp is not None:
                        resp = bytes(resp)  # the iovec needs an exact bytes object (a no-op for one)
                        if limit is not None:
                            try:
                                resp = limit(q, resp, host, now)
                            except Exception:
                                pass  # a limiter bug lets the reply go
                if not resp:  # no reply (or the fast path's rate limit dropped it): send the ones before, go on
                    send(first, i)
                    first = i + 1
                    continue
                keep[i] = resp
                # no copy: the iovec points at the reply's own bytes (CPython keeps them at a fixed offset)
                si64[iov] = id(resp) + _DATA
                si64[iovlen] = len(resp)
            send(first, count)

    def _text(self, host: bytes | int) -> str:
        if isinstance(host, int):
            return socket.inet_ntop(socket.AF_INET, host.to_bytes(4, sys.byteorder))
        with contextlib.suppress(ValueError):
            return socket.inet_ntop(socket.AF_INET6, host)
        return "::"
