"""``steering lab up|status|down|partition|heal|latency|loss|kill|restart|clock|history|exec`` (docs/lab.md).

Every refusal is one line on stderr and exit 2, before anything is changed:
no root or CAP_NET_ADMIN, an unknown region or component, a region paired
with itself, ``up`` while a lab runs, a command for a lab that is not there.
``down`` with nothing to remove says so and exits 0.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from steering.config import ConfigError
from steering.lab import netops
from steering.lab.lab import Lab, LabError, default_state_dir, down, prepare, require_admin, running_lab, up, wait_ready
from steering.lab.plan import (
    CONTROLLER_PORT,
    DNS_PORT,
    ETCD_CLIENT_PORT,
    ETCD_PEER_PORT,
    LAB_NS,
    Link,
    PlanError,
    check_component,
    check_pair,
    pair,
    pairs_of,
    parse_clock,
    parse_delay,
    parse_loss,
)

F = TypeVar("F", bound=Callable[..., Any])


def fail(message: str) -> NoReturn:
    click.echo(f"steering lab: {message}", err=True)
    sys.exit(2)


def refusals(fn: F) -> F:
    """Bad input, a missing lab or privilege: one line, exit 2."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (LabError, PlanError, netops.NetError) as exc:
            fail(str(exc))
        except ConfigError as exc:
            fail(str(exc).splitlines()[0] if str(exc) else "invalid configuration")

    return wrapper  # type: ignore[return-value]


def state_dir_option(fn: F) -> F:
    return click.option("--state-dir", type=click.Path(file_okay=False), default=None,
                        help="where the lab keeps its record, configs, etcd data and logs "
                             "(default $STEERING_LAB_DIR or /tmp/steering-lab-UID)")(fn)


def _dir(state_dir: str | None) -> Path:
    return Path(state_dir).resolve() if state_dir else default_state_dir()


def _lab(state_dir: str | None) -> Lab:
    require_admin()
    path = _dir(state_dir)
    lab = Lab.load(path)
    if lab is None:
        raise LabError(f"no lab is running (no record in {path}); start one with `steering lab up`")
    if "regions" not in lab.info:
        raise LabError(f"the lab recorded in {path} never finished starting; `steering lab down` removes it")
    return lab


@click.group(name="lab")
def command() -> None:
    """The system across regions in Linux network namespaces, with faults to rehearse (root)."""
    from steering import logs

    logs.setup(level="warning", component="lab")


@command.command(name="up")
@click.option("--regions", "count", type=int, default=None,
              help="run the first N regions of the config (default: all of them)")
@click.option("--latency", default="40ms", show_default=True,
              help="one-way delay between any two regions (netem; without it, the lab's relay process)")
@click.option("--jitter", default=None, help="delay jitter (default: a tenth of --latency)")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="the deployment (default: deploy/examples/steering.yaml)")
@click.option("--timeout", type=click.FloatRange(1, 600), default=90.0, show_default=True,
              help="seconds to wait for every region to answer")
@state_dir_option
@refusals
def up_(count: int | None, latency: str, jitter: str | None, config_path: str | None, timeout: float,
        state_dir: str | None) -> None:
    """Build the namespaces and links, start etcd, a controller, DNS, targets and agents in every region."""
    t0 = time.monotonic()
    require_admin()
    path = _dir(state_dir)
    busy = running_lab(path)
    if busy:
        raise LabError(busy)
    delay = parse_delay(latency)
    jit = parse_delay(jitter, "jitter") if jitter is not None else delay // 10
    topo, cfg, qname = prepare(Path(config_path) if config_path else None, count, delay, jit, path)
    try:
        lab = up(path, topo, cfg, qname)
        took = wait_ready(lab, timeout)
    except BaseException as exc:
        for line in down(path):
            click.echo(f"  {line}", err=True)
        if isinstance(exc, (LabError, netops.NetError)):
            click.echo(f"steering lab: {exc}; the lab was removed", err=True)
            sys.exit(1)
        raise
    hb, el = lab.info["etcd_tuning"]["heartbeat_ms"], lab.info["etcd_tuning"]["election_ms"]
    for warning in lab.info.get("warnings") or []:
        click.echo(f"warning: {warning}", err=True)
    base = lab.topology.base
    click.echo(f"lab up in {time.monotonic() - t0:.1f}s (every region ready {took:.1f}s after the last process started); "
               f"{len(topo.regions)} regions, {base.delay_ms} ms one-way +/- {base.jitter_ms} ms between them "
               f"(by {lab.info.get('delay_by') or 'netem'}); "
               f"etcd heartbeat {hb} ms, election {el} ms")
    for r in topo.regions:
        click.echo(f"  {r.id:<14} netns {r.netns:<18} {r.addr}: etcd :{ETCD_CLIENT_PORT}  "
                   f"controller :{CONTROLLER_PORT}  dns :{DNS_PORT}  targets {', '.join(r.targets)}")
    first = topo.regions[0]
    sd = "" if path == default_state_dir() else f" --state-dir {path}"
    click.echo(f"try: steering lab exec{sd} {first.id} -- dig @{first.addr} {qname}   |   "
               f"steering lab status{sd}   |   steering lab partition {first.id} --all{sd}")


@command.command(name="status")
@click.option("--json", "as_json", is_flag=True, help="machine-readable")
@state_dir_option
@refusals
def status_(as_json: bool, state_dir: str | None) -> None:
    """Each region's components: address, pid, alive, healthy; DNS answers; the leader; link conditions."""
    st = _lab(state_dir).status()
    if as_json:
        click.echo(json.dumps(st, indent=2))
        return
    for r in st["regions"]:
        clock = f"  clock {r['clock_offset_seconds']:+d}s" if r["clock_offset_seconds"] else ""
        click.echo(f"{r['id']} ({r['netns']}, {r['addr']})  leader seen: {r['leader'] or '-'}  "
                   f"dns table v{r['table_version'] or '-'} answers: {', '.join(r['dns_answers']) or '-'}{clock}")
        for c in r["components"]:
            health = {True: "healthy", False: "UNHEALTHY", None: ""}[c["healthy"]]
            click.echo(f"  {c['name']:<22} {c['listen']:<18} pid {c['pid']:<8} "
                       f"{'alive' if c['alive'] else 'DEAD':<6} {health}")
    for r in st["regions"]:
        if r.get("etcd_peers_cut"):
            click.echo(f"etcd: {r['id']}'s member CUT from its peers")
    for link in st["links"]:
        state = "CUT" if link["cut"] else f"{link['delay_ms']}ms +/- {link['jitter_ms']}ms loss {link['loss_pct']:g}%"
        makers = [f"{what} by {link[key]}" for what, key in (("delay", "delay_by"), ("loss", "loss_by"))
                  if link.get(key) and not link["cut"]]
        by = f" ({', '.join(makers)})" if makers else ""
        click.echo(f"link {link['a']} <-> {link['b']}: {state}{by}")
    relay = st.get("relay")
    if relay:
        click.echo(f"relay (netns {relay['netns']}) pid {relay['pid']} {'alive' if relay['alive'] else 'DEAD'}: "
                   f"{relay['frames'] or 0} frames, {relay['delayed'] or 0} held, {relay['dropped'] or 0} dropped "
                   "(queue full)")
        for p in relay.get("pairs") or []:
            if p["delay_ms"] or p["jitter_ms"] or p["queued"]:
                click.echo(f"  {p['from']} -> {p['to']}: {p['delay_ms']:g}ms +/- {p['jitter_ms']:g}ms in force, "
                           f"{p['queued']} held now, {p['held']} held, {p['dropped']} dropped")
    for r in st["regions"]:
        for rule in r.get("loss_rules") or []:
            click.echo(f"nft loss in {r['id']}: {rule['loss_pct']:g}% of what it sends to {rule['to']} "
                       f"({rule['dropped_packets']} packets dropped)")


@command.command(name="down")
@state_dir_option
@refusals
def down_(state_dir: str | None) -> None:
    """Stop every process of the lab and remove its namespaces and links (also after a crash)."""
    require_admin()
    lines = down(_dir(state_dir))
    if not lines:
        click.echo("no lab is running: nothing to remove")
        return
    for line in lines:
        click.echo(line)


@command.command(name="partition")
@click.argument("a")
@click.argument("b", required=False)
@click.option("--all", "everyone", is_flag=True, help="cut A from every other region")
@click.option("--etcd", "etcd_only", is_flag=True,
              help="cut only A's etcd member from its peers (port 2380); its clients and the rest of A stay connected")
@state_dir_option
@refusals
def partition_(a: str, b: str | None, everyone: bool, etcd_only: bool, state_dir: str | None) -> None:
    """Cut the network between regions A and B (or A and all others): 100 % loss both ways."""
    lab = _lab(state_dir)
    topo = lab.topology
    if etcd_only:
        topo.region(a)
        if b is not None or everyone:
            raise LabError("partition --etcd: cuts A's member from all its peers; give no B and no --all")
        lab.set_etcd_cut(a, True)
        click.echo(f"cut: {a}'s etcd member from its peers (port {ETCD_PEER_PORT})")
        return
    if everyone == (b is not None):
        raise LabError("partition: give either another region B or --all")
    pairs = pairs_of(topo, a) if everyone else [check_pair(topo, a, b or "")]
    for x, y in pairs:
        link = topo.link(x, y)
        lab.set_link(x, y, Link(link.delay_ms, link.jitter_ms, link.loss_pct, cut=True))
    click.echo(f"cut: {', '.join(f'{x} <-> {y}' for x, y in pairs)}")


@command.command(name="heal")
@click.argument("a", required=False)
@click.argument("b", required=False)
@state_dir_option
@refusals
def heal_(a: str | None, b: str | None, state_dir: str | None) -> None:
    """Links back to how `up` made them: A-B, every link of A, or (no argument) every link."""
    lab = _lab(state_dir)
    topo = lab.topology
    if a is None:
        pairs = [pair(x.id, y.id) for i, x in enumerate(topo.regions) for y in topo.regions[i + 1:]]
    elif b is None:
        pairs = pairs_of(topo, a)
    else:
        pairs = [check_pair(topo, a, b)]
    changed = [(x, y) for x, y in pairs if topo.link(x, y) != topo.base]
    for x, y in changed:
        lab.set_link(x, y, topo.base)
    # an etcd-only cut of a region named (or of any, with no argument) is healed too
    members = [r for r in lab.info.get("etcd_cut") or [] if a is None or (b is None and r == a)]
    for r in members:
        lab.set_etcd_cut(r, False)
    healed = [f"{x} <-> {y}" for x, y in changed] + [f"{r}'s etcd member" for r in members]
    click.echo(f"healed: {', '.join(healed)}" if healed else "nothing to heal: those links are as `up` made them")


@command.command(name="latency")
@click.argument("a")
@click.argument("b")
@click.argument("delay")
@state_dir_option
@refusals
def latency_(a: str, b: str, delay: str, state_dir: str | None) -> None:
    """One-way delay between A and B (jitter a tenth of it); `heal A B` restores the lab's own."""
    lab = _lab(state_dir)
    topo = lab.topology
    check_pair(topo, a, b)
    ms = parse_delay(delay)
    if not topo.netem and not lab.by_relay:
        raise LabError("latency: this kernel has no netem (sch_netem) and this lab has no relay (started by an "
                       "older steering); `steering lab down` and `up` again")
    link = topo.link(a, b)
    lab.set_link(a, b, Link(ms, ms // 10, link.loss_pct, link.cut))
    click.echo(f"{a} <-> {b}: {ms} ms one-way +/- {ms // 10} ms" + ("" if topo.netem else " (by the relay: no netem here)"))


@command.command(name="loss")
@click.argument("a")
@click.argument("b")
@click.argument("percent")
@state_dir_option
@refusals
def loss_(a: str, b: str, percent: str, state_dir: str | None) -> None:
    """Random packet loss between A and B, each direction."""
    lab = _lab(state_dir)
    topo = lab.topology
    check_pair(topo, a, b)
    pct = parse_loss(percent)
    if not topo.netem and not netops.has_nft_loss():
        raise LabError(f"loss: this kernel has no netem (sch_netem) and nft cannot drop at random here: "
                       f"{netops.NFT_INSTALL}")
    link = topo.link(a, b)
    lab.set_link(a, b, Link(link.delay_ms, link.jitter_ms, pct, link.cut))
    click.echo(f"{a} <-> {b}: {pct:g}% loss each way" + ("" if topo.netem else " (nftables: no netem here)"))


@command.command(name="kill")
@click.argument("region")
@click.argument("component")
@state_dir_option
@refusals
def kill_(region: str, component: str, state_dir: str | None) -> None:
    """SIGKILL a region's controller, dns, etcd or agent (every agent of the region)."""
    lab = _lab(state_dir)
    check_component(component)
    lab.topology.region(region)
    for line in lab.kill(region, component):
        click.echo(line)


@command.command(name="restart")
@click.argument("region")
@click.argument("component")
@state_dir_option
@refusals
def restart_(region: str, component: str, state_dir: str | None) -> None:
    """Start a region's component again (stopped first if it runs), with its command line and data."""
    lab = _lab(state_dir)
    check_component(component)
    lab.topology.region(region)
    for line in lab.restart(region, component):
        click.echo(line)


@command.command(name="clock", context_settings={"ignore_unknown_options": True})
@click.argument("region")
@click.argument("offset")
@state_dir_option
@refusals
def clock_(region: str, offset: str, state_dir: str | None) -> None:
    """Restart REGION's controller with its wall clock OFFSET off (+30s, -30s; 0 for the real clock)."""
    lab = _lab(state_dir)
    lab.topology.region(region)
    seconds = parse_clock(offset)
    for line in lab.clock(region, seconds):
        click.echo(line)
    click.echo(f"{region}: controller clock {seconds:+d}s")


@command.command(name="history")
@click.option("--seed", type=click.IntRange(0, 2**31 - 1), default=None,
              help="the schedule's seed (default: a random one, printed): the same seed, the same schedule")
@click.option("--duration", default="60s", show_default=True, help="how long faults and actions run")
@click.option("--detection-bound", default="30s", show_default=True,
              help="how long a silent region may stay in answers outside a cut-off region")
@click.option("--convergence-bound", default="30s", show_default=True,
              help="how long after healing every DNS server may take to serve one version")
@click.option("--json", "as_json", is_flag=True, help="figures and violations as JSON")
@state_dir_option
@refusals
def history_(seed: int | None, duration: str, detection_bound: str, convergence_bound: str, as_json: bool,
             state_dir: str | None) -> None:
    """Faults, operator actions and DNS queries on a seeded schedule, recorded and checked (docs/lab.md)."""
    from steering.lab.schedule import parse_span

    lab = _lab(state_dir)
    try:
        spans = [parse_span(text, what) for text, what in ((duration, "--duration"),
                                                           (detection_bound, "--detection-bound"),
                                                           (convergence_bound, "--convergence-bound"))]
    except ValueError as exc:
        raise LabError(str(exc)) from None
    if seed is None:
        seed = random.SystemRandom().randrange(2**31)
    click.echo(f"history run: seed {seed}, {spans[0]:g} s; recording to {lab.state_dir}/history-{seed}.jsonl",
               err=True)
    sys.stdout.flush()
    run = subprocess.Popen(["ip", "netns", "exec", LAB_NS, sys.executable, "-m", "steering.lab.historyrun",
                            "--state-dir", str(lab.state_dir), "--seed", str(seed), "--duration", f"{spans[0]:g}",
                            "--detection-bound", f"{spans[1]:g}", "--convergence-bound", f"{spans[2]:g}",
                            *(["--json"] if as_json else [])])
    for _ in range(3):  # Ctrl-C reaches the run too: let it undo its faults (a third one stops waiting)
        try:
            sys.exit(run.wait())
        except KeyboardInterrupt:
            click.echo("interrupted: the run heals the links and restarts what it killed first", err=True)
    sys.exit(130)


@command.command(name="exec", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.argument("region")
@click.argument("cmd", nargs=-1, required=True, type=click.UNPROCESSED)
@state_dir_option
@refusals
def exec_(region: str, cmd: tuple[str, ...], state_dir: str | None) -> None:
    """Run CMD inside REGION's namespace (`steering lab exec us-east-1 -- dig @10.77.1.1 api.example.test`)."""
    lab = _lab(state_dir)
    ns = LAB_NS if region == "lab" else lab.topology.region(region).netns
    argv = list(cmd[1:] if cmd and cmd[0] == "--" else cmd)
    if not argv:
        raise LabError("exec: no command given after --")
    sys.stdout.flush()
    os.execvp("ip", ["ip", "netns", "exec", ns, *argv])
