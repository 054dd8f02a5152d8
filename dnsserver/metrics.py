"""DNS server metrics as plain int cells, exported by a Prometheus custom collector.

The hot path only does ``cell[0] += 1`` on a one-element list it already
holds (pre-rendered answers carry their cells), so a query costs no lock,
no label lookup and no allocation. The collector reads the cells on scrape.
"""

from __future__ import annotations

import time
from array import array
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from dnsserver import sockdrops

# A TCP connection's problems (a protocol callback raised; a zero-length frame or a frame cut short at EOF)
TCP_ERROR_REASONS = ("exception", "framing")
# Why an accepted TCP connection ended; each one ends once, so accepted = open + sum(closed)
TCP_CLOSE_REASONS = ("peer", "reset", "idle", "query_limit", "framing", "exception", "shutdown")
# Response rate limiting (dnsserver/rrl.py): the answer classes, what happened to a limited reply, and why
# a reply over the limit went out in full anyway
RRL_CLASSES = ("responses", "referrals", "nxdomain", "errors")
RRL_ACTIONS = ("dropped", "slipped")
RRL_EXEMPT_REASONS = ("prefix", "cookie")
# DNS Cookies (dnsserver/cookies.py): what a query's COOKIE option was
COOKIE_RESULTS = ("client_only", "valid", "invalid", "malformed")
# The native UDP loop's latency histograms (dnsserver/_hot.c, which has the same bounds: a test holds them
# equal): per histogram a count per bound, one past them all, the sum and the longest, in ns.
UDP_LATENCY_BOUNDS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1)
UDP_LATENCY_SLOTS = len(UDP_LATENCY_BOUNDS) + 3
# where each histogram starts in ``Stats.udp_timings``: per batch, the wait for the interpreter and datagrams
# in -> replies sent; per datagram answered, the kernel's receive stamp -> its reply sent
UDP_WAIT, UDP_BATCH, UDP_QUERY = 0, UDP_LATENCY_SLOTS, 2 * UDP_LATENCY_SLOTS
UDP_TIMING_SLOTS = 3 * UDP_LATENCY_SLOTS


class Stats:
    def __init__(self) -> None:
        self.queries: dict[tuple[str, str, str], list[int]] = {}  # (transport, qtype, rcode)
        self.answers: dict[tuple[str, str, str], list[int]] = {}  # (service, geo, target)
        self.fallbacks: dict[tuple[str, str, str], list[int]] = {}  # (service, geo, reason): answers
        self.fallback_events: dict[str, list[int]] = {}  # reason: times a table needed fail-open
        self.slow_path = [0]
        self.dropped = [0]
        self.errors = [0]
        self.tcp_accepted = [0]
        self.tcp_refused = [0]
        self.tcp_open = [0]
        self.tcp_errors: dict[str, list[int]] = {r: [0] for r in TCP_ERROR_REASONS}
        self.tcp_closed: dict[str, list[int]] = {r: [0] for r in TCP_CLOSE_REASONS}
        self.rrl_limited: dict[tuple[str, str], list[int]] = {(c, a): [0] for c in RRL_CLASSES for a in RRL_ACTIONS}
        self.rrl_exempt: dict[str, list[int]] = {r: [0] for r in RRL_EXEMPT_REASONS}
        self.rrl_table_full = [0]  # replies limited because the window's bucket table was full
        self.cookies: dict[str, list[int]] = {r: [0] for r in COOKIE_RESULTS}
        self.nsid = [0]  # replies that carried our NSID
        self.ede: dict[int, list[int]] = {}  # Extended DNS Error info-code: slow-path replies carrying it
        self.stale = [0]  # 1 while steered answers carry EDE 3 (old table, control plane unreachable)
        self.control_plane_reachable = [1]
        self.dnssec_signatures = [0]  # RRSIGs made (render and slow path; docs/dnssec.md)
        self.dnssec_resign_at = 0.0  # when the next signing epoch starts (0: nothing signed)
        self.dnssec_expires_at = 0.0  # the earliest expiration of the current epoch's signatures
        self.dnssec_key_reloads = [0]  # key files read again and all usable (SIGHUP, or a file replaced)
        self.dnssec_key_reload_errors = [0]  # key files read again, one not usable: the previous keys stay
        self.table_version = -1
        self.table_generated_at = 0.0
        self.table_applied_at = 0.0
        # written by the native UDP loops (one array for all of this server's sockets), read on scrape
        self.udp_timings = array("Q", bytes(8 * UDP_TIMING_SLOTS))
        self.udp_timed = False  # True once a native UDP loop runs: only it measures them
        self.udp_inodes: list[int] = []  # this server's UDP sockets, whose kernel drop counts are read on scrape
        self.udp_drops_seen: dict[int, int] = {}  # the most each socket has reported (sockdrops.total)

    def udp_receive_drops(self) -> int:
        """Datagrams the kernel dropped at this server's UDP sockets (receive buffer full), from /proc."""
        return sockdrops.total(self.udp_drops_seen, sockdrops.read(self.udp_inodes))

    def query_cell(self, transport: str, qtype: str, rcode: str) -> list[int]:
        return self.queries.setdefault((transport, qtype, rcode), [0])

    def answer_cell(self, service: str, geo: str, target: str) -> list[int]:
        return self.answers.setdefault((service, geo, target), [0])

    def fallback_cell(self, service: str, geo: str, reason: str) -> list[int]:
        return self.fallbacks.setdefault((service, geo, reason), [0])

    def fallback_event(self, reason: str) -> None:
        self.fallback_events.setdefault(reason, [0])[0] += 1

    def total_queries(self) -> int:
        return sum(c[0] for c in self.queries.values())

    def udp_longest(self, which: int) -> float:
        """The longest observation of histogram ``which`` (``UDP_WAIT``, ``UDP_BATCH`` or ``UDP_QUERY``) so far, in
        seconds."""
        return self.udp_timings[which + UDP_LATENCY_SLOTS - 1] / 1e9


def _histogram(name: str, doc: str, cells: array, start: int) -> HistogramMetricFamily:  # type: ignore[type-arg]
    n = len(UDP_LATENCY_BOUNDS)
    counts = cells[start:start + n + 1].tolist()
    buckets: list[tuple[str, float]] = []
    total = 0
    for bound, count in zip((*(repr(b) for b in UDP_LATENCY_BOUNDS), "+Inf"), counts, strict=True):
        total += count
        buckets.append((bound, total))
    return HistogramMetricFamily(name, doc, buckets=buckets, sum_value=cells[start + n + 1] / 1e9)


class StatsCollector(Collector):
    def __init__(self, stats: Stats) -> None:
        self.stats = stats

    def collect(self) -> Iterator[Metric]:
        s = self.stats
        q = CounterMetricFamily("steering_dns_queries", "Queries answered, by transport, qtype and rcode",
                                labels=["transport", "qtype", "rcode"])
        for (tr, qt, rc), cell in list(s.queries.items()):
            q.add_metric([tr, qt, rc], cell[0])
        yield q
        a = CounterMetricFamily("steering_dns_answers", "Steered answers, by service, geo and target",
                                labels=["service", "geo", "target"])
        for (svc, geo, tgt), cell in list(s.answers.items()):
            a.add_metric([svc, geo, tgt], cell[0])
        yield a
        f = CounterMetricFamily("steering_dns_fallback_answers",
                                "Steered answers given from the fail-open set instead of the table",
                                labels=["service", "geo", "reason"])
        for (svc, geo, why), cell in list(s.fallbacks.items()):
            f.add_metric([svc, geo, why], cell[0])
        yield f
        fe = CounterMetricFamily("steering_dns_fallbacks", "Table applications that needed fail-open, by reason",
                                 labels=["reason"])
        for why, cell in list(s.fallback_events.items()):
            fe.add_metric([why], cell[0])
        yield fe
        yield CounterMetricFamily("steering_dns_slow_path", "Queries answered by full dnspython processing",
                                  value=s.slow_path[0])
        yield CounterMetricFamily("steering_dns_dropped", "Packets not answered (too short, or responses)",
                                  value=s.dropped[0])
        yield CounterMetricFamily("steering_dns_errors", "Internal errors while answering (answered SERVFAIL)",
                                  value=s.errors[0])
        yield CounterMetricFamily("steering_dns_tcp_connections", "TCP connections accepted",
                                  value=s.tcp_accepted[0])
        yield CounterMetricFamily("steering_dns_tcp_refused", "TCP connections closed at once: cap reached",
                                  value=s.tcp_refused[0])
        yield GaugeMetricFamily("steering_dns_tcp_open_connections", "TCP connections open", value=s.tcp_open[0])
        te = CounterMetricFamily("steering_dns_tcp_errors", "TCP connection errors, by reason", labels=["reason"])
        for why, cell in s.tcp_errors.items():
            te.add_metric([why], cell[0])
        yield te
        tc = CounterMetricFamily("steering_dns_tcp_closed", "Accepted TCP connections ended, by reason",
                                 labels=["reason"])
        for why, cell in s.tcp_closed.items():
            tc.add_metric([why], cell[0])
        yield tc
        rl = CounterMetricFamily("steering_dns_rrl_limited", "UDP replies over the rate limit, by class and action",
                                 labels=["class", "action"])
        for (cls, action), cell in s.rrl_limited.items():
            rl.add_metric([cls, action], cell[0])
        yield rl
        rx = CounterMetricFamily("steering_dns_rrl_exempt", "UDP replies over the rate limit sent in full: exempt",
                                 labels=["reason"])
        for why, cell in s.rrl_exempt.items():
            rx.add_metric([why], cell[0])
        yield rx
        yield CounterMetricFamily("steering_dns_rrl_table_full",
                                  "UDP replies limited because the second's bucket table was full",
                                  value=s.rrl_table_full[0])
        ck = CounterMetricFamily("steering_dns_cookies", "Queries with a COOKIE option, by what it held",
                                 labels=["result"])
        for why, cell in s.cookies.items():
            ck.add_metric([why], cell[0])
        yield ck
        yield CounterMetricFamily("steering_dns_nsid", "Replies that carried the server's NSID", value=s.nsid[0])
        ed = CounterMetricFamily("steering_dns_ede", "Slow-path replies with an Extended DNS Error, by info-code",
                                 labels=["code"])
        for code, cell in list(s.ede.items()):
            ed.add_metric([str(code)], cell[0])
        yield ed
        yield GaugeMetricFamily("steering_dns_stale", "1 while steered answers carry EDE 3 (Stale Answer)",
                                value=s.stale[0])
        yield GaugeMetricFamily("steering_dns_control_plane_reachable", "1 while etcd answers the feed's probe",
                                value=s.control_plane_reachable[0])
        yield CounterMetricFamily("steering_dns_dnssec_signatures", "DNSSEC signatures made (docs/dnssec.md)",
                                  value=s.dnssec_signatures[0])
        yield CounterMetricFamily("steering_dns_dnssec_key_reloads",
                                  "DNSSEC key files read again while running, every one usable",
                                  value=s.dnssec_key_reloads[0])
        yield CounterMetricFamily("steering_dns_dnssec_key_reload_errors",
                                  "DNSSEC key files read again while running, one not usable: previous keys kept",
                                  value=s.dnssec_key_reload_errors[0])
        if s.dnssec_resign_at:
            yield GaugeMetricFamily("steering_dns_dnssec_next_resign_timestamp_seconds",
                                    "When the next DNSSEC signing epoch starts", value=s.dnssec_resign_at)
            yield GaugeMetricFamily("steering_dns_dnssec_expiration_timestamp_seconds",
                                    "The earliest expiry of the signatures served", value=s.dnssec_expires_at)
        # always, so rules find them from the start; the Python loops (no C extension) leave them at zero
        yield _histogram("steering_dns_udp_interpreter_wait_seconds",
                         "UDP batches: wait for the interpreter after the datagrams were received (native loop)",
                         s.udp_timings, UDP_WAIT)
        yield _histogram("steering_dns_udp_batch_seconds",
                         "UDP batches: datagrams received -> their replies sent (native loop)",
                         s.udp_timings, UDP_BATCH)
        yield _histogram("steering_dns_udp_query_seconds",
                         "UDP queries answered: the kernel's receive stamp -> the reply sent, socket queue included "
                         "(native loop)", s.udp_timings, UDP_QUERY)
        yield CounterMetricFamily("steering_dns_udp_receive_drops",
                                  "UDP datagrams the kernel dropped at the server's sockets (receive buffer full)",
                                  value=s.udp_receive_drops())
        yield GaugeMetricFamily("steering_dns_table_version", "Version of the routing table served (-1: none)",
                                value=s.table_version)
        age = time.time() - s.table_generated_at if s.table_version >= 0 else -1.0
        yield GaugeMetricFamily("steering_dns_table_age_seconds", "Age of the routing table served", value=age)
