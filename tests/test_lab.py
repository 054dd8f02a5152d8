"""``steering lab``: the planner's pure parts, its refusals, and a real three-region lab on network namespaces.

The lab tests (marked ``lab``; root only, CI runs as root) bring up one lab for the module from a small
config (three regions, one service, a geo per region whose prefix is that region's lab range, so a client
in a region is steered to it), then: DNS answers from inside every region; refusals that change nothing; a
region partitioned from the others and healed; the leader's controller killed with SIGKILL and a new
leader; the fault-matrix scenarios (docs/failure-modes.md: the leader's region cut off, one etcd member
lost while an operator evacuates, ..., 20 % loss between all regions, a 300 ms latency spike between all
regions); ``down`` leaving no namespace or process, also after a crash (found by prefix).

Every DNS query is made from inside a region's namespace (a thread moved there, with dnspython), as a client
of that region: the lab's addresses exist only there.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import dns.edns
import dns.message
import dns.query
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from steering.config import load_config
from steering.lab import netops
from steering.lab.history import check as check_history
from steering.lab.lab import Lab
from steering.lab.plan import (
    PREFIX,
    Link,
    PlanError,
    Topology,
    check_pair,
    etcd_timing,
    lab_config,
    pairs_of,
    parse_clock,
    parse_delay,
    parse_loss,
    plan_regions,
    region_config,
)
from tests.support.paths import EXAMPLE_CONFIG, STEERING
from tests.support.wait import eventually_sync

ROOT = os.geteuid() == 0
T = TypeVar("T")
REGIONS = ("us-east-1", "us-west-2", "eu-west-1")
ADDR = {r: f"10.77.{i + 1}.1" for i, r in enumerate(REGIONS)}  # where each region's DNS listens
ANSWER = {"us-east-1": "192.0.2.10", "us-west-2": "192.0.2.20", "eu-west-1": "192.0.2.30"}
QNAME = "api.lab.test."
LAB_CONFIG: dict[str, Any] = {
    # A short silence bound: a region cut off stops reporting and leaves the others' answers within seconds.
    "policy": {"min_serving_regions": 1, "step_seconds": 1, "silence_seconds": 3, "max_shift": 1.0},
    "regions": [{"id": r, "capacity": 10000} for r in REGIONS],
    "geos": [
        {"id": "east", "prefixes": ["10.77.1.0/24"], "demand": 0.4, "prefer": ["us-east-1", "us-west-2", "eu-west-1"]},
        {"id": "west", "prefixes": ["10.77.2.0/24"], "demand": 0.3, "prefer": ["us-west-2", "us-east-1", "eu-west-1"]},
        {"id": "europe", "prefixes": ["10.77.3.0/24"], "demand": 0.3,
         "prefer": ["eu-west-1", "us-east-1", "us-west-2"]},
        {"id": "world", "default": True, "demand": 0.0, "prefer": ["us-east-1", "eu-west-1", "us-west-2"]},
    ],
    "services": [{"name": QNAME, "ttl": 5, "targets": "regions",
                  "answers": {r: {"A": [a]} for r, a in ANSWER.items()}}],
    "zones": [{"origin": "lab.test."}],
    "etcd": {"endpoints": ["127.0.0.1:2379"], "prefix": "/steering/v1"},
}
SUBNET = {r: f"10.77.{i + 1}.0/24" for i, r in enumerate(REGIONS)}

# ---------------------------------------------------------------------- the planner (pure)


def test_regions_are_the_first_n_of_the_config_with_their_sites() -> None:
    regions = plan_regions(["a-1", "b-2", "c-3"], {"s1": "a-1", "s2": "c-3"}, 2)
    assert [(r.id, r.addr, r.netns, r.targets) for r in regions] == [
        ("a-1", "10.77.1.1", "stl-a-1", ("a-1", "s1")), ("b-2", "10.77.2.1", "stl-b-2", ("b-2",))]
    assert len(plan_regions(["a", "b", "c"], {}, None)) == 3
    for bad in (0, 4, -1):
        with pytest.raises(PlanError, match="--regions"):
            plan_regions(["a", "b", "c"], {}, bad)
    with pytest.raises(PlanError, match="namespace"):
        plan_regions(["Has Space"], {}, None)


def test_parsers_take_durations_percentages_and_offsets_and_refuse_the_rest() -> None:
    assert [parse_delay(x) for x in ("40ms", "0.2s", "200", "0")] == [40, 200, 200, 0]
    assert parse_loss("20%") == 20.0 and parse_loss("0") == 0.0
    assert [parse_clock(x) for x in ("+30s", "-30s", "2m", "0")] == [30, -30, 120, 0]
    for fn, bad in ((parse_delay, "fast"), (parse_delay, "11s"), (parse_delay, "-5ms"), (parse_loss, "120%"),
                    (parse_loss, "x"), (parse_clock, "+30 days"), (parse_clock, "+9999999h")):
        with pytest.raises(PlanError):
            fn(bad)


@given(st.integers(0, 10_000))
def test_a_delay_in_ms_reads_back_as_itself(ms: int) -> None:
    assert parse_delay(f"{ms}ms") == ms == parse_delay(f"{ms / 1000}s")


@given(st.integers(0, 10_000), st.integers(0, 1_000))
def test_etcd_heartbeat_covers_the_round_trip_and_election_is_ten_heartbeats(delay: int, jitter: int) -> None:
    heartbeat, election = etcd_timing(delay, jitter)
    assert heartbeat >= 2 * (delay + jitter) and heartbeat >= 200
    assert election == min(50_000, 10 * heartbeat)


def test_a_cut_is_total_loss_and_heal_is_the_base_link_exactly() -> None:
    base = Link(40, 4)
    assert base.netem() == ["delay", "40ms", "4ms"] and base.leaf(True) == ["netem", "delay", "40ms", "4ms"]
    cut = Link(40, 4, 20.0, cut=True)
    assert cut.netem()[-2:] == ["loss", "100%"] and cut.leaf(False) == ["pfifo", "limit", "0"]
    assert Link(40, 4, 20.0).netem()[-2:] == ["loss", "20%"] and base.leaf(False) == ["pfifo", "limit", "1000"]
    topo = Topology(plan_regions(list(REGIONS), {}, None), base, {("us-east-1", "us-west-2"): cut})
    assert topo.link("us-west-2", "us-east-1") == cut and topo.link("eu-west-1", "us-east-1") == base
    with pytest.raises(PlanError, match="itself"):
        check_pair(topo, "us-east-1", "us-east-1")
    with pytest.raises(PlanError, match="unknown region 'mars-1'"):
        check_pair(topo, "us-east-1", "mars-1")
    assert pairs_of(topo, "us-east-1") == [("us-east-1", "us-west-2"), ("eu-west-1", "us-east-1")]


def test_loss_without_netem_is_one_nft_table_per_region_replaced_whole() -> None:
    _, west, eu = plan_regions(list(REGIONS), {}, None)
    script = netops._loss_table([(west, 20.0), (eu, 0.0)])
    lines = script.splitlines()
    # Made empty then deleted first, so replacing never fails on a table that is not there; 0 % is no rule.
    assert lines[:2] == [f"table inet {netops.NFT_TABLE}", f"delete table inet {netops.NFT_TABLE}"]
    rules = [x.strip() for x in lines if "numgen" in x]
    assert rules == [f'ip daddr {west.addr} numgen random mod 10000 < 2000 counter drop comment "loss 20% to us-west-2"']
    assert "hook output" in script and eu.addr not in script
    assert "numgen" not in netops._loss_table([(west, 0.0), (eu, 0.0)])
    assert "< 5 counter" in netops._loss_table([(west, 0.05)])  # steps of 0.01 %


def test_the_lab_config_of_two_example_regions_is_a_valid_deployment(tmp_path: Path) -> None:
    data = yaml.safe_load(EXAMPLE_CONFIG.read_text())
    for z in data["zones"]:
        z["file"] = str(EXAMPLE_CONFIG.parent / z["file"])
    regions = plan_regions([r["id"] for r in data["regions"]], {s["id"]: s["region"] for s in data["sites"]}, 2)
    lab = lab_config(data, regions)
    assert [r["id"] for r in lab["regions"]] == ["us-east-1", "us-west-2"]
    assert [s["id"] for s in lab["sites"]] == ["oc-nyc-1"]  # oc-lon-1 lives in eu-west-1, not in this lab
    assert all("eu-west-1" not in g.get("prefer", []) for g in lab["geos"])
    one = region_config(lab, regions[1], regions, str(tmp_path))
    assert one["etcd"]["endpoints"] == ["10.77.2.1:2379", "10.77.1.1:2379"]
    assert one["dns"]["listen"] == ["10.77.2.1:53"] and one["controller"]["listen"] == "10.77.2.1:50051"
    assert one["controller"]["ingest_listen"] == "10.77.2.1:50061"
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(one))
    cfg = load_config(path)
    assert cfg.policy.min_serving_regions == 2 and not cfg.observers and cfg.route53 is None


# ---------------------------------------------------------------------- refusals without a lab


def lab_cmd(sub: str, *args: str, state: Path | None = None, user: str | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
    argv = [STEERING, "lab", sub, *(["--state-dir", str(state)] if state else []), *args]
    if user:
        argv = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", "--inh-caps=-all", *argv]
    res = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    assert "Traceback" not in res.stderr, res.stderr
    return res


def refused(res: subprocess.CompletedProcess[str], words: str) -> None:
    assert res.returncode == 2, (res.returncode, res.stdout, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0], res.stderr


@pytest.mark.skipif(not ROOT, reason="setpriv to an unprivileged user needs root")
def test_without_cap_net_admin_every_command_says_so(tmp_path: Path) -> None:
    for sub, args in (("up", ()), ("partition", ("us-east-1", "--all"))):
        refused(lab_cmd(sub, *args, state=tmp_path, user="65534"), "needs root or CAP_NET_ADMIN")


@pytest.mark.skipif(not ROOT, reason="the lab's commands need root")
def test_commands_for_a_lab_that_is_not_there_say_so(tmp_path: Path) -> None:
    if netops.lab_namespaces():
        pytest.fail("a lab is running on this machine: `steering lab down` first (a skip would hide these tests)")
    refused(lab_cmd("partition", "us-east-1", "--all", state=tmp_path), "no lab is running")
    refused(lab_cmd("kill", "us-east-1", "dns", state=tmp_path), "no lab is running")
    res = lab_cmd("down", state=tmp_path)
    assert res.returncode == 0 and "no lab is running" in res.stdout, res
    refused(lab_cmd("up", "--regions", "9", state=tmp_path), "--regions: 9 is not between 1 and 3")
    refused(lab_cmd("up", "--latency", "fast", state=tmp_path), "latency: 'fast'")
    assert not netops.lab_namespaces()  # refused before anything was made


# ---------------------------------------------------------------------- a real lab


def in_region(region: str, code: str, *args: str) -> Any:
    """Run python ``code`` inside ``region``'s namespace; what it printed, parsed as JSON."""
    res = subprocess.run(["ip", "netns", "exec", f"stl-{region}", sys.executable, "-c", code, *args],
                         capture_output=True, text=True, timeout=30, check=False)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def in_netns(region: str, fn: Callable[[], T]) -> T:
    """``fn()`` on a thread moved into ``region``'s network namespace (``netops.run_in``). Where a lab test polls
    the DNS of every region, one ``ip netns exec python`` per query was most of the module's time."""
    return netops.run_in(f"{PREFIX}{region}", fn)


def answers(client: str, server: str | None = None, subnet: str = "") -> list[str] | None:
    """What ``server``'s DNS (default: the client's own region's) answers a client in region ``client``
    (or, with ``subnet``, a client of that subnet by ECS); None when it does not answer within 1 s."""
    def ask() -> list[str] | None:
        opts = [dns.edns.ECSOption.from_text(subnet)] if subnet else []
        q = dns.message.make_query(QNAME, "A", use_edns=0 if opts else None, options=opts)
        try:
            r = dns.query.udp(q, ADDR[server or client], port=53, timeout=1.0)
        except Exception:
            return None
        return sorted(rd.to_text() for rr in r.answer for rd in rr)

    return in_netns(client, ask)


def everywhere(subnet_of: str) -> dict[str, list[str] | None]:
    """Each region's own DNS, asked for a client of ``subnet_of``'s region."""
    return {r: answers(r, subnet=SUBNET[subnet_of]) for r in REGIONS}


def status(state: Path) -> dict[str, Any]:
    """What ``steering lab status --json`` prints, from this process (``Lab.status``): the tests poll it, and
    the command's start (its imports, 1 to 2 s) was most of each poll. ``status_cli`` runs the command."""
    lab = Lab.load(state)
    assert lab is not None, f"no lab recorded in {state}"
    return lab.status()


def status_cli(state: Path) -> dict[str, Any]:
    res = lab_cmd("status", "--json", state=state)
    assert res.returncode == 0, res.stderr
    st: dict[str, Any] = json.loads(res.stdout)
    return st


def by_region(st: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["id"]: r for r in st["regions"]}


def leaders(state: Path) -> dict[str, str | None]:
    return {rid: r["leader"] for rid, r in by_region(status(state)).items()}


def one_leader_everywhere(state: Path) -> str | bool:
    """The leader when every region sees the same one and every DNS server applied the same table."""
    regions = by_region(status(state))
    seen = {r["leader"] for r in regions.values()}
    versions = {r["table_version"] for r in regions.values()}
    leader = seen.pop() if len(seen) == 1 else None
    return leader if leader and len(versions) == 1 and None not in versions else False


def steerctl_in(region: str, *args: str) -> subprocess.CompletedProcess[str]:
    """steerctl run inside ``region`` against that region's controller."""
    steerctl = str(Path(sys.executable).parent / "steerctl")
    return subprocess.run(["ip", "netns", "exec", f"stl-{region}", steerctl, "--server", f"{ADDR[region]}:50051",
                           *args], capture_output=True, text=True, timeout=90, check=False)


def ctl_status(region: str) -> dict[str, Any]:
    """``steerctl status --json`` as answered by ``region``'s controller."""
    res = steerctl_in(region, "status", "--json")
    assert res.returncode == 0, res.stderr
    out: dict[str, Any] = json.loads(res.stdout)
    return out


def health_of(st: dict[str, Any], region: str) -> str:
    return str(next(r["health"] for r in st["regions"] if r["region"] == region))


def region_of(leader: str) -> str:
    return leader.removeprefix("ctl-")


def timed(what: str, fn: Any, timeout: float) -> tuple[Any, float]:
    t0 = time.monotonic()
    value = eventually_sync(fn, timeout=timeout, what=what, interval=0.3)
    took = time.monotonic() - t0
    print(f"{what}: {took:.1f}s")  # the figures of docs/lab.md (pytest -s shows them)
    return value, took


TESTS_LAB = Path("/run/steering-lab-tests")  # the state dir of the lab these tests run now


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    if not ROOT:
        pytest.skip("steering lab needs root")
    left = TESTS_LAB.read_text().strip() if TESTS_LAB.exists() else ""
    if netops.lab_namespaces() and left and Path(left, "lab.json").exists():
        # an earlier run of these tests that was cut off (a timeout in teardown): its lab, not a user's
        print(f"taking down the lab an earlier test run left ({left})")
        lab_cmd("down", state=Path(left))
    if netops.lab_namespaces():
        pytest.fail(f"a lab is running on this machine ({', '.join(netops.lab_namespaces())}): `steering lab down` "
                    "first (a skip would hide these tests)")
    base = tmp_path_factory.mktemp("lab")
    config = base / "lab.yaml"
    config.write_text(yaml.safe_dump(LAB_CONFIG))
    state = base / "state"
    TESTS_LAB.write_text(str(state))  # so a later run can tell a lab it left from a user's
    t0 = time.monotonic()
    res = lab_cmd("up", "--config", str(config), "--latency", "20ms", state=state)
    print(f"lab up: {time.monotonic() - t0:.1f}s; {res.stdout.splitlines()[0] if res.stdout else res.stderr}")
    try:
        assert res.returncode == 0, res.stderr
        for r, addr in ADDR.items():
            assert f"netns stl-{r}" in res.stdout and f"{addr}: etcd :2379  controller :50051  dns :53" in res.stdout
        yield state
    finally:
        lab_cmd("down", state=state)
        TESTS_LAB.unlink(missing_ok=True)


@pytest.fixture
def restored(lab: Path) -> Iterator[Path]:
    """The lab, put back after the test whatever it left: links healed, dead components restarted, so one
    failing scenario does not fail the next."""
    yield lab
    if not (lab / "lab.json").exists():
        return
    lab_cmd("heal", state=lab)
    for region in by_region(status(lab)).values():
        dead = {c["name"].split("-")[0] for c in region["components"] if not c["alive"]}
        for comp in sorted(dead & {"etcd", "controller", "dns", "agent"}):
            lab_cmd("restart", region["id"], comp, state=lab)
    # and no evacuation left by a test that failed half-way (the next would find its region gone)
    try:
        left = [e["region"] for e in ctl_status(REGIONS[0])["evacuations"]]
        for gone in left:
            eventually_sync(lambda g=gone: (res := steerctl_in(REGIONS[0], "restore", g, "--now", "--yes")).returncode
                            == 0 or "no evacuation" in res.stderr, timeout=40, what=f"{gone} not evacuated")
    except Exception as exc:  # best effort: the next test says what it finds
        print(f"restored: could not lift evacuations: {exc}")


@pytest.mark.lab
@pytest.mark.skipif(not ROOT, reason="steering lab needs root")
def test_dns_answers_from_inside_every_region(lab: Path) -> None:
    for client in REGIONS:
        # Its own DNS steers it to its own region (its geo's prefix is the region's lab range) ...
        assert answers(client) == [ANSWER[client]]
        # ... and so does every other region's DNS: the answer is the client's, wherever it asks.
        for server in REGIONS:
            assert answers(client, server) == [ANSWER[client]]
    st = by_region(status_cli(lab))  # the command as a user runs it; the other tests poll Lab.status itself
    for r in REGIONS:
        comps = {c["name"]: c for c in st[r]["components"]}
        assert set(comps) == {"etcd", "controller", "dns", "sim", f"agent-{r}"}
        assert all(c["alive"] for c in comps.values())
        assert comps["etcd"]["healthy"] and comps["dns"]["healthy"] and comps["controller"]["healthy"]
        assert comps["dns"]["listen"] == f"{ADDR[r]}:53"
        assert st[r]["agents_report_home"] is True and st[r]["leader"]
    assert by_region(status(lab)).keys() == st.keys()


@pytest.mark.lab
@pytest.mark.skipif(not ROOT, reason="steering lab needs root")
def test_bad_input_is_refused_in_one_line_and_changes_nothing(lab: Path) -> None:
    record = (lab / "lab.json").read_text()
    spaces = netops.lab_namespaces()
    refused(lab_cmd("partition", "us-east-1", "us-east-1", state=lab), "itself")
    refused(lab_cmd("partition", "us-east-1", "mars-1", state=lab), "unknown region 'mars-1'")
    refused(lab_cmd("kill", "mars-1", "dns", state=lab), "unknown region 'mars-1'")
    refused(lab_cmd("kill", "us-east-1", "database", state=lab), "unknown component 'database'")
    refused(lab_cmd("restart", "us-east-1", "database", state=lab), "unknown component 'database'")
    refused(lab_cmd("latency", "us-east-1", "us-west-2", "fast", state=lab), "latency: 'fast'")
    refused(lab_cmd("loss", "us-east-1", "us-west-2", "150%", state=lab), "loss: '150%'")
    refused(lab_cmd("clock", "us-east-1", "soon", state=lab), "clock: 'soon'")
    refused(lab_cmd("heal", "us-east-1", "us-east-1", state=lab), "itself")
    refused(lab_cmd("up", state=lab), "a lab is running")
    refused(lab_cmd("exec", "mars-1", "--", "true", state=lab), "unknown region 'mars-1'")
    refused(lab_cmd("history", "--duration", "soon", state=lab), "--duration: 'soon'")
    refused(lab_cmd("partition", "us-east-1", "--all", "--etcd", state=lab), "partition --etcd")
    refused(lab_cmd("partition", "mars-1", "--etcd", state=lab), "unknown region 'mars-1'")
    refused(lab_cmd("history", "--detection-bound", "0s", state=lab), "--detection-bound: '0s'")
    assert (lab / "lab.json").read_text() == record and netops.lab_namespaces() == spaces
    res = lab_cmd("exec", "us-west-2", "--", "ip", "-4", "-o", "addr", "show", "dev", "eth0", state=lab)
    assert res.returncode == 0 and "10.77.2.1/16" in res.stdout


@pytest.mark.lab
@pytest.mark.skipif(not ROOT, reason="steering lab needs root")
def test_a_partitioned_region_keeps_answering_and_the_others_leave_it_until_healed(restored: Path) -> None:
    lab = restored
    leader = eventually_sync(lambda: one_leader_everywhere(lab), timeout=60, what="one leader")
    cut = next(r for r in REGIONS if r != region_of(leader))
    res = lab_cmd("partition", cut, "--all", state=lab)
    assert res.returncode == 0 and "cut:" in res.stdout
    # Cut off: the region sees no leader (its etcd member has no quorum); the others keep theirs.
    timed("partitioned region loses quorum",
          lambda: (ls := leaders(lab))[cut] is None and all(ls[r] == leader for r in REGIONS if r != cut), 30)
    # The others stop sending its clients to it (it is silent past the bound); it still answers its own
    # clients from the last table it had (a stale table beats no answer).
    timed("the others steer around the cut region",
          lambda: all((a := answers(r, subnet=SUBNET[cut])) and a != [ANSWER[cut]]
                      for r in REGIONS if r != cut), 40)
    assert answers(cut) == [ANSWER[cut]]
    # steerctl status: a majority replica names the leader and sees the cut region not healthy; the cut
    # region's own replica says its view is stale (its etcd member has no quorum).
    majority = ctl_status(region_of(leader))
    assert not majority["stale"] and majority["leader"] == leader and health_of(majority, cut) != "healthy"
    assert eventually_sync(lambda: ctl_status(cut)["stale"], timeout=30, what="the cut controller says stale")
    res = lab_cmd("heal", state=lab)
    assert res.returncode == 0 and "healed:" in res.stdout
    timed("after heal: one leader and one table everywhere", lambda: one_leader_everywhere(lab), 40)
    timed("after heal: the region's clients back to it everywhere",
          lambda: everywhere(cut) == {r: [ANSWER[cut]] for r in REGIONS}, 40)
    assert all(not link["cut"] for link in status(lab)["links"])


@pytest.mark.lab
@pytest.mark.skipif(not ROOT, reason="steering lab needs root")
def test_kill_9_of_the_leaders_controller_elects_another(restored: Path) -> None:
    lab = restored
    old = eventually_sync(lambda: one_leader_everywhere(lab), timeout=60, what="one leader")
    res = lab_cmd("kill", region_of(old), "controller", state=lab)
    assert res.returncode == 0 and "killed" in res.stdout
    comps = {c["name"]: c for c in by_region(status(lab))[region_of(old)]["components"]}
    assert not comps["controller"]["alive"]
    new, _ = timed("a new leader after kill -9",
                   lambda: (lead := one_leader_everywhere(lab)) and lead != old and lead, 40)
    for r in REGIONS:  # DNS never stopped answering
        assert answers(r) == [ANSWER[r]]
    st = ctl_status(region_of(new))  # steerctl status: the new leader, a fresh view, every region healthy
    assert st["leader"] == new and not st["stale"] and all(health_of(st, r) == "healthy" for r in REGIONS)
    res = lab_cmd("restart", region_of(old), "controller", state=lab)
    assert res.returncode == 0 and "restarted" in res.stdout
    eventually_sync(lambda: {c["name"]: c for c in by_region(status(lab))[region_of(old)]["components"]}
                    ["controller"]["healthy"], timeout=30, what="the controller back")
    assert one_leader_everywhere(lab) == new  # the restarted replica does not take over


# ---------------------------------------------------------------------- fault matrix (issue 15 §2), first two


@pytest.mark.lab
@pytest.mark.skipif(not ROOT, reason="steering lab needs root")
def test_scenario_the_leaders_region_cut_off(restored: Path) -> None:
    lab = restored
    old = eventually_sync(lambda: one_leader_everywhere(lab), timeout=60, what="one leader")
    cut = region_of(old)
    others = [r for r in REGIONS if r != cut]
    assert lab_cmd("partition", cut, "--all", state=lab).returncode == 0
    # During: the majority elects a leader of its own; the cut region sees none.
    timed("majority elects a new leader",
          lambda: (ls := leaders(lab))[cut] is None and len({ls[r] for r in others}) == 1
          and ls[others[0]] not in (None, old), 40)
    # During: every region's DNS answers; the majority's steer the cut region's clients elsewhere, the cut
    # region's own DNS keeps its last table (its own clients still reach it). Bounded even when the new
    # leader's watches sat on the cut member (they once heard nothing for minutes: docs/lab.md, Findings): a
    # quiet watch is re-created within QUIET_SECONDS + etcd.timeout_seconds, and gRPC drops the silent
    # connection within keepalive_seconds + KEEPALIVE_TIMEOUT_SECONDS (15 s); then the debounce and a plan.
    timed("majority steers around the old leader's region",
          lambda: all((a := answers(r, subnet=SUBNET[cut])) and a != [ANSWER[cut]] for r in others), 25)
    for r in others:
        assert answers(r) == [ANSWER[r]]
    assert answers(cut) == [ANSWER[cut]]
    # steerctl: the majority's controllers name the new leader and see the cut region unhealthy; the cut
    # region's controller says its view is stale (etcd unreachable from there).
    majority = ctl_status(others[0])
    assert not majority["stale"] and majority["leader"] not in ("", old) and health_of(majority, cut) != "healthy"
    assert eventually_sync(lambda: ctl_status(cut)["stale"], timeout=30, what="the cut controller says stale")
    # After: one leader (not the deposed one: it lost its lease) and one table in every region.
    assert lab_cmd("heal", state=lab).returncode == 0
    new, _ = timed("after heal: one leader, one table", lambda: one_leader_everywhere(lab), 40)
    assert new != old
    timed("after heal: every client steered home everywhere",
          lambda: all(everywhere(r) == {x: [ANSWER[r]] for x in REGIONS} for r in REGIONS), 40)


@pytest.mark.lab
@pytest.mark.skipif(not ROOT, reason="steering lab needs root")
def test_scenario_one_etcd_member_lost_while_an_operator_evacuates(restored: Path) -> None:
    lab = restored
    leader = eventually_sync(lambda: one_leader_everywhere(lab), timeout=60, what="one leader")
    lost = next(r for r in REGIONS if r != region_of(leader))
    gone = next(r for r in REGIONS if r not in (lost, region_of(leader)))  # the region evacuated
    assert lab_cmd("kill", lost, "etcd", state=lab).returncode == 0
    # During: two of three members keep quorum; the leader stays; the region without its member still
    # serves (its DNS and controller use the other members). Its own member is what status asks there.
    st = by_region(status(lab))
    assert not next(c for c in st[lost]["components"] if c["name"] == "etcd")["alive"]
    # (If the member lost was etcd's own leader, the other two elect one first: reads wait for that.)
    timed("two members keep quorum and the leader",
          lambda: (ls := leaders(lab))[lost] is None and all(ls[r] == leader for r in REGIONS if r != lost), 30)
    steerctl = str(Path(sys.executable).parent / "steerctl")
    res = subprocess.run(["ip", "netns", "exec", f"stl-{lost}", steerctl, "--server", f"{ADDR[lost]}:50051",
                          "evacuate", gone, "--reason", "lab test", "--now", "--yes"],
                         capture_output=True, text=True, timeout=60, check=False)
    assert res.returncode == 0, res.stderr
    timed("evacuation in every region's DNS",
          lambda: all((a := answers(r, subnet=SUBNET[gone])) and ANSWER[gone] not in a for r in REGIONS), 40)
    # The same table everywhere (each DNS answering without the region may still be a table apart: a later
    # one may be on its way to some of them).
    timed("the same table everywhere", lambda: len({r["table_version"] for r in status(lab)["regions"]}) == 1, 20)
    ctl = ctl_status(lost)  # steerctl status there: not stale (the other members answer), the evacuation
    assert not ctl["stale"] and ctl["leader"] == leader and [e["region"] for e in ctl["evacuations"]] == [gone]
    res = subprocess.run(["ip", "netns", "exec", f"stl-{lost}", steerctl, "--server", f"{ADDR[lost]}:50051",
                          "restore", gone, "--now", "--yes"], capture_output=True, text=True, timeout=60, check=False)
    assert res.returncode == 0, res.stderr
    # After: the member back (it rejoins with its data), every region steered home, one table.
    assert lab_cmd("restart", lost, "etcd", state=lab).returncode == 0
    timed("after restart: member healthy, one table",
          lambda: all(next(c for c in r["components"] if c["name"] == "etcd")["healthy"]
                      for r in status(lab)["regions"]) and one_leader_everywhere(lab), 40)
    timed("after restore: every client steered home everywhere",
          lambda: all(everywhere(r) == {x: [ANSWER[r]] for x in REGIONS} for r in REGIONS), 40)


def home_everywhere() -> bool:
    """Every region's DNS steers every region's clients to their own region."""
    return all(everywhere(r) == {x: [ANSWER[r]] for x in REGIONS} for r in REGIONS)


@pytest.mark.lab
@pytest.mark.skipif(not ROOT, reason="steering lab needs root")
def test_scenario_kill_9_of_a_dns_server(restored: Path) -> None:
    lab = restored
    victim = REGIONS[1]
    assert lab_cmd("kill", victim, "dns", state=lab).returncode == 0
    # During: that server does not answer; every other region's still answers everyone, the victim's
    # clients included (a DNS server is not a health signal: its region keeps its traffic).
    assert answers(victim) is None
    for r in REGIONS:
        if r != victim:
            assert answers(r, subnet=SUBNET[victim]) == [ANSWER[victim]] and answers(r) == [ANSWER[r]]
    assert health_of(ctl_status(victim), victim) == "healthy"  # steerctl status: nothing changed
    # After: it answers again with the current table (its state file first, then etcd's).
    assert lab_cmd("restart", victim, "dns", state=lab).returncode == 0
    timed("DNS back after kill -9", lambda: answers(victim) == [ANSWER[victim]], 30)
    timed("after DNS restart: one table", lambda: one_leader_everywhere(lab), 30)


@pytest.mark.lab
@pytest.mark.skipif(not ROOT, reason="steering lab needs root")
def test_scenario_kill_9_of_an_agent(restored: Path) -> None:
    lab = restored
    victim = REGIONS[2]
    assert lab_cmd("kill", victim, "agent", state=lab).returncode == 0
    # During: its region goes silent; past the bound every region's DNS sends its clients elsewhere.
    timed("a region without its agent left everywhere",
          lambda: all((a := answers(r, subnet=SUBNET[victim])) and a != [ANSWER[victim]] for r in REGIONS), 40)
    assert health_of(ctl_status(REGIONS[0]), victim) != "healthy"
    # After: reports resume and the region's clients come home in every region.
    assert lab_cmd("restart", victim, "agent", state=lab).returncode == 0
    timed("after agent restart: every client home everywhere", home_everywhere, 40)
    assert health_of(ctl_status(REGIONS[0]), victim) == "healthy"


@pytest.mark.lab
@pytest.mark.skipif(not ROOT, reason="steering lab needs root")
def test_scenario_two_of_three_etcd_members_lost(restored: Path) -> None:
    lab = restored
    leader = eventually_sync(lambda: one_leader_everywhere(lab), timeout=60, what="one leader")
    lost = [r for r in REGIONS if r != region_of(leader)]
    kept = region_of(leader)
    for r in lost:
        assert lab_cmd("kill", r, "etcd", state=lab).returncode == 0
    # During: no quorum, so no leader can be read anywhere and no operator action can be stored; every
    # DNS server keeps answering from the last table it applied (every client home).
    timed("no quorum: no leader seen", lambda: all(v is None for v in leaders(lab).values()), 30)
    res = steerctl_in(kept, "evacuate", lost[0], "--reason", "no quorum", "--now", "--yes")
    assert res.returncode != 0, res.stdout
    assert home_everywhere()
    assert eventually_sync(lambda: ctl_status(kept)["stale"], timeout=30, what="steerctl status says stale")
    # After: the members rejoin, a leader and one table everywhere; the refused evacuation never happened.
    for r in lost:
        assert lab_cmd("restart", r, "etcd", state=lab).returncode == 0
    timed("quorum back: one leader, one table", lambda: one_leader_everywhere(lab), 40)
    assert home_everywhere()


@pytest.mark.lab
@pytest.mark.skipif(not ROOT, reason="steering lab needs root")
def test_scenario_a_region_cut_from_the_etcd_majority_only(restored: Path) -> None:
    lab = restored
    leader = eventually_sync(lambda: one_leader_everywhere(lab), timeout=60, what="one leader")
    # From a steady state: after the scenario before (two etcd members lost, then back) the regions' health is
    # re-reported and rises again for some seconds, and the check below through the cut region would see that.
    eventually_sync(lambda: all(health_of(ctl_status(region_of(leader)), r) == "healthy" for r in REGIONS),
                    timeout=60, what="every region healthy in the leader's table before the cut", ignoring=(AssertionError,))
    cut = next(r for r in REGIONS if r != region_of(leader))
    res = lab_cmd("partition", cut, "--etcd", state=lab)
    assert res.returncode == 0 and "etcd member from its peers" in res.stdout, res
    # During: only its member is out (no quorum behind it: unhealthy, no leader readable through it); the
    # region's controller, DNS and agent reach the other members, so nothing else changes: the leader
    # stays, no region goes silent, every region's DNS keeps every client home.
    timed("the cut member loses quorum",
          lambda: not next(c for c in by_region(status(lab))[cut]["components"] if c["name"] == "etcd")["healthy"]
          and leaders(lab)[cut] is None, 30)
    assert by_region(status(lab))[cut]["etcd_peers_cut"]

    def the_leader_stays() -> bool:
        # When the cut member led etcd's raft, the other two elect another within a second or two, and a read
        # there finds no leader meanwhile (None): wait that out, but the controllers' leader never changes.
        seen = leaders(lab)
        assert all(seen[r] in (leader, None) for r in REGIONS if r != cut), seen
        return all(seen[r] == leader for r in REGIONS if r != cut)

    timed("the other regions read the same leader", the_leader_stays, 20)
    assert home_everywhere()
    # steerctl status through the cut region's controller: the leader, a fresh view, every region healthy.
    ctl = eventually_sync(lambda: (c := ctl_status(cut)) and not c["stale"] and c, timeout=30,
                          what="the cut region's controller not stale")
    assert ctl["leader"] == leader, ctl["leader"]
    assert all(health_of(ctl, r) == "healthy" for r in REGIONS), {r: health_of(ctl, r) for r in REGIONS}
    # An operator action through that controller is stored (by the other members) and reaches every DNS,
    # within steerctl's default 5 s per call: the cut member still accepts its clients' calls (only its
    # peers are cut) but, asked with "hasleader", refuses them at once instead of timing out after 7-11 s,
    # and the call goes to another member (steering/store/client.py, docs/failure-modes.md).
    gone = region_of(leader)
    t0 = time.monotonic()
    res = steerctl_in(cut, "evacuate", gone, "--reason", "etcd cut", "--now", "--yes")
    assert res.returncode == 0, res.stderr
    print(f"evacuate through the cut region's controller: {time.monotonic() - t0:.1f}s")
    timed("evacuation through the cut region's controller in every region's DNS",
          lambda: all((a := answers(r, subnet=SUBNET[gone])) and ANSWER[gone] not in a for r in REGIONS), 40)
    assert steerctl_in(cut, "restore", gone, "--now", "--yes").returncode == 0
    # After: the member rejoins (healthy, the leader readable through it), one table, every client home.
    res = lab_cmd("heal", cut, state=lab)
    assert res.returncode == 0 and f"{cut}'s etcd member" in res.stdout, res
    timed("after heal: member healthy, one leader, one table",
          lambda: all(next(c for c in r["components"] if c["name"] == "etcd")["healthy"]
                      for r in status(lab)["regions"]) and one_leader_everywhere(lab), 40)
    timed("after heal: every client home everywhere", home_everywhere, 40)
    assert not by_region(status(lab))[cut]["etcd_peers_cut"]


GEO = {"us-east-1": "east", "us-west-2": "west", "eu-west-1": "europe"}  # each region's own clients


def applied_weights(lab: Path, geo: str) -> dict[str, int]:
    """Per region, the weight of ``geo``'s home region in the table that region's DNS server applied (its
    state file: what it answers from); -1 where there is none to read."""
    home = next(r for r, g in GEO.items() if g == geo)
    out = {}
    for r in REGIONS:
        try:
            table = json.loads((lab / "regions" / r / "dns-table.json").read_text())
            out[r] = int(table["services"][QNAME]["geos"][geo]["weights"][home])
        except (OSError, ValueError, KeyError):
            out[r] = -1
    return out


def ramp_through(lab: Path, geo: str, goal: int, seen: dict[str, list[int]], at: list[float]) -> bool:
    """Polled until every region's DNS applies ``goal`` for ``geo``'s home; each region's weights, as they
    change, in ``seen`` (``at``: when a weight was first seen anywhere, for the printed figures)."""
    now = applied_weights(lab, geo)
    for r, w in now.items():
        mine = seen.setdefault(r, [])
        if w >= 0 and (not mine or mine[-1] != w):
            if not any(w in other for other in seen.values()):
                at.append(time.monotonic())
            mine.append(w)
    return all(w == goal for w in now.values())


def stepped(seen: dict[str, list[int]], down: bool) -> bool:
    """Every region's DNS went one way only, through at least two steps between all and nothing."""
    return len(seen) == len(REGIONS) and all(
        ws == sorted(ws, reverse=down) and len([w for w in ws if 0 < w < 1000]) >= 2 for ws in seen.values())


@pytest.mark.lab
@pytest.mark.skipif(not ROOT, reason="steering lab needs root")
def test_scenario_clock_skew_on_the_leader_during_a_ramped_evacuation(restored: Path) -> None:
    lab = restored
    fast, slow, gone = REGIONS  # controllers 30 s ahead and 30 s behind; the region evacuated
    eventually_sync(lambda: one_leader_everywhere(lab), timeout=60, what="one leader")
    try:
        # The leader 30 s ahead: skew two replicas, then leave the fast one alone to lead.
        assert lab_cmd("clock", fast, "+30s", state=lab).returncode == 0
        assert lab_cmd("clock", slow, "-30s", state=lab).returncode == 0
        assert lab_cmd("kill", slow, "controller", state=lab).returncode == 0
        assert lab_cmd("kill", gone, "controller", state=lab).returncode == 0
        timed("the +30 s replica leads", lambda: leaders(lab)[fast] == f"ctl-{fast}", 40)
        assert lab_cmd("restart", slow, "controller", state=lab).returncode == 0  # still 30 s behind
        eventually_sync(lambda: steerctl_in(slow, "status", "--json").returncode == 0, timeout=30,
                        what="the -30 s replica answers")
        # During: the evacuation goes through the replica 30 s behind, so its record's start is 60 s behind
        # the leader's clock; the leader still steps 25 % every 2 s (counted on its monotonic clock), and
        # every region's DNS goes through the steps, none skipped to the end, none back.
        res = steerctl_in(slow, "evacuate", gone, "--reason", "skew", "--ramp", "25%/2s", "--yes", "--no-wait")
        assert res.returncode == 0, res.stderr
        seen: dict[str, list[int]] = {}
        at: list[float] = []
        t0 = time.monotonic()
        timed("ramped evacuation under a leader 30 s ahead: every region's DNS at 0",
              lambda: ramp_through(lab, GEO[gone], 0, seen, at), 40)
        print(f"  {gone}'s weight for its own clients, as applied: {seen} at {[round(t - t0, 1) for t in at]} s")
        assert stepped(seen, down=True), seen
        assert all((a := answers(r, subnet=SUBNET[gone])) and a != [ANSWER[gone]] for r in REGIONS)
        st = ctl_status(slow)  # steerctl status through the skewed replica: the leader, the evacuation, not stale
        assert st["leader"] == f"ctl-{fast}" and not st["stale"]
        assert [e["region"] for e in st["evacuations"]] == [gone]
        # The leader goes (kill -9): the replica 30 s behind takes over and restores, ramped, 60 s behind
        # the clock the evacuation's steps were taken on.
        assert lab_cmd("kill", fast, "controller", state=lab).returncode == 0
        timed("the -30 s replica leads", lambda: leaders(lab)[slow] == f"ctl-{slow}", 40)
        res = steerctl_in(slow, "restore", gone, "--ramp", "25%/2s", "--yes", "--no-wait")
        assert res.returncode == 0, res.stderr
        seen, at, t0 = {}, [], time.monotonic()
        timed("ramped restore under a leader 30 s behind: every region's DNS home",
              lambda: ramp_through(lab, GEO[gone], 1000, seen, at), 40)
        print(f"  {gone}'s weight for its own clients, as applied: {seen} at {[round(t - t0, 1) for t in at]} s")
        assert stepped(seen, down=False), seen
    finally:
        # After: real clocks everywhere (a restart each), one leader, one table, every client home.
        lab_cmd("clock", fast, "0", state=lab)
        lab_cmd("clock", slow, "0", state=lab)
        lab_cmd("restart", gone, "controller", state=lab)
        # and the region back in service whatever step failed (a later test must not find it evacuated)
        eventually_sync(lambda: (res := steerctl_in(fast, "restore", gone, "--now", "--yes")).returncode == 0
                        or "no evacuation to restore" in res.stderr, timeout=40, what="the region restored")
    timed("clocks back: one leader, one table", lambda: one_leader_everywhere(lab), 40)
    timed("clocks back: every client home everywhere", home_everywhere, 40)
    assert ctl_status(slow)["evacuations"] == []


LOSS_ROUNDS = 4  # rounds of every region's DNS checked while the loss is on (each about 3 s here)


def dropped(state: Path) -> int:
    """Packets the nft loss rules have dropped, in every region (0 where netem makes the loss)."""
    return sum(int(rule["dropped_packets"]) for r in status(state)["regions"] for rule in r.get("loss_rules") or [])


@pytest.mark.lab
@pytest.mark.skipif(not ROOT, reason="steering lab needs root")
def test_scenario_20_percent_loss_between_all_regions(restored: Path) -> None:
    lab = restored
    leader = eventually_sync(lambda: one_leader_everywhere(lab), timeout=60, what="one leader")
    pairs = [(a, b) for i, a in enumerate(REGIONS) for b in REGIONS[i + 1:]]
    for a, b in pairs:
        res = lab_cmd("loss", a, b, "20%", state=lab)
        assert res.returncode == 0 and "20% loss each way" in res.stdout, res.stderr
    st = status(lab)
    assert all(link["loss_pct"] == 20 and link["loss_by"] in ("netem", "nft") and not link["cut"]
               for link in st["links"]), st["links"]
    by_nft = all(link["loss_by"] == "nft" for link in st["links"])
    if by_nft:  # the rules as the kernel holds them: each region drops 20 % of what it sends to each other
        assert all(sorted(rule["to"] for rule in r["loss_rules"]) == sorted(a for x, a in ADDR.items() if x != r["id"])
                   and all(rule["loss_pct"] == 20 for rule in r["loss_rules"]) for r in st["regions"]), st["regions"]
    # During: the control plane's traffic between regions loses a fifth of its packets (TCP retransmits);
    # every region's DNS answers every region's clients with their own region, round after round.
    t0 = time.monotonic()
    before = dropped(lab) if by_nft else 0
    for _ in range(LOSS_ROUNDS):
        assert home_everywhere(), {r: everywhere(r) for r in REGIONS}
    if by_nft:
        assert dropped(lab) > before  # the loss was real while the rounds were answered
    print(f"under 20 % loss: every client home in every region for {LOSS_ROUNDS} rounds "
          f"({time.monotonic() - t0:.1f}s){f', {dropped(lab)} packets dropped' if by_nft else ''}")
    ctl = ctl_status(REGIONS[0])  # steerctl status: a leader, not stale, every region healthy
    assert ctl["leader"] and not ctl["stale"] and all(health_of(ctl, r) == "healthy" for r in REGIONS), ctl
    # An operator action through a replica that does not lead crosses the lossy links both ways.
    via = next(r for r in REGIONS if r != region_of(leader))
    gone = next(r for r in REGIONS if r not in (via, region_of(leader)))
    t1 = time.monotonic()
    res = steerctl_in(via, "evacuate", gone, "--reason", "loss", "--now", "--yes")
    assert res.returncode == 0, res.stderr
    print(f"under 20 % loss: evacuate --now through {via} returned in {time.monotonic() - t1:.1f}s")
    timed("under 20 % loss: the evacuation in every region's DNS",
          lambda: all((a := answers(r, subnet=SUBNET[gone])) and ANSWER[gone] not in a for r in REGIONS), 40)
    ctl = ctl_status(via)  # steerctl status through that replica: a leader, not stale, the evacuation
    assert ctl["leader"] and not ctl["stale"] and [e["region"] for e in ctl["evacuations"]] == [gone]
    res = steerctl_in(via, "restore", gone, "--now", "--yes")
    assert res.returncode == 0, res.stderr
    timed("under 20 % loss: after restore, every client home everywhere", home_everywhere, 40)
    print(f"  leaders during the loss: {leaders(lab)} (before: {leader})")
    # After: the links as `up` made them, no rule left; one leader, one table, every client home.
    res = lab_cmd("heal", state=lab)
    assert res.returncode == 0 and "healed:" in res.stdout
    st = status(lab)
    assert all(link["loss_pct"] == 0 and not link["loss_by"] for link in st["links"])
    assert all(not r.get("loss_rules") for r in st["regions"])
    assert all(netops.loss_rules(r) == [] for r in plan_regions(list(REGIONS), {}, None))  # none in the kernel
    timed("after heal: one leader and one table everywhere", lambda: one_leader_everywhere(lab), 40)
    timed("after heal: every client home everywhere", home_everywhere, 40)
    assert not ctl_status(via)["stale"]


SPIKE_MS = 300
SPIKE_ROUNDS = 2  # rounds of every region's DNS checked during the spike (each about 3 s here)
CROSS_QUERY = """
import json, sys, time
import dns.message, dns.query
server, qname = sys.argv[1:3]
t0 = time.perf_counter()
r = dns.query.udp(dns.message.make_query(qname, "A"), server, port=53, timeout=10.0)
print(json.dumps({"seconds": time.perf_counter() - t0, "rcode": r.rcode()}))
"""


def applied_version(lab: Path, region: str) -> int | None:
    """The version of the table ``region``'s DNS server applied (its state file), None where there is none."""
    try:
        return int(json.loads((lab / "regions" / region / "dns-table.json").read_text())["version"])
    except (OSError, ValueError, KeyError):
        return None


LEADER_CHANGES = """
import json, sys, urllib.request
total = 0
for addr in sys.argv[1:]:
    text = urllib.request.urlopen(f"http://{addr}:2379/metrics", timeout=10).read().decode()
    total += sum(int(float(line.split()[-1])) for line in text.splitlines()
                 if line.startswith("etcd_server_leader_changes_seen_total"))
print(total)
"""


def etcd_leader_changes() -> int:
    """The leader changes every etcd member has seen since it started, summed (its /metrics)."""
    return int(in_region(REGIONS[0], LEADER_CHANGES, *ADDR.values()))


def relay_held(st: dict[str, Any]) -> int:
    """Frames the delay relay has held so far (0 where netem makes the delay)."""
    return int((st.get("relay") or {}).get("delayed") or 0)


@pytest.mark.lab
@pytest.mark.skipif(not ROOT, reason="steering lab needs root")
def test_scenario_300_ms_latency_spike_between_all_regions(restored: Path) -> None:
    lab = restored
    leader = eventually_sync(lambda: one_leader_everywhere(lab), timeout=60, what="one leader")
    base = status(lab)["links"][0]
    pairs = [(a, b) for i, a in enumerate(REGIONS) for b in REGIONS[i + 1:]]
    changes = etcd_leader_changes()
    logs = {r: lab / "logs" / f"{r}-controller.log" for r in REGIONS}
    log_from = {r: f.stat().st_size for r, f in logs.items()}
    t0 = time.monotonic()
    for a, b in pairs:  # a spike on the lab as `up` tuned it (20 ms: etcd heartbeat 200 ms, election 2 s)
        res = lab_cmd("latency", a, b, f"{SPIKE_MS}ms", state=lab)
        assert res.returncode == 0 and f"{SPIKE_MS} ms one-way +/- {SPIKE_MS // 10} ms" in res.stdout, res.stderr
    st = status(lab)
    assert all(link["delay_ms"] == SPIKE_MS and link["jitter_ms"] == SPIKE_MS // 10 and not link["cut"]
               and link["delay_by"] in ("netem", "relay") for link in st["links"]), st["links"]
    if st["delay_by"] == "relay":  # the relay holds every direction of every pair at the spike's delay
        held = {(p["from"], p["to"]): p["delay_ms"] for p in st["relay"]["pairs"]}
        assert held == {(a, b): SPIKE_MS for a in REGIONS for b in REGIONS if a != b}, held
    # The delay is real: a query across regions takes at least the round trip (one-way less jitter, twice).
    before = relay_held(st)
    crossed = in_region(REGIONS[0], CROSS_QUERY, ADDR[REGIONS[2]], QNAME)
    assert crossed["rcode"] == 0 and crossed["seconds"] >= 2 * (SPIKE_MS - SPIKE_MS // 10) / 1000, crossed
    # During: every region's DNS answers every region's clients, round after round, always with one of the
    # lab's regions: never nothing. Mostly home: the spike is beyond the lab's tuning, and a controller's health
    # lease (TTL 3 s, the silence bound) is kept alive through keepalives that take 1.2 s and more through a
    # member that does not lead (two round trips); they used to be given 1 s each, and the lease lapsed in 3
    # of 14 runs, taking the region out of answers for seconds (docs/failure-modes.md, fixed); checked below.
    versions = {applied_version(lab, r) for r in REGIONS}
    home_rounds = 0
    for _ in range(SPIKE_ROUNDS):
        got = {c: everywhere(c) for c in REGIONS}
        assert all(a is not None and len(a) == 1 and a[0] in ANSWER.values()
                   for per in got.values() for a in per.values()), got
        home_rounds += all(per == {x: [ANSWER[c]] for x in REGIONS} for c, per in got.items())
    if st["delay_by"] == "relay":
        assert relay_held(status(lab)) > before
    # steerctl status still answers, but slowly: its reads of etcd are linearizable, and through a member that
    # does not lead each waits for the leader to confirm a heartbeat round (two 300 ms hops more), so the
    # call needs longer than steerctl's default 5 s. It names a leader and every region's health; fresh, or
    # (where the replica's reads timed out) its last known state marked stale.
    via = next(r for r in REGIONS if r != region_of(leader))
    t1 = time.monotonic()
    res = steerctl_in(via, "status", "--json", "--timeout", "40")
    assert res.returncode == 0, res.stderr
    ctl = json.loads(res.stdout)
    assert ctl["leader"] and sorted(r["region"] for r in ctl["regions"]) == sorted(REGIONS), ctl
    versions |= {applied_version(lab, r) for r in REGIONS}
    # No controller lost a lease during the spike: its keepalives were slow, never given up while it ran.
    lost = {r: [line for line in _read_from(f, log_from[r]).splitlines() if "lease_lost" in line]
            for r, f in logs.items()}
    assert not any(lost.values()), lost
    print(f"during the {SPIKE_MS} ms spike ({time.monotonic() - t0:.1f}s): a query across regions "
          f"{crossed['seconds']:.2f}s; {home_rounds} of {SPIKE_ROUNDS} rounds every client home; table versions "
          f"applied {sorted(v for v in versions if v is not None)}; steerctl status through {via} in "
          f"{time.monotonic() - t1:.1f}s: leader {ctl['leader']} (before: {leader}), stale {ctl['stale']}, "
          f"health {({r: health_of(ctl, r) for r in REGIONS})}")
    # After: the links as `up` made them (the relay back at the base delay), one leader, one table, every
    # client home, steerctl status at its usual speed and fresh.
    res = lab_cmd("heal", state=lab)
    assert res.returncode == 0 and "healed:" in res.stdout
    st = status(lab)
    assert all((link["delay_ms"], link["jitter_ms"]) == (base["delay_ms"], base["jitter_ms"]) for link in st["links"])
    if st["delay_by"] == "relay":
        assert {p["delay_ms"] for p in st["relay"]["pairs"]} == {base["delay_ms"]}
    timed("after the spike: one leader and one table everywhere", lambda: one_leader_everywhere(lab), 40)
    timed("after the spike: every client home everywhere", home_everywhere, 40)
    timed("after the spike: steerctl status fresh, every region healthy",
          lambda: (res := steerctl_in(via, "status", "--json")).returncode == 0
          and not (c := json.loads(res.stdout))["stale"] and all(health_of(c, r) == "healthy" for r in REGIONS), 40)
    print(f"  etcd leader changes seen by the members across the spike: {etcd_leader_changes() - changes}")


def _read_from(path: Path, offset: int) -> str:
    with path.open("rb") as f:
        f.seek(offset)
        return f.read().decode(errors="replace")


# ---------------------------------------------------------------------- the history checker (issue 15 §3)

HISTORY_SEED = 4  # its schedule has every kind of fault: partitions, kill -9 of a controller, DNS, etcd, agent


@pytest.mark.lab
@pytest.mark.skipif(not ROOT, reason="steering lab needs root")
def test_history_run_of_a_seeded_schedule_finds_no_violation(restored: Path) -> None:
    lab = restored
    eventually_sync(lambda: one_leader_everywhere(lab), timeout=60, what="one leader")
    res = lab_cmd("history", "--seed", str(HISTORY_SEED), "--duration", "45s", "--json", state=lab, timeout=300)
    assert res.returncode == 0, (res.stdout, res.stderr)
    out = json.loads(res.stdout)
    fig = out["figures"]
    print("history figures:", json.dumps(fig))  # docs/lab.md quotes them (pytest -s)
    assert out["violations"] == [] and fig["violations"] == 0
    assert set(fig["faults by kind"]) == {"partition", "kill controller", "kill dns", "kill etcd", "kill agent"}
    acts = fig["actions"]
    assert acts["acknowledged"] >= 5 and acts["retries"] >= 1, acts
    assert fig["versions observed"] >= 5 and fig["tables written"] >= 5 and fig["leader terms"] >= 1
    assert fig["converged after heal (s)"] <= 30
    # The record is kept to re-check: the same file, the same verdict.
    records = [json.loads(line) for line in Path(fig["history file"]).read_text().splitlines()]
    assert check_history(records).violations == []
    assert {r["type"] for r in records} >= {"start", "fault", "dns", "send", "result", "etcd", "audit", "final"}
    # The lab as the run found it: every link healed, every process alive, nothing evacuated or pinned.
    st = status(lab)
    assert all(not link["cut"] for link in st["links"])
    assert all(c["alive"] for r in st["regions"] for c in r["components"])
    ctl = ctl_status(REGIONS[0])
    assert ctl["evacuations"] == [], ctl["evacuations"]
    timed("after the history run: every client home everywhere", home_everywhere, 40)


# ---------------------------------------------------------------------- down


@pytest.mark.lab
@pytest.mark.skipif(not ROOT, reason="steering lab needs root")
def test_down_leaves_no_namespace_or_process_also_after_a_crash(lab: Path) -> None:
    record = json.loads((lab / "lab.json").read_text())
    res = lab_cmd("down", state=lab)
    assert res.returncode == 0 and "removed namespaces" in res.stdout, res
    assert netops.lab_namespaces() == []
    from steering.lab.procs import alive

    assert not [name for name, rec in record["procs"].items() if alive(rec)]
    again = lab_cmd("down", state=lab)
    assert again.returncode == 0 and "no lab is running" in again.stdout
    # A crashed `up` leaves a namespace with a process in it and no record: `down` finds both by the prefix.
    subprocess.run(["ip", "netns", "add", "stl-lab"], check=True)
    sleeper = subprocess.Popen(["ip", "netns", "exec", "stl-lab", "sleep", "300"])
    try:
        eventually_sync(lambda: netops.ns_pids("stl-lab") == [sleeper.pid], timeout=10, what="the sleeper")
        res = lab_cmd("down", state=lab)
        assert res.returncode == 0 and "killed 1 process(es)" in res.stdout and netops.lab_namespaces() == []
        assert sleeper.wait(10) == -9
    finally:
        if sleeper.poll() is None:
            sleeper.kill()
        if netops.lab_namespaces():
            subprocess.run(["ip", "netns", "del", "stl-lab"], check=False)
