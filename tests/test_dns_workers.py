"""``steering dns --workers N``: worker processes sharing the addresses, one /metrics, restarts, stop.

Everything through the shipped command as a subprocess, with JSON logs read
line by line (worker PIDs and indexes come from its own log lines).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dns.edns
import dns.exception
import dns.message
import dns.query
import dns.rcode
from prometheus_client.parser import text_string_to_metric_families

from dnsserver.persist import save_table
from dnsserver.statsmerge import Merger
from dnsserver.supervisor import backoff, describe_exit
from dnsserver.testing import load, table_with, write_config
from steering.testing.etcd import free_port, stop_process

ROOT = Path(__file__).resolve().parent.parent
CMD = [sys.executable, "-c", "from steering.cli.main import main; main()", "dns"]
EAST = frozenset({"192.0.2.10", "192.0.2.11"})
WEST = frozenset({"192.0.2.20"})
EU = frozenset({"192.0.2.30"})
SPLIT = {"api.example.test.": {g: {"us-east-1": 500, "us-west-2": 500}
                               for g in ("na-east", "na-west", "europe", "south-america", "asia-pacific", "world")}}


def wait_until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:  # a zombie is gone for our purpose: it answers nothing and holds no socket
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z")
    except (OSError, IndexError):
        return True


class Daemon:
    """``steering dns`` with JSON logs collected from its stderr (the supervisor's and the workers')."""

    def __init__(self, config: Path, *args: str, metrics: bool = True) -> None:
        self.metrics_port = free_port() if metrics else None
        argv = [*CMD, "--config", str(config), *args]
        if self.metrics_port:
            argv += ["--metrics-addr", f"127.0.0.1:{self.metrics_port}"]
        env = {**os.environ, "PYTHONPATH": str(ROOT), "STEERING_LOG_FORMAT": "json"}
        # a session of its own: a test may signal the daemon's whole process group, as systemd does
        self.proc = subprocess.Popen(argv, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, env=env, start_new_session=True)
        self.raw: list[str] = []
        self.events: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            line = raw.decode(errors="replace").rstrip("\n")
            try:
                event = json.loads(line)
            except ValueError:
                event = None
            with self._lock:
                self.raw.append(line)
                if isinstance(event, dict):
                    self.events.append(event)

    def log(self) -> str:
        with self._lock:
            return "\n".join(self.raw)

    def named(self, name: str, **match: Any) -> list[dict[str, Any]]:
        with self._lock:
            return [e for e in self.events if e.get("event") == name
                    and all(e.get(k) == v for k, v in match.items())]

    def wait_event(self, name: str, timeout: float = 30, **match: Any) -> dict[str, Any]:
        def found() -> dict[str, Any] | None:
            assert self.proc.poll() is None or self.named(name, **match), \
                f"steering dns exited {self.proc.returncode}:\n{self.log()[-3000:]}"
            got = self.named(name, **match)
            return got[-1] if got else None
        return wait_until(found, timeout, f"log event {name} {match}")  # type: ignore[no-any-return]

    def port(self) -> int:
        return int(self.wait_event("dns.listening")["port"])

    def worker_pids(self) -> dict[int, int]:
        """Worker index -> PID of its latest process."""
        return {int(e["worker"]): int(e["pid"]) for e in self.named("dns.worker.started")}

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=15) as resp:
            text = resp.read().decode()
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for fam in text_string_to_metric_families(text) for s in fam.samples}

    def total(self, name: str, **labels: str) -> float:
        return sum(v for (n, lbl), v in self.metrics().items()
                   if n == name and all(dict(lbl).get(k) == x for k, x in labels.items()))

    def stop(self, timeout: float = 15) -> int:
        stop_process(self.proc, timeout)
        self._reader.join(10)
        return self.proc.returncode

    def __enter__(self) -> Daemon:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        for pid in self.worker_pids().values():  # never leave a worker behind, even when a test failed
            if not gone(pid):
                os.kill(pid, signal.SIGKILL)
        self._reader.join(10)


def addresses(r: dns.message.Message) -> frozenset[str]:
    return frozenset(rd.address for rrset in r.answer for rd in rrset)


def query(subnet: str | None = None) -> dns.message.Message:
    opts = [dns.edns.ECSOption(subnet, 24)] if subnet else None
    return dns.message.make_query("api.example.test", "A", use_edns=0 if subnet else None, options=opts)


def ask_udp(port: int, subnet: str | None = None, timeout: float = 2.0) -> dns.message.Message:
    """One query from a fresh socket: a new source port every time."""
    return dns.query.udp(query(subnet), "127.0.0.1", port=port, timeout=timeout)


def ask_tcp(port: int, subnet: str | None = None, timeout: float = 2.0) -> dns.message.Message:
    """One query on a fresh connection."""
    return dns.query.tcp(query(subnet), "127.0.0.1", port=port, timeout=timeout)


def answered(port: int) -> bool:
    try:
        return ask_udp(port, timeout=0.5).rcode() == dns.rcode.NOERROR
    except (dns.exception.Timeout, OSError):
        return False


def start_with_table(tmp_path: Path, workers: int, *extra: str, metrics: bool = True) -> Daemon:
    config = write_config(tmp_path)
    save_table(tmp_path / "dns-table.json", table_with(load(tmp_path), 1, SPLIT))
    return Daemon(config, "--workers", str(workers), "--no-etcd", "--listen", "127.0.0.1:0", *extra,
                  metrics=metrics)


def ready(d: Daemon, workers: int) -> int:
    """Wait until the supervisor says every worker listens; the port."""
    d.wait_event("dns.supervisor.ready")
    assert len(d.named("dns.listening")) == workers, d.log()
    port = d.port()
    wait_until(lambda: answered(port), 20, "an answer")
    return port


# ---- through the shipped command


def test_two_workers_share_udp_and_tcp_and_metrics_add_up(tmp_path: Path) -> None:
    with start_with_table(tmp_path, 2) as d:
        port = ready(d, 2)
        assert {e["worker"] for e in d.named("dns.listening")} == {0, 1}  # each worker's lines carry its index
        before = d.total("steering_dns_queries_total")
        sent = 0
        for i in range(60):  # bounded; a fresh socket (source port) or connection each
            r = ask_udp(port, f"10.{i}.0.0") if i % 3 else ask_tcp(port, f"10.{i}.0.0")
            sent += 1
            assert r.rcode() == dns.rcode.NOERROR and addresses(r) in (EAST, WEST)
        m = d.metrics()
        assert d.total("steering_dns_queries_total") - before == sent  # nothing else talks to this port
        per_worker = {dict(lbl)["worker"]: v for (n, lbl), v in m.items() if n == "steering_dns_worker_queries_total"}
        assert set(per_worker) == {"0", "1"} and all(v > 0 for v in per_worker.values()), per_worker
        assert sum(per_worker.values()) == d.total("steering_dns_queries_total")
        assert m[("steering_dns_workers", ())] == 2
        assert sum(v for (n, _), v in m.items() if n == "steering_dns_worker_restarts_total") == 0
        # gauges stay per worker; counters are summed (no worker label)
        assert m[("steering_dns_table_version", (("worker", "0"),))] == 1
        assert m[("steering_dns_table_version", (("worker", "1"),))] == 1
        assert all("worker" not in dict(lbl) for (n, lbl) in m if n == "steering_dns_queries_total")
        assert d.total("steering_dns_queries_total", transport="tcp") == 20
        assert d.stop() == 0
    assert "Traceback" not in d.log()


def test_killed_worker_is_restarted_and_sigterm_stops_every_process(tmp_path: Path) -> None:
    with start_with_table(tmp_path, 2) as d:
        port = ready(d, 2)
        first = d.worker_pids()
        assert len(first) == 2 and os.getpid() not in first.values()
        os.kill(first[1], signal.SIGKILL)
        exited = d.wait_event("dns.worker.exited", worker=1)
        assert exited["status"] == "killed by SIGKILL" and exited["pid"] == first[1]
        wait_until(lambda: d.worker_pids()[1] != first[1], 30, "worker 1 to start again")
        wait_until(lambda: gone(first[1]), 10, "the killed worker to be reaped")
        wait_until(lambda: len(d.named("dns.listening", worker=1)) == 2, 30, "the new worker 1 to listen")
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
        wait_until(lambda: all(gone(p) for p in pids), 10, "every process to be gone")
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
        wait_until(lambda: len(d.named("dns.worker.exited", worker=1)) >= 3, 30, "two failed restarts")
        config.write_bytes(good)
        exits = d.named("dns.worker.exited", worker=1)
        assert exits[0]["status"] == "killed by SIGKILL"
        assert all(e["status"] == "exit code 2" for e in exits[1:3])
        delays = [e["restart_in"] for e in exits[:3]]
        assert delays == sorted(delays) and delays[0] < delays[2], delays
        assert d.named("dns.worker.config_error", worker=1)
        assert all(ask_udp(port).rcode() == dns.rcode.NOERROR for _ in range(10))  # worker 0 answers meanwhile
        wait_until(lambda: d.named("dns.listening", worker=1)[-1]["timestamp"] > exits[2]["timestamp"]
                   if len(d.named("dns.listening", worker=1)) > 1 else False, 30, "worker 1 back")
        assert d.stop() == 0
    assert "Traceback" not in d.log()


def test_sigterm_to_the_whole_group_stops_without_restarts(tmp_path: Path) -> None:
    """systemd's default stop signals every process of the unit at once: no worker is restarted."""
    with start_with_table(tmp_path, 2, metrics=False) as d:
        ready(d, 2)
        pids = [d.proc.pid, *d.worker_pids().values()]
        os.killpg(d.proc.pid, signal.SIGTERM)  # the group of the daemon we started (its own session)
        assert d.proc.wait(15) == 0
        wait_until(lambda: all(gone(p) for p in pids), 10, "every process to be gone")
        d._reader.join(10)
        assert not d.named("dns.worker.exited") and len(d.named("dns.worker.started")) == 2, d.log()


def test_workers_stop_when_the_supervisor_is_killed(tmp_path: Path) -> None:
    with start_with_table(tmp_path, 2, metrics=False) as d:
        ready(d, 2)
        workers = list(d.worker_pids().values())
        os.kill(d.proc.pid, signal.SIGKILL)
        d.proc.wait(10)
        wait_until(lambda: all(gone(p) for p in workers), 15, "the orphaned workers to exit")


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
        d = Daemon(config, "--workers", "2", "--no-etcd", "--listen", "127.0.0.1:0", metrics=False)
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
        with Daemon(config, "--workers", "2", "--no-etcd", "--listen", f"127.0.0.1:{port}", metrics=False) as d:
            assert d.proc.wait(30) == 1
            d._reader.join(10)
            errors = [line for line in d.raw if not line.startswith("{")]
            assert len(errors) == 1 and "Address already in use" in errors[0] and str(port) in errors[0], d.log()
            assert not d.named("dns.worker.started")


def _one_line_failure(config: Path, *args: str, code: int, says: str) -> None:
    with Daemon(config, "--workers", "2", "--no-etcd", *args, metrics=False) as d:
        assert d.proc.wait(30) == code
        d._reader.join(10)
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
    with Daemon(config, "--workers", "2", "--listen", "127.0.0.1:0", metrics=False) as d:
        port = ready(d, 2)

        async def publish(version: int, weights: dict[str, Any]) -> None:
            async with Store(cfg.etcd, base_dir=cfg.base_dir) as store:
                await store.put_table(table_with(cfg, version, weights, generated_at=time.time()))

        asyncio.run(publish(5, {"api.example.test.": {"world": {"us-west-2": 1000}}}))
        wait_until(lambda: all(addresses(ask_udp(port, f"10.{i}.2.0")) == WEST for i in range(10)), 20,
                   "every worker to serve the table from etcd")
        wait_until(lambda: len(d.named("dns.table.applied", version=5)) == 2, 20, "both workers to apply v5")
        written = wait_until(lambda: d.named("dns.state.written", version=5), 20, "the table to be persisted")
        assert {e["worker"] for e in d.named("dns.state.written")} == {0}
        assert len(written) == 1
        assert json.loads((tmp_path / "dns-table.json").read_bytes())["version"] == 5
        assert d.stop() == 0


# ---- pure parts


def test_backoff_grows_and_is_bounded() -> None:
    delays = [backoff(n) for n in range(0, 40)]
    assert delays[0] == 0 and delays[1] > 0
    assert all(a <= b for a, b in zip(delays, delays[1:]))
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
