"""The history checker (``steering.lab.history``) and the seeded schedule (``steering.lab.schedule``): pure,
on hand-made histories; the real run against a lab is ``test_history_run_*`` in tests/test_lab.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from steering.lab.history import Result as CheckResult
from steering.lab.history import check, check_versions, holder_at, terms_of
from steering.lab.schedule import action_pairs, active_at, bearable, fault_schedule, parse_span

REGIONS = ["a-1", "b-2", "c-3"]
ANSWERS = {"a-1": ["192.0.2.1"], "b-2": ["192.0.2.2"], "c-3": ["192.0.2.3"]}


def start(**extra: Any) -> dict[str, Any]:
    return {"type": "start", "t": 0.0, "regions": REGIONS, "answers": ANSWERS, "detection_bound": 10.0,
            "convergence_bound": 20.0, "leader": {"identity": "ctl-a-1", "create_revision": 5},
            "evacuated": [], "pinned": [], **extra}


def dns(t: float, server: str, version: int, leader: str = "ctl-a-1", **answers: list[str] | None) -> dict[str, Any]:
    return {"type": "dns", "t": t, "server": server, "version": version, "leader": leader,
            "answers": answers or {"east": ["192.0.2.1"]}}


def clean(*middle: dict[str, Any], audit: list[dict[str, Any]] | None = None,
          final: dict[str, Any] | None = None, writes: list[dict[str, Any]] | None = None,
          leader_events: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """A history that passes every check, with ``middle`` records in it."""
    return [start(), *middle,
            {"type": "healed", "t": 50.0}, {"type": "converged", "t": 52.0, "seconds": 2.0, "version": 9},
            {"type": "etcd", "leader_events": leader_events or [], "table_writes": writes or []},
            {"type": "audit", "records": audit or []},
            {"type": "final", "evacuated": [], "pinned": [], **(final or {})}]


def send(rid: str, kind: str = "evacuate", target: str = "b-2", attempt: int = 0) -> dict[str, Any]:
    return {"type": "send", "t": 1.0, "rid": rid, "kind": kind, "target": target, "replica": "r", "attempt": attempt}


def result(rid: str, outcome: str) -> dict[str, Any]:
    return {"type": "result", "t": 1.5, "rid": rid, "outcome": outcome}


def audited(rid: str, action: str = "evacuate", region: str = "b-2", time: float = 1.2) -> dict[str, Any]:
    return {"id": f"x-{rid}-{time}", "time": time, "action": action, "region": region, "service": "", "geo": "",
            "request_id": rid}


def test_a_clean_history_has_no_violation_and_its_figures() -> None:
    res = check(clean(dns(1, "a-1", 3), dns(2, "a-1", 4), dns(2, "b-2", 4),
                      send("r1"), result("r1", "ack"), send("r2", "restore"), result("r2", "ack"),
                      audit=[audited("r1"), audited("r2", "restore", time=2.0)],
                      writes=[{"rev": 10, "version": 4}]))
    assert res.violations == []
    assert res.figures["actions"]["acknowledged"] == 2 and res.figures["versions observed"] == 2
    assert res.figures["converged after heal (s)"] == 2.0 and res.figures["violations"] == 0


def test_an_acknowledged_action_missing_or_twice_in_the_audit_is_flagged() -> None:
    for audit in ([], [audited("r1"), audited("r1", time=1.3)]):
        res = check(clean(send("r1"), result("r1", "ack"), audit=audit, final={"evacuated": ["b-2"]}))
        assert any("acknowledged evacuate b-2 (request id r1) appears" in v for v in res.violations), res


def test_a_retried_timeout_applied_once_is_fine_and_twice_is_not() -> None:
    hist = [send("r1"), result("r1", "unknown"), send("r1", attempt=1), result("r1", "duplicate")]
    assert check(clean(*hist, audit=[audited("r1")], final={"evacuated": ["b-2"]})).violations == []
    # never acknowledged, but applied twice
    res = check(clean(send("r2"), result("r2", "unknown"), audit=[audited("r2"), audited("r2", time=3)],
                      final={"evacuated": ["b-2"]}))
    assert any("unacknowledged evacuate b-2 (request id r2) took effect 2 times" in v for v in res.violations)
    # refused on every attempt, applied anyway
    res = check(clean(send("r3"), result("r3", "refused"), audit=[audited("r3")], final={"evacuated": ["b-2"]}))
    assert any("refused evacuate" in v for v in res.violations)


def test_an_action_that_did_not_take_effect_is_flagged() -> None:
    res = check(clean(send("r1"), result("r1", "ack"), audit=[audited("r1")], final={"evacuated": []}))
    assert any("the audit leaves ['b-2'] evacuated, the replicas report []" in v for v in res.violations)
    pins = check(clean(send("p1", "pin", "svc/east"), result("p1", "ack"),
                       audit=[{**audited("p1", "pin", ""), "service": "svc", "geo": "east"}]))
    assert any("pinned" in v for v in pins.violations)


def test_a_version_going_backwards_on_one_server_is_flagged_and_across_servers_is_not() -> None:
    res = check(clean(dns(1, "a-1", 5), dns(2, "b-2", 3), dns(3, "a-1", 4)))
    assert [v for v in res.violations if "went backwards" in v] == [
        "a-1: table version went backwards, v5 at 1.0s then v4 at 3.0s"]


@given(st.lists(st.integers(0, 50), min_size=1, max_size=30))
def test_any_version_sequence_that_goes_backwards_is_flagged_exactly_then(versions: list[int]) -> None:
    res = CheckResult()
    check_versions([dns(i, "a-1", v) for i, v in enumerate(versions)], res)
    drops = sum(1 for i in range(1, len(versions)) if versions[i] < max(versions[:i]))
    assert len(res.violations) == drops


def test_fencing_a_table_written_by_a_deposed_leader_is_flagged() -> None:
    events: list[dict[str, Any]] = [{"rev": 20, "deleted": True}, {"rev": 21, "create_revision": 21, "identity": "ctl-b-2"}]
    writes = [{"rev": 10, "version": 4}, {"rev": 25, "version": 5}]
    ok = check(clean(dns(1, "a-1", 4), dns(2, "a-1", 5, "ctl-b-2"), writes=writes, leader_events=events))
    assert ok.violations == [] and ok.figures["leader terms"] == 2
    # v5 names the deposed leader: written while ctl-b-2 held the key
    res = check(clean(dns(1, "a-1", 4), dns(2, "a-1", 5, "ctl-a-1"), writes=writes, leader_events=events))
    assert any("table v5 names leader 'ctl-a-1' but was written while 'ctl-b-2'" in v for v in res.violations)
    # a table written in the gap between terms (no holder) is a write that was not fenced
    gap = check(clean(writes=[{"rev": 20, "version": 6}], leader_events=events))
    assert any("while no leader held the key" in v for v in gap.violations)


def test_fencing_a_server_going_back_to_an_older_terms_table_is_flagged() -> None:
    events: list[dict[str, Any]] = [{"rev": 20, "deleted": True}, {"rev": 21, "create_revision": 21, "identity": "ctl-b-2"}]
    writes = [{"rev": 10, "version": 7}, {"rev": 25, "version": 5}]  # versions that disagree with the terms
    res = check(clean(dns(1, "a-1", 5, "ctl-b-2"), dns(2, "a-1", 7), writes=writes, leader_events=events))
    assert any("after v5 of a newer term" in v for v in res.violations)


def test_terms_follow_the_key_and_holders_are_found_by_revision() -> None:
    terms = terms_of(start(), [{"rev": 30, "deleted": True}, {"rev": 31, "create_revision": 31, "identity": "x"},
                               {"rev": 40, "create_revision": 31, "identity": "x"}])
    assert [(t.create_revision, t.identity, t.end_rev) for t in terms] == [(5, "ctl-a-1", 30), (31, "x", None)]
    assert holder_at(terms, 29) == terms[0] and holder_at(terms, 30) is None and holder_at(terms, 99) == terms[1]
    assert holder_at(terms, 4) is None


def test_a_silent_region_left_in_answers_past_the_bound_is_flagged_except_where_cut_off() -> None:
    faults = [{"type": "fault", "t": 10.0, "op": "kill", "region": "c-3", "component": "agent"},
              {"type": "fault", "t": 40.0, "op": "restart", "region": "c-3", "component": "agent"}]
    gone = clean(*faults, dns(12, "a-1", 3, europe=["192.0.2.3"]), dns(15, "a-1", 4, europe=["192.0.2.1"]))
    res = check(gone)
    assert res.violations == [] and res.figures["silent region left answers within (s)"] == 5.0
    late = check(clean(*faults, dns(21, "a-1", 3, europe=["192.0.2.3"])))
    assert any("a-1: answered with c-3 at 21.0s, silent since 10.0s" in v for v in late.violations)
    # the cut region itself keeps its last table: not a violation; the others are held to the bound
    cut = [{"type": "fault", "t": 10.0, "op": "partition", "region": "c-3", "component": None},
           {"type": "fault", "t": 40.0, "op": "heal", "region": "c-3", "component": None}]
    assert check(clean(*cut, dns(30, "c-3", 3, europe=["192.0.2.3"]))).violations == []
    assert check(clean(*cut, dns(30, "b-2", 3, europe=["192.0.2.3"]))).violations != []


def test_no_convergence_within_the_bound_is_flagged() -> None:
    hist = [r for r in clean() if r["type"] != "converged"]
    assert "the history has no convergence record" in check(hist).violations
    slow = [*hist, {"type": "converged", "t": 80, "seconds": None, "versions": {"a-1": 3, "b-2": 4}}]
    assert any("did not converge" in v for v in check(slow).violations)
    assert check([]).violations == ["the history has no start record"]


# ---------------------------------------------------------------------- the schedule


@settings(max_examples=60, deadline=None)  # a long schedule is many draws: no per-example deadline under load
@given(st.integers(0, 2**31 - 1), st.floats(10, 600), st.integers(1, 7))
def test_a_schedule_never_asks_more_than_the_deployment_bears(seed: int, duration: float, n: int) -> None:
    regions = [f"r{i}" for i in range(n)]
    episodes = fault_schedule(seed, duration, regions)
    assert episodes == fault_schedule(seed, duration, regions)  # seeded: the same schedule again
    for e in episodes:
        assert 0 < e.start < e.end <= duration and e.region in regions
        assert bearable(active_at(episodes, e.start), n), (e, active_at(episodes, e.start))


def test_bearable_counts_quorum_silence_and_controllers() -> None:
    from steering.lab.schedule import Episode

    def ep(region: str, kind: str) -> Episode:
        return Episode(0, 1, region, kind)

    assert bearable([ep("a", "partition"), ep("b", "controller")], 3)
    assert not bearable([ep("a", "partition"), ep("b", "etcd")], 3)  # two members out of three
    assert not bearable([ep("a", "agent"), ep("b", "agent")], 3)  # two regions silent
    assert not bearable([ep("a", "controller"), ep("b", "controller"), ep("c", "controller")], 3)
    assert not bearable([ep("a", "dns"), ep("a", "agent")], 3)  # one episode per region
    assert bearable([ep("a", "etcd"), ep("b", "partition")], 5)


def test_actions_come_in_pairs_and_parse_span_refuses_nonsense() -> None:
    acts = action_pairs(3, REGIONS, "svc.", ["east", "west"])
    assert acts == action_pairs(3, REGIONS, "svc.", ["east", "west"])
    for first, second in zip(acts[::2], acts[1::2], strict=True):
        assert (first.kind, second.kind) in (("evacuate", "restore"), ("pin", "unpin"))
        assert (first.region, first.geo) == (second.region, second.geo)
    assert any(a.short_first_deadline for a in acts)
    assert [parse_span(x, "d") for x in ("60s", "5m", "90", "1.5h")] == [60, 300, 90, 5400]
    for bad in ("0s", "soon", "2d", "-5s"):
        with pytest.raises(ValueError, match="d: "):
            parse_span(bad, "d")


def test_after_a_partition_heals_the_time_until_every_server_serves_one_version() -> None:
    from steering.lab.history import heal_convergence

    cut = [{"type": "fault", "t": 10.0, "op": "partition", "region": "c-3", "component": None},
           {"type": "fault", "t": 20.0, "op": "heal", "region": "c-3", "component": None}]
    rounds = [dns(19, "c-3", 3), dns(20.5, "a-1", 5), dns(21, "b-2", 5), dns(21.5, "c-3", 4), dns(23.2, "c-3", 5)]
    assert heal_convergence([*cut, *rounds], REGIONS) == [3.2]
    # a fault before they agree: no figure for that heal
    later = {"type": "fault", "t": 22.0, "op": "kill", "region": "a-1", "component": "dns"}
    assert heal_convergence([*cut, later, *rounds], REGIONS) == []
    assert check(clean(*cut, *rounds)).figures["one version after a partition healed (s)"] == [3.2]


def test_a_recorded_file_is_checked_again_from_the_command_line(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    from steering.lab.history import main

    good, bad = tmp_path / "good.jsonl", tmp_path / "bad.jsonl"
    good.write_text("".join(json.dumps(r) + "\n" for r in clean(dns(1, "a-1", 3))))
    bad.write_text("".join(json.dumps(r) + "\n" for r in clean(dns(1, "a-1", 3), dns(2, "a-1", 2))))
    assert main([str(good)]) == 0 and "violations: 0" in capsys.readouterr().out
    assert main([str(bad)]) == 1 and "VIOLATION: a-1: table version went backwards" in capsys.readouterr().out
    assert main([str(tmp_path / "missing.jsonl")]) == 2
