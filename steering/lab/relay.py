"""The lab's delay relay: one process that carries every region's frames to the bridge, holding some (a kernel without netem).

``python -m steering.lab.relay CONFIG STATS`` runs in the relay namespace
(``stl-relay``), where each region has two interfaces and no address: ``inner``
(the peer of the region's ``eth0``) and ``outer`` (the peer of its port on the
bridge). The kernel there has no address and no route, so it forwards nothing;
this process moves every frame across with AF_PACKET sockets. What a region
sends (``inner`` -> ``outer``) to another region's address waits in the
``DelayLine`` for that pair's one-way delay; everything else (ARP, the lab
namespace's probes, what comes from the bridge) is sent at once. So each
direction of a pair is delayed once, on the sender's side, as netem does on the
sender's ``eth0``.

The sockets use ``PACKET_VNET_HDR``: each frame comes with the kernel's
checksum-offload and GSO note and is sent on with it, so a TCP segment whose
checksum the sender left to the (virtual) hardware, or a 64 KiB GSO segment,
arrives as the kernel would have delivered it, without ethtool on any link.

CONFIG (JSON, written by the lab, re-read when it changes): ``generation``, the
``ports`` (region, inner, outer, addr) and the one-way ``delays`` per ordered
pair. STATS (JSON, rewritten every second and after each re-read): the
generation in force, frame counts, and per pair its delay, frames held and
dropped, and the queue. It runs until SIGTERM or SIGKILL: it has nothing to
flush.
"""

from __future__ import annotations

import json
import os
import select
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from steering.lab.delayline import DelayLine, address_key, destination

SOL_PACKET = 263
PACKET_VNET_HDR = 15
PACKET_IGNORE_OUTGOING = 23
PACKET_OUTGOING = 4
SO_RCVBUFFORCE = 33  # root may go past net.core.rmem_max (not in Python's socket module)
ETH_P_ALL = 0x0003
VNET_HDR = 10  # struct virtio_net_hdr, before every frame on these sockets
FRAME_BUFFER = 256 << 10  # a GSO segment (64 KiB) and its header, with room
RCVBUF = 4 << 20  # frames wait here while the loop sends others
BURST = 256  # frames read from one socket before held frames get their turn
TICK = 0.1  # seconds: how often the config is looked at with nothing due
STATS_SECONDS = 1.0
NICE = -10  # root only; elsewhere it runs at the default priority


class RelayConfigError(ValueError):
    """A relay config that cannot be used, naming what is wrong."""


@dataclass(frozen=True)
class Port:
    region: str
    inner: str  # the interface whose peer is the region's eth0
    outer: str  # the interface whose peer hangs on the bridge
    addr: str  # the region's address: frames to it are the region's


@dataclass(frozen=True)
class RelayConfig:
    generation: int
    ports: tuple[Port, ...]
    delays: dict[tuple[str, str], tuple[float, float]]  # (from, to) -> one-way (delay_ms, jitter_ms)


def parse_config(data: Any) -> RelayConfig:
    """The relay's config from its JSON document; RelayConfigError naming the first problem."""
    if not isinstance(data, dict):
        raise RelayConfigError("relay config: not a JSON object")
    try:
        generation = int(data["generation"])
        ports = tuple(Port(str(p["region"]), str(p["inner"]), str(p["outer"]), str(p["addr"]))
                      for p in data["ports"])
        delays = {(str(d["from"]), str(d["to"])): (float(d["delay_ms"]), float(d.get("jitter_ms", 0)))
                  for d in data.get("delays") or []}
    except (KeyError, TypeError, ValueError) as exc:
        raise RelayConfigError(f"relay config: missing or bad field {exc}") from None
    regions = {p.region for p in ports}
    if len(regions) != len(ports):
        raise RelayConfigError("relay config: a region has two ports")
    for p in ports:
        try:
            address_key(p.addr)
        except ValueError:
            raise RelayConfigError(f"relay config: {p.region}'s addr {p.addr!r} is not an IP address") from None
    for (a, b), (delay, jitter) in delays.items():
        if a not in regions or b not in regions or a == b:
            raise RelayConfigError(f"relay config: delay {a} -> {b}: not a pair of two of its regions")
        if delay < 0 or jitter < 0:
            raise RelayConfigError(f"relay config: delay {a} -> {b}: negative")
    return RelayConfig(generation, ports, delays)


def read_config(path: Path) -> RelayConfig:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise RelayConfigError(f"relay config {path}: {exc}") from None
    return parse_config(data)


def open_port(ifname: str) -> socket.socket:
    """A raw socket on ``ifname`` that reads what arrives there (not what this process sends) and sends."""
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)  # protocol 0: nothing read until bound
    s.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
    try:
        s.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)  # Linux >= 4.20; else skipped per frame below
    except OSError:
        pass
    try:
        s.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RCVBUF)
    except OSError:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
    s.bind((ifname, ETH_P_ALL))
    s.setblocking(False)
    return s


class Relay:
    def __init__(self, config_path: Path, stats_path: Path) -> None:
        self.config_path = config_path
        self.stats_path = stats_path
        self.config = read_config(config_path)
        self.mtime = config_path.stat().st_mtime_ns
        self.line: DelayLine[socket.socket] = DelayLine()
        self.line.set_delays(self.config.delays)
        self.owner = {address_key(p.addr): p.region for p in self.config.ports}
        # fd -> (socket, where its frames go, the region, whether they come from the region)
        self.routes: dict[int, tuple[socket.socket, socket.socket, str, bool]] = {}
        for p in self.config.ports:
            inner, outer = open_port(p.inner), open_port(p.outer)
            self.routes[inner.fileno()] = (inner, outer, p.region, True)
            self.routes[outer.fileno()] = (outer, inner, p.region, False)
        self.counts = {"frames": 0, "passed": 0, "send_errors": 0}

    def reload(self) -> None:
        try:
            mtime = self.config_path.stat().st_mtime_ns
            if mtime == self.mtime:
                return
            self.mtime = mtime
            config = read_config(self.config_path)
        except (OSError, RelayConfigError) as exc:
            print(f"relay: keeping the delays in force: {exc}", file=sys.stderr, flush=True)
            return
        if config.ports != self.config.ports:
            print("relay: the ports cannot change while it runs; only the delays are taken", file=sys.stderr,
                  flush=True)
        self.line.set_delays(config.delays)
        self.config = RelayConfig(config.generation, self.config.ports, config.delays)
        self.write_stats()

    def write_stats(self) -> None:
        pairs = [{"from": a, "to": b, "delay_ms": st.delay_ms, "jitter_ms": st.jitter_ms, "held": st.held,
                  "dropped": st.dropped, "queued": self.line.queued(a, b), "max_queued": st.max_queued}
                 for (a, b), st in sorted(self.line.stats.items())]
        doc = {"pid": os.getpid(), "generation": self.config.generation, "time": time.time(), **self.counts,
               "delayed": sum(st.held for st in self.line.stats.values()),
               "dropped": sum(st.dropped for st in self.line.stats.values()), "pairs": pairs}
        tmp = self.stats_path.with_name(self.stats_path.name + ".tmp")
        tmp.write_text(json.dumps(doc, indent=1))
        os.replace(tmp, self.stats_path)

    def send(self, out: socket.socket, frame: bytes | memoryview) -> None:
        try:
            out.send(frame)
        except OSError:  # the peer's backlog full, a link down: lost, as on a wire
            self.counts["send_errors"] += 1

    def pump(self, fd: int, buf: bytearray, view: memoryview) -> None:
        """Move what waits on one socket: at once, or into the delay line."""
        sock, out, region, from_region = self.routes[fd]
        counts, line, owner = self.counts, self.line, self.owner
        for _ in range(BURST):
            try:
                n, addr = sock.recvfrom_into(buf)
            except BlockingIOError:
                return
            if addr[2] == PACKET_OUTGOING:
                continue
            counts["frames"] += 1
            frame = view[:n]
            if from_region:
                dst = owner.get(destination(frame[VNET_HDR:]) or b"")
                if dst is not None and dst != region and not line.passes(region, dst):
                    line.offer(region, dst, bytes(frame), out, time.monotonic())  # held, or dropped if full
                    continue
            counts["passed"] += 1
            self.send(out, frame)

    def run(self) -> None:
        buf = bytearray(FRAME_BUFFER)
        view = memoryview(buf)
        poller = select.epoll()
        for fd in self.routes:
            poller.register(fd, select.EPOLLIN)
        self.write_stats()
        print(f"relay: {len(self.config.ports)} regions, generation {self.config.generation}", file=sys.stderr,
              flush=True)
        next_look = next_stats = time.monotonic()
        while True:
            now = time.monotonic()
            for frame, out in self.line.release(now):
                self.send(out, frame)
            if now >= next_look:
                self.reload()
                next_look = now + TICK
            if now >= next_stats:
                self.write_stats()
                next_stats = now + STATS_SECONDS
            due = self.line.next_due()
            timeout = min(TICK, next_look - now) if due is None else min(TICK, max(0.0, due - now))
            for fd, _ in poller.poll(max(timeout, 0.0)):
                self.pump(fd, buf, view)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m steering.lab.relay CONFIG STATS", file=sys.stderr)
        return 2
    try:
        # The wire under every region: it should not wait behind the CPU load of what it carries.
        os.setpriority(os.PRIO_PROCESS, 0, NICE)
    except OSError:
        pass
    try:
        relay = Relay(Path(argv[0]), Path(argv[1]))
    except (OSError, RelayConfigError) as exc:
        print(f"relay: {exc}", file=sys.stderr)
        return 1
    relay.run()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
