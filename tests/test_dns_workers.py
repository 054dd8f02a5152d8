"""``steering dns --workers N``: worker processes sharing the addresses, one /metrics, restarts, stop.

Everything through the shipped command as a subprocess, with JSON logs read
line by line (worker PIDs and indexes come from its own log lines).
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import socket
import time
from pathlib import Path
from typing import Any

import dns.edns
import dns.exception
import dns.message
import dns.query
import dns.rcode

from dnsserver.metrics import UDP_LATENCY_BOUNDS
from dnsserver.persist import save_table
from dnsserver.statsmerge import Merger
from dnsserver.supervisor import backoff, describe_exit
from tests.support import eventually_sync
from tests.support.dns_server import (
    EAST,
    SPLIT,
    WEST,
    DnsProcess,
    addresses,
    answered,
    api_query,
    ask_tcp,
    ask_udp,
    load,
    table_with,
    write_config,
)
from tests.support.procs import gone


def start_with_table(tmp_path: Path, workers: int, *extra: str, metrics: bool = True) -> DnsProcess:
    config = write_config(tmp_path)
    save_table(tmp_path / "dns-table.json", table_with(load(tmp_path), 1, SPLIT))
    return DnsProcess(config, "--workers", str(workers), "--no-etcd", "--listen", "127.0.0.1:0", *extra,
                      metrics=metrics)


def ready(d: DnsProcess, workers: int) -> int:
    """Wait until the supervisor says every worker listens; the port."""
    d.wait_event("dns.supervisor.ready")
    assert len(d.named("dns.listening")) == workers, d.log()
    port = d.port
    eventually_sync(lambda: answered(port), 20, "an answer")
    return port


# ---- through the shipped command


def test_two_workers_share_udp_and_tcp_and_metrics_add_up(tmp_path: Path) -> None:
    with start_with_table(tmp_path, 2) as d:
        port = ready(d, 2)
        assert {e["worker"] for e in d.named("dns.listening")} == {0, 1}  # each worker's lines carry its index
        before = d.metric("steering_dns_queries_total")
        m0 = d.metrics()
        sent = 0
        for i in range(60):  # bounded; a fresh socket (source port) or connection each
            r = ask_udp(port, f"10.{i}.0.0") if i % 3 else ask_tcp(port, f"10.{i}.0.0")
            sent += 1
            assert r.rcode() == dns.rcode.NOERROR and addresses(r) in (EAST, WEST)
        m = d.metrics()
        assert d.metric("steering_dns_queries_total") - before == sent  # nothing else talks to this port
        per_worker = {dict(lbl)["worker"]: v for (n, lbl), v in m.items() if n == "steering_dns_worker_queries_total"}
        assert set(per_worker) == {"0", "1"} and all(v > 0 for v in per_worker.values()), per_worker
        assert sum(per_worker.values()) == d.metric("steering_dns_queries_total")
        assert m[("steering_dns_workers", ())] == 2
        assert sum(v for (n, _), v in m.items() if n == "steering_dns_worker_restarts_total") == 0
        # gauges stay per worker; counters are summed (no worker label)
        assert m[("steering_dns_table_version", (("worker", "0"),))] == 1
        assert m[("steering_dns_table_version", (("worker", "1"),))] == 1
        assert all("worker" not in dict(lbl) for (n, lbl) in m if n == "steering_dns_queries_total")
        assert d.metric("steering_dns_queries_total", transport="tcp") == 20
        udp_batches_are_timed(m0, m, udp=40)
        assert d.stop() == 0
    assert "Traceback" not in d.log()


Metrics = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def udp_batches_are_timed(m0: Metrics, m: Metrics, udp: int) -> None:
    """The UDP latency histograms, summed over the workers: one observation per batch, and per query
    answered (``udp`` queries between the scrapes ``m0`` and ``m``, each asked alone: a batch each),
    cumulative buckets ending at the count; and no datagram dropped by the kernel at the sockets."""
    counts = []
    for fam in ("steering_dns_udp_interpreter_wait_seconds", "steering_dns_udp_batch_seconds",
                "steering_dns_udp_query_seconds"):
        count = m[(f"{fam}_count", ())]
        counts.append(count - m0[(f"{fam}_count", ())])
        buckets = sorted(((float(dict(lbl)["le"]), v) for (n, lbl), v in m.items() if n == f"{fam}_bucket"))
        assert [b for b, _ in buckets] == [*UDP_LATENCY_BOUNDS, float("inf")], buckets
        assert all(a[1] <= b[1] for a, b in itertools.pairwise(buckets)) and buckets[-1][1] == count, buckets
        assert 0 < m[(f"{fam}_sum", ())] - m0[(f"{fam}_sum", ())] < udp  # seconds: each took some, none 1 s
    assert counts == [udp, udp, udp], counts  # the same batches, each query its own
    assert m[("steering_dns_udp_receive_drops_total", ())] == 0


def one_flow_shares(d: DnsProcess, port: int, count: int) -> dict[str, float]:
    """``count`` queries from one UDP socket (one source port: one flow); each worker's share of them."""
    key = "steering_dns_worker_queries_total"
    before = {dict(lbl)["worker"]: v for (n, lbl), v in d.metrics().items() if n == key}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for i in range(count):  # bounded, one at a time
            r = dns.query.udp(api_query(f"10.{i % 250}.2.0"), "127.0.0.1", port=port, timeout=2.0, sock=sock)
            assert r.rcode() == dns.rcode.NOERROR
    after = {dict(lbl)["worker"]: v for (n, lbl), v in d.metrics().items() if n == key}
    return {w: (after[w] - before.get(w, 0.0)) / count for w in after}


def test_one_busy_resolver_is_spread_over_the_workers_also_after_a_restart(tmp_path: Path) -> None:
    """By source hash, one resolver's port would always reach the same worker; the datagrams are spread
    at random instead (an even split of 300 falls under 30 % with probability below 1e-11)."""
    with start_with_table(tmp_path, 2) as d:
        port = ready(d, 2)
        assert "dns.workers.spread_unavailable" not in d.log()
        shares = one_flow_shares(d, port, 300)
        assert set(shares) == {"0", "1"} and all(v >= 0.3 for v in shares.values()), shares
        first = d.worker_pids()
        os.kill(first[0], signal.SIGKILL)  # the socket that joined the group first goes; its successor joins last
        eventually_sync(lambda: len(d.named("dns.listening", worker=0)) == 2, 30, "the new worker 0 to listen")
        shares = one_flow_shares(d, port, 300)
        assert all(v >= 0.3 for v in shares.values()), shares
        assert d.stop() == 0


def test_killed_worker_is_restarted_and_sigterm_stops_every_process(tmp_path: Path) -> None:
    with start_with_table(tmp_path, 2) as d:
        port = ready(d, 2)
        first = d.worker_pids()
        assert len(first) == 2 and os.getpid() not in first.values()
        os.kill(first[1], signal.SIGKILL)
        exited = d.wait_event("dns.worker.exited", worker=1)
        assert exited["status"] == "killed by SIGKILL" and exited["pid"] == first[1]
        eventually_sync(lambda: d.worker_pids()[1] != first[1], 30, "worker 1 to start again")
        eventually_sync(lambda: gone(first[1]), 10, "the killed worker to be reaped")
        eventually_sync(lambda: len(d.named("dns.listening", worker=1)) == 2, 30, "the new worker 1 to listen")
        m = d.metrics()
        assert m[("steering_dns_worker_restarts_total", (("worker", "1"),))] == 1
        assert m[("steering_dns_worker_restarts_total", (("worker", "0"),))] == 0
        assert m[("steering_dns_workers", ())] == 2
        # answers continue, and the new worker takes its share again
        before = d.metrics()[("steering_dns_worker_queries_total", (("worker", "1"),))]
        for i in range(40):
            r = ask_udp(port, f"10.{i}.1.0") if i % 2 else ask_tcp(port, f"10.{i}.1.0")
            assert r.rcode() == dns.rcode.NOERROR
        assert d.metrics()[("steering_dns_worker_queries_total", (("worker", "1"),))] > before
        pids = [d.proc.pid, *d.worker_pids().values()]
        assert d.stop() == 0
        eventually_sync(lambda: all(gone(p) for p in pids), 10, "every process to be gone")
        assert len(d.named("dns.stopping")) == 2, d.log()  # both workers stopped cleanly on the supervisor's TERM
    assert "Traceback" not in d.log()


def test_crash_loop_backs_off_and_recovers(tmp_path: Path) -> None:
    """A worker that cannot start (its configuration broke) is retried later and later; the other
    worker answers all along; once the file is right again the worker comes back."""
    with start_with_table(tmp_path, 2, metrics=False) as d:
        port = ready(d, 2)
        config = tmp_path / "steering.yaml"
        good = config.read_bytes()
        config.write_text("regions: [")  # what a restarted worker reads
        os.kill(d.worker_pids()[1], signal.SIGKILL)
        eventually_sync(lambda: len(d.named("dns.worker.exited", worker=1)) >= 3, 30, "two failed restarts")
        config.write_bytes(good)
        exits = d.named("dns.worker.exited", worker=1)
        assert exits[0]["status"] == "killed by SIGKILL"
        assert all(e["status"] == "exit code 2" for e in exits[1:3])
        delays = [e["restart_in"] for e in exits[:3]]
        assert delays == sorted(delays) and delays[0] < delays[2], delays
        assert d.named("dns.worker.config_error", worker=1)
        assert all(ask_udp(port).rcode() == dns.rcode.NOERROR for _ in range(10))  # worker 0 answers meanwhile
        eventually_sync(lambda: d.named("dns.listening", worker=1)[-1]["timestamp"] > exits[2]["timestamp"]
                        if len(d.named("dns.listening", worker=1)) > 1 else False, 30, "worker 1 back")
        assert d.stop() == 0
    assert "Traceback" not in d.log()


def test_sigterm_to_the_whole_group_stops_without_restarts(tmp_path: Path) -> None:
    """systemd's default stop signals every process of the unit at once: no worker is restarted."""
    with start_with_table(tmp_path, 2, metrics=False) as d:
        ready(d, 2)
        pids = [d.proc.pid, *d.worker_pids().values()]
        os.killpg(d.proc.pid, signal.SIGTERM)  # the group of the daemon we started (its own session)
        assert d.wait(15) == 0
        eventually_sync(lambda: all(gone(p) for p in pids), 10, "every process to be gone")
        assert not d.named("dns.worker.exited") and len(d.named("dns.worker.started")) == 2, d.log()


def test_workers_stop_when_the_supervisor_is_killed(tmp_path: Path) -> None:
    with start_with_table(tmp_path, 2, metrics=False) as d:
        ready(d, 2)
        workers = list(d.worker_pids().values())
        os.kill(d.proc.pid, signal.SIGKILL)
        d.proc.wait(10)
        eventually_sync(lambda: all(gone(p) for p in workers), 15, "the orphaned workers to exit")


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(kv.decode().split("=", 1) for kv in raw if b"=" in kv)


def test_worker_environment(tmp_path: Path) -> None:
    with start_with_table(tmp_path, 2, metrics=False) as d:
        ready(d, 2)
        envs = {index: _environ(pid) for index, pid in d.worker_pids().items()}
        assert envs[0]["STEERING_DNS_WORKER"] == "0" and envs[1]["STEERING_DNS_WORKER"] == "1"
        secret = envs[0]["STEERING_DNS_COOKIE_SECRET"]
        assert len(secret) == 32 and int(secret, 16) >= 0
        assert envs[1]["STEERING_DNS_COOKIE_SECRET"] == secret  # one secret shared by the workers
        assert d.stop() == 0
    # with a secret file configured, the workers read secrets from there: no variable
    (tmp_path / "again").mkdir()
    (tmp_path / "secrets").write_text("00112233445566778899aabbccddeeff\n")
    config = write_config(tmp_path / "again", dns={"cookies": {"secret_file": str(tmp_path / "secrets")}})
    env_before = os.environ.get("STEERING_DNS_COOKIE_SECRET")
    os.environ["STEERING_DNS_COOKIE_SECRET"] = "0" * 32  # a stale one in the supervisor's environment
    try:
        d = DnsProcess(config, "--workers", "2", "--no-etcd", "--listen", "127.0.0.1:0", metrics=False)
    finally:
        if env_before is None:
            del os.environ["STEERING_DNS_COOKIE_SECRET"]
        else:
            os.environ["STEERING_DNS_COOKIE_SECRET"] = env_before
    with d:
        d.wait_event("dns.supervisor.ready")
        assert all("STEERING_DNS_COOKIE_SECRET" not in _environ(pid) for pid in d.worker_pids().values())
        assert d.stop() == 0


def _socket_inodes(pid: int) -> set[str]:
    out = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            out.add(target[8:-1])
    return out


def _inodes_on_port(port: int) -> set[str]:
    out = set()
    for table in ("udp", "tcp", "udp6", "tcp6"):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port:
                out.add(fields[9])
    return out


def test_supervisor_keeps_no_copy_of_the_workers_sockets(tmp_path: Path) -> None:
    with start_with_table(tmp_path, 2, metrics=False) as d:
        port = ready(d, 2)
        on_port = _inodes_on_port(port)
        assert len(on_port) >= 4  # a UDP and a TCP socket per worker
        assert not _socket_inodes(d.proc.pid) & on_port  # the kernel balances over the workers only
        for pid in d.worker_pids().values():
            assert len(_socket_inodes(pid) & on_port) == 2
        assert d.stop() == 0


def test_address_in_use_fails_before_any_worker(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with DnsProcess(config, "--workers", "2", "--no-etcd", "--listen", f"127.0.0.1:{port}", metrics=False) as d:
            assert d.wait(30) == 1
            errors = [line for line in d.raw if not line.startswith("{")]
            assert len(errors) == 1 and "Address already in use" in errors[0] and str(port) in errors[0], d.log()
            assert not d.named("dns.worker.started")


def _one_line_failure(config: Path, *args: str, code: int, says: str) -> None:
    with DnsProcess(config, "--workers", "2", "--no-etcd", *args, metrics=False) as d:
        assert d.wait(30) == code
        errors = [line for line in d.raw if not line.startswith("{")]
        assert len(errors) == 1 and says in errors[0], d.log()
        assert not d.named("dns.worker.started") and "Traceback" not in d.log()


def test_bad_config_bad_zone_and_busy_metrics_port_fail_before_any_worker(tmp_path: Path) -> None:
    bad_config = write_config(tmp_path / "a", dns={"tcp_idle_seconds": -1})
    _one_line_failure(bad_config, "--listen", "127.0.0.1:0", code=2, says="tcp_idle_seconds")
    bad_zone = write_config(tmp_path / "b", extra_zone="www IN A not-an-address")
    _one_line_failure(bad_zone, "--listen", "127.0.0.1:0", code=2, says="example.test")
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        busy = holder.getsockname()[1]
        good = write_config(tmp_path / "c")
        _one_line_failure(good, "--listen", "127.0.0.1:0", "--metrics-addr", f"127.0.0.1:{busy}", code=1,
                          says="Address already in use")


def test_state_file_written_by_worker_0_only(etcd: Any, tmp_path: Path) -> None:
    import asyncio

    from steering.store import Store

    config = write_config(tmp_path, etcd_endpoints=etcd.endpoints)
    cfg = load(tmp_path, etcd_endpoints=etcd.endpoints)
    with DnsProcess(config, "--workers", "2", "--listen", "127.0.0.1:0", metrics=False) as d:
        port = ready(d, 2)

        async def publish(version: int, weights: dict[str, Any]) -> None:
            async with Store(cfg.etcd, base_dir=cfg.base_dir) as store:
                await store.put_table(table_with(cfg, version, weights, generated_at=time.time()))

        asyncio.run(publish(5, {"api.example.test.": {"world": {"us-west-2": 1000}}}))
        eventually_sync(lambda: all(addresses(ask_udp(port, f"10.{i}.2.0")) == WEST for i in range(10)), 20,
                        "every worker to serve the table from etcd")
        eventually_sync(lambda: len(d.named("dns.table.applied", version=5)) == 2, 20, "both workers to apply v5")
        written = eventually_sync(lambda: d.named("dns.state.written", version=5), 20, "the table to be persisted")
        assert {e["worker"] for e in d.named("dns.state.written")} == {0}
        assert len(written) == 1
        assert json.loads((tmp_path / "dns-table.json").read_bytes())["version"] == 5
        assert d.stop() == 0


# ---- pure parts


def test_backoff_grows_and_is_bounded() -> None:
    delays = [backoff(n) for n in range(0, 40)]
    assert delays[0] == 0 and delays[1] > 0
    assert all(a <= b for a, b in itertools.pairwise(delays))
    assert max(delays) == 30.0


def test_describe_exit() -> None:
    assert describe_exit(-9) == "killed by SIGKILL"
    assert describe_exit(3) == "exit code 3"
    assert describe_exit(-200) == "killed by signal 200"


def _fams(queries: float, open_conns: float) -> list[dict[str, Any]]:
    return [{"name": "steering_dns_queries", "type": "counter", "help": "q",
             "samples": [["steering_dns_queries_total", {"transport": "udp"}, queries],
                         ["steering_dns_queries_created", {"transport": "udp"}, 1.7e9]]},
            {"name": "steering_dns_tcp_open_connections", "type": "gauge", "help": "o",
             "samples": [["steering_dns_tcp_open_connections", {}, open_conns]]}]


def _value(fams: list[dict[str, Any]], sample: str, **labels: str) -> float:
    return sum(v for f in fams for n, lbl, v in f["samples"] if n == sample and lbl == labels)


def test_merger_sums_counters_labels_gauges_and_stays_monotonic_across_restarts() -> None:
    m = Merger()
    m.update(1, 0, _fams(10, 2))
    m.update(2, 1, _fams(5, 1))
    out = m.merged()
    assert _value(out, "steering_dns_queries_total", transport="udp") == 15
    assert _value(out, "steering_dns_queries_created", transport="udp") == 0  # dropped, not summed
    assert _value(out, "steering_dns_tcp_open_connections", worker="0") == 2
    assert _value(out, "steering_dns_tcp_open_connections", worker="1") == 1
    m.retire(2)  # worker 1's process died after reporting 5
    m.update(2, 1, _fams(500, 9))  # a reply from the dead process arriving late: ignored
    m.update(3, 1, _fams(1, 0))  # its replacement
    out = m.merged()
    assert _value(out, "steering_dns_queries_total", transport="udp") == 16  # 10 + 5 (retired) + 1
    assert _value(out, "steering_dns_worker_queries_total", worker="1") == 6
    assert _value(out, "steering_dns_tcp_open_connections", worker="1") == 0
    m.update(1, 0, [{"name": "x", "type": "counter", "samples": [["x_total", {}, "not a number"]]}, "junk"])
    assert _value(m.merged(), "steering_dns_queries_total", transport="udp") == 6  # worker 0 reported nothing usable
