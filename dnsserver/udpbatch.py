"""UDP in batches: ``recvmmsg`` and ``sendmmsg`` (Linux, through ctypes) on the worker thread.

Each Python socket call costs a system call plus the socket module's wrapper
around it; under load the queue holds many queries, and one ``recvmmsg``
takes up to ``BATCH`` of them, one ``sendmmsg`` sends their replies. That is
what knot does in C; here it saves about a µs per query (DEPENDENCIES.md,
"DNS speed"). At low load a batch is one query, and the cost is close to the
plain loop's.

The message headers, address slots and data buffers are preallocated
bytearrays that ctypes only points into; per query the loop reads the
length and the source address through ``memoryview`` casts and copies the
reply into its send slot. The resolver's address goes to the fast path raw
(an IPv4 ``sin_addr`` as an int, an IPv6 address as 16 bytes); only the slow
path needs it as text.

Not Linux, or no ``recvmmsg`` in the C library: ``batch_available()`` is
False and the server uses the plain ``UdpWorker``.
"""

from __future__ import annotations

import contextlib
import ctypes
import socket
import struct
import sys

from dnsserver.udpthread import Answer, UdpWorker

BATCH = 64
SLOT = 65536  # a whole datagram (and any reply) fits a slot
_NAME = 32  # sockaddr_in6 is 28 bytes
_MSG = 64  # struct mmsghdr on LP64: msghdr (56) + msg_len (4) + padding
_MSG_WAITFORONE = 0x10000

_libc: ctypes.CDLL | None = None


def _load() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux") or struct.calcsize("P") != 8:
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.recvmmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int, ctypes.c_void_p]
        libc.recvmmsg.restype = ctypes.c_int
        libc.sendmmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int]
        libc.sendmmsg.restype = ctypes.c_int
    except (OSError, AttributeError):
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

    def __init__(self, sock: socket.socket, fast: Answer, slow: Answer) -> None:
        if not batch_available():
            raise OSError("recvmmsg/sendmmsg are not available here")
        super().__init__(sock, fast, slow)
        self.v6 = sock.family == socket.AF_INET6

    def _serve(self) -> None:
        assert _libc is not None
        recvmmsg = _libc.recvmmsg
        sendmmsg = _libc.sendmmsg
        fd = self.sock.fileno()
        rbuf, raddr, rmv = _buffer(BATCH * SLOT)
        sbuf, saddr, smv = _buffer(BATCH * SLOT)
        names, naddr, nmv = _buffer(BATCH * _NAME)
        rmsg, rmaddr, rmmv = _buffer(BATCH * _MSG)
        riov, riaddr, _ = _buffer(BATCH * 16)
        smsg, smaddr, smmv = _buffer(BATCH * _MSG)
        siov, siaddr, simv = _buffer(BATCH * 16)
        for i in range(BATCH):
            struct.pack_into("PN", riov, i * 16, raddr + i * SLOT, SLOT)
            # msghdr: name, namelen, iov, iovlen, control, controllen, flags
            struct.pack_into("PI4xPNPNi4x", rmsg, i * _MSG, naddr + i * _NAME, _NAME, riaddr + i * 16, 1, 0, 0, 0)
            struct.pack_into("PN", siov, i * 16, saddr + i * SLOT, 0)
            struct.pack_into("PI4xPNPNi4x", smsg, i * _MSG, 0, 0, siaddr + i * 16, 1, 0, 0, 0)
        r32 = rmmv.cast("I")  # msg_namelen at [16 i + 2], msg_len at [16 i + 14]
        s32 = smmv.cast("I")
        s64 = smmv.cast("Q")  # msg_name at [8 j]
        si64 = simv.cast("Q")  # iov_len at [2 j + 1]
        n32 = nmv.cast("I")  # an IPv4 sin_addr at [8 i + 1]
        fast = self.fast
        slow = self.slow
        stop = self._stop
        v6 = self.v6
        while not stop[0]:
            count = recvmmsg(fd, rmaddr, BATCH, _MSG_WAITFORONE, None)
            if count <= 0:
                continue  # EINTR, ICMP errors, or woken by shutdown: stop is checked above
            j = 0
            for i in range(count):
                base = i * SLOT
                q = bytes(rmv[base:base + r32[16 * i + 14]])
                if v6:
                    host: bytes | int = bytes(nmv[i * _NAME + 8:i * _NAME + 24])
                else:
                    host = n32[8 * i + 1]
                try:
                    resp = fast(q, host, 0)
                except Exception:
                    resp = None
                if resp is None:
                    resp = slow(q, self._text(host), 0)  # never raises
                    if resp is None:
                        r32[16 * i + 2] = _NAME
                        continue
                out = j * SLOT
                smv[out:out + len(resp)] = resp
                si64[2 * j + 1] = len(resp)
                s64[8 * j] = naddr + i * _NAME
                s32[16 * j + 2] = r32[16 * i + 2]
                r32[16 * i + 2] = _NAME  # the kernel wrote the address length: room again for the next read
                j += 1
            start = 0
            while start < j:
                sent = sendmmsg(fd, smaddr + start * _MSG, j - start, 0)
                # an error after some messages ends the call early (and is not reported): retry from the
                # one that failed; an error on the first one: skip it (UDP may drop)
                start += sent if sent > 0 else 1

    def _text(self, host: bytes | int) -> str:
        if isinstance(host, int):
            return socket.inet_ntop(socket.AF_INET, host.to_bytes(4, sys.byteorder))
        with contextlib.suppress(ValueError):
            return socket.inet_ntop(socket.AF_INET6, host)
        return "::"
