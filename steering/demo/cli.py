"""``steering demo [--config FILE] [--route53] [--dns-port 5353] [--api-port 50051] [--http-port 8080]
[--state-dir DIR]``, and from a second terminal ``steering demo break|heal REGION`` / ``load REGION RPS`` / ``cut REGION GEO`` /
``heal`` / ``restart NAME`` / ``stop``.

The running demo stops every child it started on any of ``STOP_SIGNALS`` and
when its stdout closes (``make demo | tee demo.log`` and a Ctrl-C: tee dies
first); a failed write never skips the stop (steering.demo.output). A child
that exits on its own is reported and the rest keep running: the demo is
where users rehearse failures (kill the leader, watch the other take over),
and ``steering demo restart NAME`` brings it back.
"""

from __future__ import annotations

import asyncio
import shlex
import signal
import sys
from pathlib import Path
from typing import Any

import click

from steering.config import ConfigError
from steering.demo import control
from steering.demo.output import Output
from steering.demo.run import (
    EXAMPLE_CONFIG,
    Demo,
    DemoError,
    builtin_state_dir,
    command_name,
    default_state_dir,
    wait_ready,
)
from steering.demo.simtarget import read_state, write_state

# Every signal whose default would end the demo without stopping its children (SIGKILL cannot be caught:
# `steering demo stop` then stops what it left running).
STOP_SIGNALS = (signal.SIGHUP, signal.SIGINT, signal.SIGQUIT, signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2,
                signal.SIGALRM)
WATCH_SECONDS = 0.25  # how often the demo looks at its children, its requests and its stdout
RESTART_TIMEOUT = 60.0  # `steering demo restart`: how long to wait for the demo's answer

def _demo_command(state_dir: Path) -> str:
    """``steering demo`` as the user runs it from another terminal, with the state dir if not the one found
    by default there (a $STEERING_DEMO_DIR of this shell may not be set in the other)."""
    base = f"{command_name('steering')} demo"
    return base if state_dir == builtin_state_dir() else f"{base} --state-dir {shlex.quote(str(state_dir))}"


def _steerctl(demo: Demo) -> str:
    """steerctl with both controllers: it fails over, so it keeps answering while one is killed."""
    return f"{command_name('steerctl')} --server 127.0.0.1:{demo.api_port},127.0.0.1:{demo.api_port + 1}"


def next_steps(demo: Demo) -> str:
    """What to try from another terminal, with the commands as this user runs them."""
    dns, steerctl, sd = demo.dns_port, _steerctl(demo), _demo_command(demo.state_dir)
    rows = [(demo.console_url, "the console in a browser (the REST API: "
             f"{demo.console_url}api/v1/openapi.json; controller-2 on :{demo.http_port + 1})")] if demo.http_port else []
    rows += [
        (f"dig @127.0.0.1 -p {dns} api.example.test", "steered answer (your geo: 127.0.0.1 -> default)"),
        (f"dig @127.0.0.1 -p {dns} api.example.test +subnet=198.51.100.130/32", "as a client in europe (ECS)"),
        (f"dig +tcp @127.0.0.1 -p {dns} api.example.test +nsid +cookie", "over TCP; which worker answered"),
        (f"dig @127.0.0.1 -p {dns} anything.wild.example.test", "wildcard (RFC 4592)"),
        (f"dig @127.0.0.1 -p {dns} www.child.example.test", "referral: AA clear, NS and glue"),
        (f"{steerctl} status", "health, load, where each geo's traffic goes"),
        (f'{steerctl} evacuate eu-west-1 --reason "demo" --now --yes', "move its traffic away"),
        (f"{steerctl} restore eu-west-1 --yes", "and back"),
        (f"{sd} break us-east-1", "its health checks fail; traffic leaves it"),
        (f"{sd} heal us-east-1", "it recovers; traffic ramps back"),
        (f"{sd} cut us-east-1 na-east", "na-east's observers lose it: na-east leaves it, other geos keep it"),
        (f"{sd} heal", "every break and cut healed"),
        (f"{sd} load us-west-2 9000", "it reports more load; spillover changes"),
        (f"kill {demo.pids().get('controller-1', 0)}", "controller-1 dies: the other takes over, the rest keep running"),
        (f"{sd} restart controller-1", "brings it back (also etcd, dns, agents, or one agent-...)"),
    ]
    fake = demo.fake_route53
    if fake is not None:
        aws = " ".join(f"{k}={v}" for k, v in sorted(fake.env.items()) if k != "AWS_SESSION_TOKEN")
        rows += [(f"{steerctl} status", f"route53: last sync and its changes (moto on {fake.url}, zone {fake.zone_id})"),
                 (f"env {aws} {steerctl} route53 plan --config {shlex.quote(str(demo.run_config))}",
                  "what a sync would change now (nothing, once in sync)")]
    rows.append((f"{sd} stop", "stops everything (so does Ctrl-C here)"))
    width = min(max(len(c) for c, _ in rows), 72)
    lines = ["The demo is up. From another terminal:"]
    lines += [f"  {c:<{width}}  # {why}" for c, why in rows]
    lines.append(f"State dir: {demo.state_dir}  (logs in {demo.state_dir / 'logs'}).")
    return "\n".join(lines) + "\n"


def hint_line(demo: Demo) -> str:
    console = f"console: {demo.console_url}   |   " if demo.console_url else ""
    return (f"{console}try: dig @127.0.0.1 -p {demo.dns_port} api.example.test   |   {_steerctl(demo)} status   |   "
            f"{_demo_command(demo.state_dir)} break us-east-1")


@click.group(name="demo", invoke_without_command=True)
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=str(EXAMPLE_CONFIG),
              show_default=True, help="the deployment to run (its route53 section is used as given)")
@click.option("--route53", is_flag=True,
              help="run moto's Route 53 on loopback with a hosted zone, and the leader's Route 53 sink against it "
                   "(moto: a dev dependency)")
@click.option("--dns-port", type=int, default=5353, show_default=True, help="the DNS server's port (UDP and TCP)")
@click.option("--api-port", type=int, default=50051, show_default=True, help="controllers on this port and the next")
@click.option("--http-port", type=click.IntRange(0, 65534), default=8080, show_default=True,
              help="the browser console and REST API: controller-1 on this port, controller-2 on the next (0: off)")
@click.option("--ingest-port", type=click.IntRange(0, 65534), default=50061, show_default=True,
              help="the agents report here: controller-1's ingest listener on this port, controller-2's on the "
                   "next (0: off, the agents report on the API ports)")
@click.option("--state-dir", type=click.Path(file_okay=False), default=None,
              help="where the demo keeps etcd data, logs and its state (default $STEERING_DEMO_DIR or "
                   "/tmp/steering-demo-UID); give the same one to the commands below")
@click.option("--for-seconds", type=float, default=None, hidden=True, help="stop by itself after this long")
@click.pass_context
def command(ctx: click.Context, config_path: str, route53: bool, dns_port: int, api_port: int, http_port: int,
            ingest_port: int, state_dir: str | None, for_seconds: float | None) -> None:
    """Run etcd, two controllers, the DNS server and simulated regions with their agents, on loopback."""
    from steering import logs

    logs.setup(level="warning", component="demo")
    ctx.ensure_object(dict)
    ctx.obj["state_dir"] = Path(state_dir) if state_dir else default_state_dir()
    if ctx.invoked_subcommand is not None:
        return
    demo = Demo(config_path=Path(config_path), state_dir=ctx.obj["state_dir"], dns_port=dns_port, api_port=api_port,
                http_port=http_port, ingest_port=ingest_port, route53=route53)
    out = Output()
    try:
        code = asyncio.run(_main(demo, out, for_seconds))
    except ConfigError as exc:
        for line in str(exc).splitlines():
            out.error(f"steering demo: {line}")
        code = 2
    sys.exit(code)


async def _main(demo: Demo, out: Output, for_seconds: float | None) -> int:
    stop = asyncio.Event()
    out.on_closed = stop.set  # nobody reads us any more: stop, as for a Ctrl-C
    loop = asyncio.get_running_loop()
    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, stop.set)
    if for_seconds:
        loop.call_later(for_seconds, stop.set)
    try:
        return await _run(demo, out, stop)
    except DemoError as exc:
        out.error(f"steering demo: {exc}")
        return 1
    finally:
        out.end_view()
        if demo.started:  # a demo refused before it started anything has nothing to stop, nor to say so
            out.line("stopping the demo ...")
            try:
                demo.stop()
            except DemoError as exc:
                out.error(f"steering demo: {exc}")
            out.line("stopped.")


async def _run(demo: Demo, out: Output, stop: asyncio.Event) -> int:
    from steering.demo.status import events, render, route_changes
    from steering.store import Store

    demo.start()
    for warning in demo.warnings:
        out.line(warning, style="bold red")
    await wait_ready(demo, stopping=lambda: stop.is_set() or out.reader_gone())
    if stop.is_set() or out.reader_gone():
        return 0
    out.line(next_steps(demo))
    assert demo.config is not None
    store = Store(demo.config.etcd, base_dir=demo.config.base_dir)
    await store.open()
    hint = hint_line(demo)
    recent: list[str] = []

    async def follow() -> None:
        previous = None
        out.view(render(None, recent, hint))
        while True:
            try:
                async for table in store.watch_table():
                    new = events(previous, table)
                    recent.extend(new)
                    if out.live_view:
                        out.view(render(table, recent, hint))
                    else:  # a file or a pipe: one line per change, not a redrawn screen
                        for line in new + route_changes(previous, table):
                            out.line(line, stamp=True)
                    previous = table
            except Exception as exc:  # etcd killed by the user, say: keep following once it is back
                out.line(f"(the routing table watch stopped: {type(exc).__name__}; retrying)", stamp=True)
                await asyncio.sleep(1.0)

    async def watchdog() -> None:
        demo_cmd = _demo_command(demo.state_dir)
        while True:
            await asyncio.sleep(WATCH_SECONDS)
            if out.reader_gone():
                stop.set()
                return
            for name, how in demo.newly_dead():
                out.line(f"{name} stopped unexpectedly ({how}); the rest keep running. "
                         f"Bring it back with: {demo_cmd} restart {name}", style="red", stamp=True)
            for path, req in control.pending(demo.state_dir):
                await _serve(demo, out, path, req)

    tasks = [asyncio.create_task(follow()), asyncio.create_task(watchdog())]
    try:
        await stop.wait()
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await store.close()
    return 0


async def _serve(demo: Demo, out: Output, path: Path, req: dict[str, Any]) -> None:
    """Carry out one request from ``steering demo restart``, and answer it."""
    name = str(req.get("name", ""))
    if req.get("action") != "restart":
        control.answer(path, False, f"unknown request {req.get('action')!r}")
        return
    try:
        message = await asyncio.to_thread(demo.restart, name)
    except KeyError as exc:
        control.answer(path, False, str(exc.args[0]) if exc.args else "unknown process")
        return
    except Exception as exc:  # a start that failed: say so to the asker; the demo goes on
        control.answer(path, False, f"{name}: {type(exc).__name__}: {exc}")
        return
    control.answer(path, True, message)
    out.line(message, style="green", stamp=True)


# ---------------------------------------------------------------------- from a second terminal


def _info(state_dir: Path) -> dict[str, Any]:
    info = control.read_info(state_dir)
    if info is None:
        click.echo(f"steering demo: no running demo found in {state_dir} (start one with `steering demo`, "
                   "or pass the same --state-dir)", err=True)
        sys.exit(3)
    return info


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


@command.command()
@click.argument("name")
@click.pass_context
def restart(ctx: click.Context, name: str) -> None:
    """Start NAME again: controller-1, controller-2, dns, etcd, agents (all), or one agent-... (stopped first
    if it still runs). The running demo starts it, so it stops with the demo."""
    state_dir: Path = ctx.obj["state_dir"]
    info = _info(state_dir)
    known = sorted(info.get("pids") or {})
    if name not in known and name != "agents":
        click.echo(f"steering demo: unknown process {name!r}; known: {', '.join([*known, 'agents'])}", err=True)
        sys.exit(2)
    if not control.demo_running(info):
        click.echo(f"steering demo: the demo recorded in {state_dir} is not running (pid {info.get('pid')}); "
                   "start a new one with `steering demo`", err=True)
        sys.exit(3)
    answer = control.request(state_dir, "restart", name, RESTART_TIMEOUT)
    if answer is None:
        click.echo(f"steering demo: the demo did not answer within {RESTART_TIMEOUT:g}s", err=True)
        sys.exit(1)
    if not answer.get("ok"):
        click.echo(f"steering demo: {answer.get('message')}", err=True)
        sys.exit(1)
    click.echo(str(answer.get("message")))


@command.command(name="stop")
@click.pass_context
def stop_(ctx: click.Context) -> None:
    """Stop the running demo and every process it started (by the PIDs in its state dir, only those)."""
    for line in control.stop(ctx.obj["state_dir"]):
        click.echo(line)
