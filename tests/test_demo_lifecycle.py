"""``steering demo`` as a new user runs it: through ``| tee``, Ctrl-C, a closed stdout, a killed child,
``steering demo restart`` and ``steering demo stop``. Every process is the real console script; every
check looks at processes (by PID), the demo's own output and real DNS answers.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import urllib.request
from pathlib import Path

import dns.message
import dns.query
import pytest

from steering.demo import control
from tests.support import ROOT, eventually_sync
from tests.support.demo import UP, DemoRun, all_gone
from tests.support.paths import STEERCTL, STEERING
from tests.support.procs import gone

pytestmark = pytest.mark.timeout(400)


def _answers(run: DemoRun) -> bool:
    q = dns.message.make_query("api.example.test.", "A")
    try:
        return bool(dns.query.udp(q, "127.0.0.1", port=run.dns_port, timeout=1.0).answer)
    except Exception:
        return False


def _resolved(command: str) -> Path:
    """Where the shell would find a command printed in a hint (bare: on PATH; else relative to the cwd)."""
    found = shutil.which(command) if "/" not in command else str(ROOT / command)
    assert found, command
    return Path(found).resolve()


def test_ctrl_c_through_tee_stops_every_child_and_the_log_has_one_line_per_change(tmp_path: Path) -> None:
    run = DemoRun.start(tmp_path, tee=True)
    try:
        info = run.up()
        pids = list(run.pids().values())
        assert len(pids) >= 15, info  # etcd, 2 controllers, dns, 5 agents, 6 observer agents
        text = run.output()

        # The hints name the commands as this user runs them, and the non-default state dir.
        status_hint = next(line for line in text.splitlines() if " status " in line and "--server" in line)
        assert _resolved(status_hint.split()[0]) == Path(STEERCTL).resolve(), status_hint
        stop_hint = next(line for line in text.splitlines() if re.search(r"\bdemo\b.* stop\b", line))
        assert _resolved(stop_hint.split()[0]) == Path(STEERING).resolve(), stop_hint
        assert f"--state-dir {run.state}" in stop_hint, stop_hint
        assert f"kill {run.pids()['controller-1']}" in text

        # The console and REST API on the HTTP port and the next, named in the hints and demo.json.
        console = f"http://127.0.0.1:{run.http_port}/"
        assert info["console_url"] == console and info["http_ports"] == [run.http_port, run.http_port + 1], info
        assert any(line.split()[0] == console for line in text.splitlines() if line.strip()), text
        def served(port: int) -> bool:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as page:
                assert page.status == 200 and b"<!doctype html>" in page.read().lower()
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/status", timeout=10) as status:
                return bool(json.loads(status.read())["replica"] in ("ctl-1", "ctl-2"))

        for port in info["http_ports"]:  # controller-2 may still be starting when DNS first answers
            eventually_sync(lambda p=port: served(p), 60, f"the console on port {port}", ignoring=(OSError,))

        # Not a terminal: plain lines, one per change, never the redrawn screen.
        def converged() -> str:
            out = run.output()
            # the ramp ends in the log, or the demo started watching after it had (a slow machine)
            return out if re.search(r"v\d+: (converged|first table, .*; converged)", out) else ""

        out = eventually_sync(converged, 120, "the first ramp to converge, in the log")
        assert out.count("first table") == 1
        assert "routing table v" not in out and "recent events:" not in out  # the live view's parts
        changes = [line for line in out.split(UP, 1)[1].splitlines() if re.match(r"\d\d:\d\d:\d\d v\d+: ", line)]
        assert changes and all(len(line) < 200 for line in changes)

        # Ctrl-C in the terminal: SIGINT to the whole group; tee dies at once, the demo's writes fail.
        os.killpg(run.proc.pid, signal.SIGINT)
        run.proc.wait(90)
        all_gone([run.demo_pid(), *pids])
        assert not (run.state / control.STATE_FILE).exists()
    finally:
        run.close()


def test_a_closed_stdout_stops_the_demo(tmp_path: Path) -> None:
    """The reader of the demo's output goes away (tee killed alone): the demo stops every child by itself."""
    run = DemoRun.start(tmp_path, tee=True)
    try:
        run.up()
        pids = list(run.pids().values())
        demo_pid = run.demo_pid()
        tee = subprocess.run(["pgrep", "-g", str(run.proc.pid), "-x", "tee"], capture_output=True, text=True)
        assert tee.stdout.split(), "tee not found in the demo's process group"
        for pid in tee.stdout.split():
            os.kill(int(pid), signal.SIGTERM)
        all_gone([demo_pid, *pids], timeout=60)
        assert not (run.state / control.STATE_FILE).exists()
    finally:
        run.close()


def test_a_killed_controller_is_reported_restarted_and_the_rest_keeps_running(tmp_path: Path) -> None:
    run = DemoRun.start(tmp_path)
    try:
        run.up()
        before = run.pids()
        os.kill(before["controller-1"], signal.SIGKILL)

        def reported() -> str:
            out = run.output()
            return out if "controller-1 stopped unexpectedly" in out else ""

        out = eventually_sync(reported, 30, "the demo to report controller-1's death")
        assert "killed by SIGKILL" in out and "restart controller-1" in out
        assert "stopping the demo" not in out
        assert run.proc.poll() is None
        assert all(not gone(p) for name, p in before.items() if name != "controller-1")
        eventually_sync(lambda: _answers(run), 30, "DNS to keep answering")
        # steerctl with both servers (as the hints give it) fails over to controller-2
        status = subprocess.run([STEERCTL, "--server", run.servers, "status", "--json"], capture_output=True,
                                text=True, timeout=60)
        assert status.returncode == 0, status.stderr

        restarted = run.command("restart", "controller-1")
        assert restarted.returncode == 0, restarted.stderr
        new_pid = run.pids()["controller-1"]
        assert new_pid != before["controller-1"] and not gone(new_pid)
        assert f"restarted controller-1 (pid {new_pid})" in restarted.stdout

        # etcd and every agent too; an unknown name lists the known ones
        assert run.command("restart", "etcd").returncode == 0
        assert run.pids()["etcd"] != before["etcd"]
        agents = run.command("restart", "agents")
        assert agents.returncode == 0 and "agent-us-east-1" in agents.stdout
        unknown = run.command("restart", "controller-9")
        assert unknown.returncode == 2 and "known: " in unknown.stderr and "controller-1" in unknown.stderr
        eventually_sync(lambda: _answers(run), 30, "DNS to answer after the restarts")

        # `steering demo stop` from another terminal: the demo stops everything, the restarted ones included
        now = run.pids()
        stopped = run.command("stop")
        assert stopped.returncode == 0 and "stopped" in stopped.stdout, stopped.stdout + stopped.stderr
        assert run.proc.wait(60) == 0
        all_gone(list(now.values()))
        assert not (run.state / control.STATE_FILE).exists()
    finally:
        run.close()


def test_stop_after_the_demo_was_killed_stops_only_what_it_recorded(tmp_path: Path) -> None:
    """SIGKILL leaves the children running: `steering demo stop` stops them by their recorded PIDs and start
    times; a process whose PID is recorded with another start time (a reused PID) is left alone."""
    run = DemoRun.start(tmp_path)
    stranger = subprocess.Popen(["sleep", "300"])
    try:
        run.up()
        pids = run.pids()
        os.kill(run.demo_pid(), signal.SIGKILL)
        run.proc.wait(30)
        info = run.info()
        assert info is not None and all(not gone(p) for p in pids.values())  # orphans, still running
        # a stranger's PID recorded as if it were a child, with a start time that is not its own
        info["pids"]["agent-ghost"] = stranger.pid
        info["starts"]["agent-ghost"] = (control.start_ticks(stranger.pid) or 0) + 1
        (run.state / control.STATE_FILE).write_text(json.dumps(info))

        stopped = run.command("stop")
        assert stopped.returncode == 0, stopped.stderr
        assert "is gone" in stopped.stdout and f"stopped {len(pids)} leftover" in stopped.stdout, stopped.stdout
        all_gone(list(pids.values()))
        assert stranger.poll() is None  # not ours: never signalled
        again = run.command("stop")
        assert again.returncode == 0 and "nothing to stop" in again.stdout
    finally:
        stranger.kill()
        stranger.wait(10)
        run.close()


def test_a_second_demo_refused_for_a_busy_port_says_only_why(tmp_path: Path) -> None:
    busy = subprocess.Popen(["python3", "-c", "import socket,time\n"
                             "s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
                             "s.bind(('127.0.0.1', 0)); s.listen(); print(s.getsockname()[1], flush=True)\n"
                             "time.sleep(120)"], stdout=subprocess.PIPE, text=True)
    try:
        assert busy.stdout is not None
        port = busy.stdout.readline().strip()
        second = subprocess.run([STEERING, "demo", "--api-port", port, "--dns-port", port, "--http-port", "0",
                                 "--ingest-port", "0", "--state-dir", str(tmp_path / "second")], capture_output=True, text=True, timeout=60)
        assert second.returncode == 1
        assert "already in use" in second.stderr and "--api-port" in second.stderr, second.stderr
        assert second.stdout == "" and len(second.stderr.strip().splitlines()) == 1, (second.stdout, second.stderr)
        assert "stopping" not in second.stderr + second.stdout
    finally:
        busy.kill()
        busy.wait(10)
