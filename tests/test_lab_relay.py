"""The lab's delay relay, its pure parts: which frames it holds (``steering.lab.delayline.destination``), the delay line
(in order per pair, bounded, jitter within its bounds, a changed delay for later frames only), its config, and the
delays the lab gives it (``plan.relay_delays``). The relay on real interfaces is exercised by the lab's tests
(tests/test_lab.py, ``test_scenario_300_ms_latency_spike_between_all_regions``)."""

from __future__ import annotations

import random
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from steering.lab.delayline import DelayLine, address_key, destination
from steering.lab.plan import Link, Topology, plan_regions, relay_delays
from steering.lab.relay import RelayConfigError, parse_config

MAC = b"\x02\x00\x00\x00\x00\x01" * 2


def ipv4_frame(dst: str, size: int = 60) -> bytes:
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, size - 14, 0, 0, 64, 17, 0, address_key("10.77.1.1"), address_key(dst))
    return (MAC + b"\x08\x00" + ip).ljust(size, b"\0")


def test_ipv4_and_ipv6_frames_name_their_destination_and_arp_or_short_frames_none() -> None:
    assert destination(ipv4_frame("10.77.3.1")) == address_key("10.77.3.1")
    ipv6 = MAC + b"\x86\xdd" + bytes(8) + address_key("fd00::1") + address_key("fd00::2")
    assert destination(ipv6) == address_key("fd00::2")
    arp = MAC + b"\x08\x06" + bytes(28)
    assert destination(arp) is None
    assert destination(ipv4_frame("10.77.3.1")[:20]) is None  # cut short: not read past its end
    assert destination(b"\x00" * 5) is None
    assert destination(memoryview(ipv4_frame("10.77.2.1"))) == address_key("10.77.2.1")


def test_a_pair_without_delay_passes_at_once_and_a_delayed_pair_holds_until_due() -> None:
    line: DelayLine[str] = DelayLine()
    line.set_delays({("a", "b"): (300, 0)})
    assert line.passes("b", "a") and line.offer("b", "a", b"x", "out", now=10.0)
    assert not line.passes("a", "b")
    assert not line.offer("a", "b", b"frame-1", "out-b", now=10.0)
    assert list(line.release(10.299)) == [] and line.next_due() == pytest.approx(10.3)
    assert list(line.release(10.3)) == [(b"frame-1", "out-b")]
    assert line.next_due() is None and line.stats[("a", "b")].held == 1


def test_a_cleared_delay_still_sends_what_is_held_first_then_passes() -> None:
    line: DelayLine[str] = DelayLine()
    line.set_delays({("a", "b"): (300, 0)})
    line.offer("a", "b", b"early", "o", now=0.0)
    line.set_delays({})  # heal: the held frame keeps its time, a later one may not overtake it
    assert not line.passes("a", "b")
    assert not line.offer("a", "b", b"late", "o", now=0.1)
    assert [f for f, _ in line.release(0.3)] == [b"early", b"late"]
    assert line.passes("a", "b") and line.stats[("a", "b")].delay_ms == 0


@given(st.integers(1, 500), st.integers(0, 200), st.lists(st.floats(0, 0.05), min_size=1, max_size=60),
       st.integers(0, 2**32))
def test_jitter_never_reorders_a_pair_and_stays_within_delay_minus_jitter(delay: int, jitter: int, gaps: list[float],
                                                                           seed: int) -> None:
    line: DelayLine[int] = DelayLine(rng=random.Random(seed))
    line.set_delays({("a", "b"): (delay, jitter)})
    now, sent = 0.0, []
    for i, gap in enumerate(gaps):
        now += gap
        sent.append(now)
        line.offer("a", "b", i.to_bytes(2, "big"), i, now)
    out: list[tuple[int, float]] = []
    t = 0.0
    while (due := line.next_due()) is not None:
        t = due
        out += [(o, t) for _, o in line.release(t)]
    assert [o for o, _ in out] == list(range(len(gaps)))  # in order
    floor = max(0, delay - jitter) / 1000
    assert all(at >= sent[o] + floor - 1e-9 for o, at in out)


def test_a_full_queue_drops_and_counts_by_frames_and_by_bytes() -> None:
    line: DelayLine[None] = DelayLine(queue_frames=2, queue_bytes=100)
    line.set_delays({("a", "b"): (50, 0), ("a", "c"): (50, 0)})
    for _ in range(3):
        line.offer("a", "b", b"x" * 10, None, 0.0)
    assert line.queued("a", "b") == 2 and line.stats[("a", "b")].dropped == 1
    assert not line.offer("a", "c", b"y" * 101, None, 0.0)  # more bytes than the queue holds
    assert line.queued("a", "c") == 0 and line.stats[("a", "c")].dropped == 1
    with pytest.raises(ValueError):
        DelayLine(queue_frames=0)
    with pytest.raises(ValueError, match="negative"):
        line.set_delays({("a", "b"): (-1, 0)})


def test_the_relay_config_is_checked_and_names_what_is_wrong() -> None:
    ports = [{"region": "a", "inner": "stl-r1", "outer": "stl-w1", "addr": "10.77.1.1"},
             {"region": "b", "inner": "stl-r2", "outer": "stl-w2", "addr": "10.77.2.1"}]
    good = {"generation": 3, "ports": ports, "delays": [{"from": "a", "to": "b", "delay_ms": 300, "jitter_ms": 30}]}
    cfg = parse_config(good)
    assert cfg.generation == 3 and cfg.delays == {("a", "b"): (300.0, 30.0)} and cfg.ports[1].outer == "stl-w2"
    for bad, words in (([], "not a JSON object"), ({"ports": []}, "generation"),
                       ({**good, "delays": [{"from": "a", "to": "a", "delay_ms": 1}]}, "a -> a"),
                       ({**good, "delays": [{"from": "a", "to": "mars", "delay_ms": 1}]}, "a -> mars"),
                       ({**good, "delays": [{"from": "a", "to": "b", "delay_ms": -5}]}, "negative"),
                       ({**good, "ports": [{**ports[0], "addr": "nowhere"}]}, "'nowhere'"),
                       ({**good, "ports": [ports[0]] * 2}, "two ports")):
        with pytest.raises(RelayConfigError, match=words):
            parse_config(bad)


def test_the_lab_gives_the_relay_each_direction_of_every_delayed_link() -> None:
    regions = plan_regions(["a", "b", "c"], {}, None)
    topo = Topology(regions, Link(0, 0), {("a", "c"): Link(300, 30)}, netem=False)
    assert relay_delays(topo) == [{"from": "a", "to": "c", "delay_ms": 300, "jitter_ms": 30},
                                  {"from": "c", "to": "a", "delay_ms": 300, "jitter_ms": 30}]
    assert len(relay_delays(Topology(regions, Link(20, 2), netem=False))) == 6
    assert regions[0].relay_inner == "stl-r1" and regions[2].relay_outer == "stl-w3"
