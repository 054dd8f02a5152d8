"""``steering agent`` as a real subprocess: reports, metrics, SIGTERM, and bad configs."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import ROOT, eventually, free_port, stop_process
from tests.support.agent_targets import FakeController, HttpTarget, TcpTarget
from tests.support.paths import AGENT_EXAMPLE


def steering(*args: str) -> list[str]:
    return [sys.executable, "-c", "from steering.cli.main import main; main()", *args]


@pytest.fixture
def web() -> Iterator[HttpTarget]:
    t = HttpTarget()
    try:
        yield t
    finally:
        t.close()


def write_config(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


async def test_sigterm_exits_zero_promptly_and_metrics_are_served(tmp_path: Path, web: HttpTarget) -> None:
    controller = await FakeController("c1").start()
    tcp = TcpTarget()
    metrics_port = free_port()
    cfg = write_config(tmp_path / "agent.yaml", {
        "site": "us-east-1", "region": "us-east-1", "agent_id": "cli-agent",
        "controllers": [controller.endpoint], "interval_seconds": 0.1,
        "probes": [{"name": "web", "kind": "http", "url": web.url("/")},
                   {"name": "db", "kind": "tcp", "address": tcp.address}],
        "capacity": 500,
    })
    log = (tmp_path / "agent.log").open("wb")
    proc = subprocess.Popen(steering("agent", "--config", str(cfg), "--metrics-addr", f"127.0.0.1:{metrics_port}"),
                            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:
        await eventually(lambda: len(controller.reports) >= 3 or proc.poll() is not None, timeout=20,
                         what="reports from the agent process")
        assert proc.poll() is None, (tmp_path / "agent.log").read_text()
        assert controller.reports[-1].agent_id == "cli-agent"
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
        assert 'steering_agent_probes_total{probe="web",site="us-east-1"}' in text
        assert 'steering_agent_reports_sent_total{site="us-east-1"}' in text
        assert 'steering_agent_connected{site="us-east-1"} 1.0' in text
        proc.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        await eventually(lambda: proc.poll() is not None, timeout=5, what="exit after SIGTERM")
        print(f"agent exited {time.monotonic() - signalled:.3f}s after SIGTERM")
        assert proc.returncode == 0, (tmp_path / "agent.log").read_text()
        assert "agent stopped" in (tmp_path / "agent.log").read_text()
    finally:
        stop_process(proc, 5)
        log.close()
        tcp.close()
        await controller.stop()


def test_sigint_also_stops_cleanly(tmp_path: Path) -> None:
    # No controller and no target at all: the agent still starts, and stops on SIGINT.
    cfg = write_config(tmp_path / "agent.yaml", {
        "site": "us-east-1", "region": "us-east-1", "controllers": [f"127.0.0.1:{free_port()}"],
        "interval_seconds": 0.1, "probes": [{"name": "db", "kind": "tcp", "address": f"127.0.0.1:{free_port()}"}],
        "capacity": 1,
    })
    proc = subprocess.Popen(steering("agent", "--config", str(cfg)), cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        # Wait for the first sign of life on stderr before signalling.
        assert proc.stderr is not None
        line = proc.stderr.readline()
        assert b"agent starting" in line, line
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == 0
    finally:
        stop_process(proc, 5)
        if proc.stderr is not None:
            proc.stderr.close()


def test_bad_config_exits_2_with_one_line_per_problem(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "agent.yaml", {
        "site": "us-east-1", "region": "us-east-1", "controllers": ["127.0.0.1"],
        "interval_seconds": -1,
        "probes": [{"name": "web", "kind": "http", "url": "ftp://nope"}, {"name": "db", "kind": "tcp"}],
        "capacity": {"url": "http://127.0.0.1:1/", "json_path": "a", "metric": "b"},
        "surprise": True,
    })
    proc = subprocess.run(steering("agent", "--config", str(cfg)), cwd=ROOT, capture_output=True, timeout=30)
    assert proc.returncode == 2
    lines = proc.stderr.decode().strip().splitlines()
    prefix = f"{cfg}: "
    assert all(line.startswith(prefix) for line in lines), lines
    fields = [line[len(prefix):].split(":")[0] for line in lines]
    assert fields == ["controllers[0]", "interval_seconds", "probes[0].url", "probes[1].address",
                      "capacity", "surprise"], lines


def test_missing_config_exits_2(tmp_path: Path) -> None:
    proc = subprocess.run(steering("agent", "--config", str(tmp_path / "nope.yaml")), cwd=ROOT,
                          capture_output=True, timeout=30)
    assert proc.returncode == 2
    assert "nope.yaml: cannot read" in proc.stderr.decode()


def test_example_config_is_valid() -> None:
    from agents.config import load_agent_config

    cfg = load_agent_config(AGENT_EXAMPLE)
    assert cfg.region == "us-east-1"
