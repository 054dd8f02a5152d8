"""``steering demo [--config FILE] [--dns-port 5353] [--api-port 50051] [--state-dir DIR]``, and
``steering demo break|heal REGION`` / ``steering demo load REGION RPS`` / ``steering demo cut REGION GEO``
/ ``steering demo heal`` from a second terminal."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path
from typing import Any

import click

from steering.config import ConfigError
from steering.demo.run import EXAMPLE_CONFIG, STATE_FILE, Demo, DemoError, default_state_dir, wait_ready
from steering.demo.simtarget import read_state, write_state

NEXT_STEPS = """\
The demo is up. From another terminal:
  dig @127.0.0.1 -p {dns} api.example.test                 # steered answer (your geo: 127.0.0.1 -> default)
  dig @127.0.0.1 -p {dns} api.example.test +subnet=198.51.100.130/32   # as a client in europe (ECS)
  dig +tcp @127.0.0.1 -p {dns} api.example.test +nsid +cookie   # over TCP; which worker answered
  dig @127.0.0.1 -p {dns} anything.wild.example.test        # wildcard (RFC 4592)
  dig @127.0.0.1 -p {dns} www.child.example.test            # referral: AA clear, NS and glue
  steerctl --server 127.0.0.1:{api} status
  steerctl --server 127.0.0.1:{api} evacuate eu-west-1 --reason "demo" --now --yes
  steerctl --server 127.0.0.1:{api} restore eu-west-1 --yes
  steering demo break us-east-1        # its health checks fail; traffic leaves it
  steering demo heal us-east-1         # it recovers; traffic ramps back
  steering demo cut us-east-1 na-east  # na-east's observers lose it: na-east leaves it, other geos keep it
  steering demo heal                   # every break and cut healed
  steering demo load us-west-2 9000    # it reports more load; spillover changes
State dir: {state}  (logs in {state}/logs). Ctrl-C stops everything.
"""


@click.group(name="demo", invoke_without_command=True)
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=str(EXAMPLE_CONFIG),
              show_default=True)
@click.option("--dns-port", type=int, default=5353, show_default=True)
@click.option("--api-port", type=int, default=50051, show_default=True, help="controllers on this port and the next")
@click.option("--state-dir", type=click.Path(file_okay=False), default=None,
              help="where the demo keeps etcd data, logs and its state (default $STEERING_DEMO_DIR or "
                   "/tmp/steering-demo-UID)")
@click.option("--for-seconds", type=float, default=None, hidden=True, help="stop by itself after this long")
@click.pass_context
def command(ctx: click.Context, config_path: str, dns_port: int, api_port: int, state_dir: str | None,
            for_seconds: float | None) -> None:
    """Run etcd, two controllers, the DNS server and simulated regions with their agents, on loopback."""
    from steering import logs

    logs.setup(level="warning", component="demo")
    ctx.ensure_object(dict)
    ctx.obj["state_dir"] = Path(state_dir) if state_dir else default_state_dir()
    if ctx.invoked_subcommand is not None:
        return
    demo = Demo(config_path=Path(config_path), state_dir=ctx.obj["state_dir"], dns_port=dns_port, api_port=api_port)
    try:
        code = asyncio.run(_main(demo, for_seconds))
    except ConfigError as exc:
        for line in str(exc).splitlines():
            click.echo(f"steering demo: {line}", err=True)
        code = 2
    sys.exit(code)


async def _main(demo: Demo, for_seconds: float | None) -> int:
    from rich.console import Console
    from rich.live import Live

    from steering.demo.status import events, render
    from steering.store import Store

    console = Console()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if for_seconds:
        loop.call_later(for_seconds, stop.set)
    try:
        try:
            demo.start()
            await wait_ready(demo)
        except DemoError as exc:
            click.echo(f"steering demo: {exc}", err=True)
            return 1
        console.print(NEXT_STEPS.format(dns=demo.dns_port, api=demo.api_port, state=demo.state_dir))
        assert demo.config is not None
        store = Store(demo.config.etcd, base_dir=demo.config.base_dir)
        await store.open()
        recent: list[str] = []
        previous = None
        live = Live(render(None, recent, demo.dns_port, demo.api_port), console=console, auto_refresh=False) \
            if console.is_terminal else None

        async def follow() -> None:
            nonlocal previous
            async for table in store.watch_table():
                recent.extend(events(previous, table))
                previous = table
                view = render(table, recent, demo.dns_port, demo.api_port)
                if live is not None:
                    live.update(view, refresh=True)
                else:
                    console.print(view)

        async def watchdog() -> None:
            while True:
                await asyncio.sleep(1.0)
                dead = demo.dead()
                if dead:
                    console.print(f"[red]stopped unexpectedly: {'; '.join(dead)}[/]")
                    stop.set()
                    return

        if live is not None:
            live.start()
        tasks = [asyncio.create_task(follow()), asyncio.create_task(watchdog())]
        await stop.wait()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if live is not None:
            live.stop()
        await store.close()
        return 0
    finally:
        console.print("stopping the demo ...")
        demo.stop()
        console.print("stopped.")


def _info(state_dir: Path) -> dict[str, Any]:
    info_path = state_dir / STATE_FILE
    try:
        info = json.loads(info_path.read_text())
    except (OSError, ValueError):
        click.echo(f"steering demo: no running demo found in {state_dir} (start one with `steering demo`, "
                   "or pass the same --state-dir)", err=True)
        sys.exit(3)
    return info if isinstance(info, dict) else {}


def _target_file(state_dir: Path, target: str) -> Path:
    info = _info(state_dir)
    targets = info.get("targets", {})
    if target not in targets:
        click.echo(f"steering demo: unknown region or site {target!r}; known: {', '.join(sorted(targets))}",
                   err=True)
        sys.exit(2)
    return Path(targets[target]["state_file"])


@command.command(name="break")
@click.argument("target")
@click.pass_context
def break_(ctx: click.Context, target: str) -> None:
    """Make TARGET's simulated service fail its health checks."""
    write_state(_target_file(ctx.obj["state_dir"], target), broken=True)
    click.echo(f"{target}: broken (health checks now fail)")


@command.command()
@click.argument("target", required=False)
@click.pass_context
def heal(ctx: click.Context, target: str | None) -> None:
    """Make TARGET's simulated service healthy and reachable again (every target without one)."""
    state_dir: Path = ctx.obj["state_dir"]
    for t in [target] if target else sorted(_info(state_dir).get("targets", {})):
        write_state(_target_file(state_dir, t), broken=False, cut=[])
        click.echo(f"{t}: healed")


@command.command()
@click.argument("target")
@click.argument("geo")
@click.pass_context
def cut(ctx: click.Context, target: str, geo: str) -> None:
    """Cut the network between GEO's observers and TARGET: they can no longer reach it (heal undoes it)."""
    state_dir: Path = ctx.obj["state_dir"]
    path = _target_file(state_dir, target)
    observers = {o: v for o, v in _info(state_dir).get("observers", {}).items() if isinstance(v, dict)}
    mine = sorted(o for o, v in observers.items() if geo in v.get("geos", []) and target in v.get("targets", []))
    if not mine:
        stands = sorted({g for v in observers.values() for g in v.get("geos", [])})
        click.echo(f"steering demo: no observer of {geo!r} observes {target!r}; observers stand for: "
                   f"{', '.join(stands) or 'none (the config lists no observers)'}", err=True)
        sys.exit(2)
    state = write_state(path, cut=sorted(set(read_state(path).get("cut") or []) | set(mine)))
    click.echo(f"{target}: unreachable from {geo} ({', '.join(mine)}); cut from: {', '.join(state['cut'])}")


@command.command()
@click.argument("target")
@click.argument("rps", type=click.FloatRange(min=0))
@click.pass_context
def load(ctx: click.Context, target: str, rps: float) -> None:
    """Make TARGET report RPS requests/s of load."""
    write_state(_target_file(ctx.obj["state_dir"], target), load=rps)
    click.echo(f"{target}: now reports {rps:g} requests/s")
