"""steerctl and steering as a user meets them: --version, help on every option, a fast start (only the
modules a command needs are imported), unpin with a preview, what an evacuation into fail-open really
does, which replica's agents status counts, and unknown names answered with the known ones."""

from __future__ import annotations

import json
import subprocess
import sys

import click
import pytest

from steering.cli.main import cli as steering_cli
from steering.cli.steerctl import COMMANDS
from steering.cli.steerctl import cli as steerctl_cli
from steering.etcdproc import EtcdCluster
from steering.store import Store
from tests.support.cli import steerctl
from tests.support.controller import make_config, start_controller
from tests.support.paths import ROOT, STEERCTL, STEERING

# Modules a command that does not plan, place clients or talk to AWS must not import (each costs 50-300 ms).
HEAVY = ("steering.planner", "steering.config", "pydantic", "steering.geoip", "maxminddb", "steering.explain",
         "steering.controller.operator", "steering.controller.actions", "steering.store", "boto3", "dns.name")


def _walk(group: click.Group, prefix: str) -> list[tuple[str, click.Command]]:
    ctx = click.Context(group, info_name=prefix)
    out = []
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        assert cmd is not None, name
        out.append((f"{prefix} {name}", cmd))
        if isinstance(cmd, click.Group):
            out += _walk(cmd, f"{prefix} {name}")
    return out


def _imported(*args: str) -> set[str]:
    """The modules ``steerctl ARGS`` imports, from ``python -X importtime`` (no clock is compared)."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", "from steering.cli.steerctl import main; main()",
                           *args], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return {line.rsplit("|", 1)[1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}


def test_version_of_both_commands() -> None:
    from importlib.metadata import version

    for script, name in ((STEERCTL, "steerctl"), (STEERING, "steering")):
        proc = subprocess.run([script, "--version"], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0 and proc.stdout.strip() == f"{name} {version('steering')}", proc


def test_every_option_of_every_command_has_help() -> None:
    missing = [f"{path} {'/'.join(p.opts)}" for root, name in ((steerctl_cli, "steerctl"), (steering_cli, "steering"))
               for path, cmd in [(name, root), *_walk(root, name)] for p in cmd.params
               if isinstance(p, click.Option) and not p.hidden and not (p.help or "").strip()]
    assert missing == []


def test_the_lazy_command_list_says_what_each_command_says() -> None:
    ctx = click.Context(steerctl_cli, info_name="steerctl")
    for name, (_, _, short) in COMMANDS.items():
        cmd = steerctl_cli.get_command(ctx, name)
        assert cmd is not None and cmd.get_short_help_str(limit=200) == short, name


@pytest.mark.parametrize("args", [("--help",), ("--version",)])
def test_help_imports_no_command(args: tuple[str, ...]) -> None:
    mods = _imported(*args)
    assert not {m for m in mods if m.startswith((*HEAVY, "grpc", "rich", "steering.cli.ops", "steering.v1"))}, mods


@pytest.mark.parametrize("args", [("status", "--help"), ("history", "--help"), ("evacuate", "--help"),
                                  ("unpin", "--help"), ("events", "--help")])
def test_simple_commands_import_only_what_they_need(args: tuple[str, ...]) -> None:
    heavy = sorted(m for m in _imported(*args) if m.startswith(HEAVY))
    assert heavy == [], heavy


def test_status_against_nothing_imports_only_what_it_needs() -> None:
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", "from steering.cli.steerctl import main; main()",
                           "status", "--server", "127.0.0.1:1", "--timeout", "0.2"], capture_output=True, text=True,
                          timeout=60, cwd=ROOT)
    assert proc.returncode == 3 and "cannot reach any server" in proc.stderr
    mods = {line.rsplit("|", 1)[1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert "grpc" in mods and sorted(m for m in mods if m.startswith(HEAVY)) == []


async def test_unpin_previews_asks_and_lists_known_geos(etcd: EtcdCluster) -> None:
    config = make_config(etcd.endpoints)
    run = await start_controller(config)
    store = Store(config.etcd)
    await store.open()
    env = {"STEERCTL_SERVER": run.target}
    try:
        rc, _, err = await steerctl("pin", "api.example.test", "europe", "eu-west-1=500", "us-east-1=500",
                                    "--reason", "test", "--yes", env=env)
        assert rc == 0, err
        assert len((await store.get_overrides()).pins) == 1

        rc, out, err = await steerctl("unpin", "api.example.test", "europe", "--dry-run", env=env)
        assert rc == 0 and "before -> after" in out and "dry run" in out, (out, err)
        assert len((await store.get_overrides()).pins) == 1  # a preview writes nothing

        rc, out, err = await steerctl("unpin", "api.example.test", "europe", env=env, stdin="n\n")
        assert rc == 2 and "not confirmed" in err
        assert len((await store.get_overrides()).pins) == 1

        rc, out, err = await steerctl("unpin", "api.example.test", "europe", "--yes", "--json", env=env)
        assert rc == 0, err
        res = json.loads(out)
        assert res["applied"] and res["audit_id"] and not res["dry_run"]
        assert any(c["geo"] == "europe" and c["before"] != c["after"] for c in res["preview"]["changes"])
        assert (await store.get_overrides()).pins == ()

        rc, _, err = await steerctl("unpin", "api.example.test", "europe", "--yes", env=env)
        assert rc == 1 and "not_pinned" in err
        rc, _, err = await steerctl("unpin", "api.example.test", "mars", "--dry-run", env=env)
        assert rc == 2 and "unknown geo 'mars' (known: na-east, na-west, europe" in err, err
        rc, _, err = await steerctl("pin", "nope.example.test", "europe", "eu-west-1=1", "--reason", "x", env=env)
        assert rc == 2 and "unknown service" in err and "known: api.example.test." in err, err
    finally:
        await store.close()
        await run.stop()


async def test_evacuating_every_region_says_fail_open_keeps_it(etcd: EtcdCluster) -> None:
    config = make_config(etcd.endpoints)
    run = await start_controller(config)
    env = {"STEERCTL_SERVER": run.target}
    try:
        rc, out, err = await steerctl("status", env=env)
        assert rc == 0 and f"answered by c1, which has {run.ctl.ingest.connected_agents} agent streams" in out, out
        for region in ("eu-west-1", "us-west-2"):
            rc, out, err = await steerctl("evacuate", region, "--reason", "t", "--now", "--yes", "--force", env=env)
            assert rc == 0 and "done: routing table" in out and "FAIL-OPEN" not in out, (out, err)
        rc, out, err = await steerctl("evacuate", "us-east-1", "--reason", "t", "--now", "--yes", "--force", env=env)
        assert rc == 0, err
        assert "done:" not in out
        assert "FAIL-OPEN keeps it in their answers" in out
        assert "the table is FAIL-OPEN" in out and "us-east-1 stays in the answers of every geo" in out, out

        rc, out, err = await steerctl("restore", "eu-west-1", "--now", "--yes", env=env)
        assert rc == 0, err
        rc, out, err = await steerctl("evacuate", "eu-west-1", "--reason", "t", "--now", "--yes", "--force",
                                      "--json", env=env)
        assert rc == 0, err
        kept = json.loads(out)["fail_open_keeps_it_in"]
        assert {"service": "api.example.test.", "geo": "europe"} in kept, kept
    finally:
        await run.stop()
