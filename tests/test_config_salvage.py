"""A configuration with several problems reports every one in one pass: type errors no longer hide the
cross-reference errors (steering.salvage). One line per problem, exit 2, as before."""

from __future__ import annotations

import copy
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from steering.config import ConfigError, parse_config
from steering.salvage import Salvage, loc_path
from tests.support import EXAMPLE_CONFIG, ROOT
from tests.support.paths import STEERING

BASE: dict[str, Any] = yaml.safe_load(EXAMPLE_CONFIG.read_text())


def problems_of(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(data, "test", EXAMPLE_CONFIG.parent)
    return info.value.problems


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def apply(d: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = d
        for p in parents:
            node = node[int(p)] if p.isdigit() else node[p]
        node[int(last) if last.isdigit() else last] = value
    return apply


# Independent faults: each touches its own element. Shape faults first, then cross-reference faults.
FAULTS: dict[str, Callable[[dict[str, Any]], None]] = {
    "watermark": _set("policy.watermark", 2),
    "capacity": _set("regions.1.capacity", -5),  # us-west-2 becomes unusable: cut, references to it unsaid
    "workers": _set("dns.workers", 0),
    "ttl": _set("services.1.ttl", "soon"),
    "unknown_field": _set("colour", "red"),
    "site_region": _set("sites.0.region", "mars-1"),
    "prefer": lambda d: d["geos"][0]["prefer"].append("venus-2"),
    "answer": lambda d: d["services"][0]["answers"].update({"pluto-9": {"A": ["192.0.2.99"]}}),
    "zone_twice": lambda d: d["zones"].append(dict(d["zones"][0])),
}
SHAPE = {"watermark", "capacity", "workers", "ttl", "unknown_field"}


def faulty(*names: str) -> dict[str, Any]:
    data = copy.deepcopy(BASE)
    for n in names:
        FAULTS[n](data)
    return data


def test_the_four_problems_of_the_issue_are_all_reported() -> None:
    found = problems_of(faulty("watermark", "capacity", "site_region", "prefer"))
    assert found == [
        "policy.watermark: Input should be less than or equal to 1",
        "regions[1].capacity: Input should be greater than 0",
        "sites[0].region: unknown region 'mars-1'",
        "geos[0].prefer[3]: unknown region 'venus-2'",
    ]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sets(st.sampled_from(sorted(FAULTS)), min_size=1))
def test_problems_of_several_faults_are_the_union_of_each_fault_s(names: set[str]) -> None:
    """Whatever mix of shape and cross-reference faults a file has, one pass reports each one's problems."""
    alone = {n: problems_of(faulty(n)) for n in names}
    together = problems_of(faulty(*sorted(names)))
    assert sorted(together) == sorted({p for found in alone.values() for p in found})


def test_indices_are_the_file_s_after_an_element_is_cut() -> None:
    data = copy.deepcopy(BASE)
    data["sites"].insert(0, {"id": "oc-bad-1", "region": "us-east-1"})  # no capacity: this site is cut
    data["sites"].append({"id": "oc-ams-1", "region": "mars-1", "capacity": 10})
    data["geos"][2]["prefer_sites"] = ["oc-bad-1", "oc-lon-1", "oc-nowhere"]  # the cut one is not reported
    found = problems_of(data)
    assert found == ["sites[0].capacity: Field required",
                     "sites[3].region: unknown region 'mars-1'",  # sites[2] of what was left: the file's [3]
                     "geos[2].prefer_sites[2]: unknown site 'oc-nowhere'"]


def test_a_document_too_broken_to_salvage_reports_its_shape_errors() -> None:
    found = problems_of({"regions": "none", "policy": {"watermark": "high"}})
    assert "regions: Input should be a valid tuple" in found
    assert "policy.watermark: Input should be a valid number, unable to parse string as a number" in found


def test_a_list_whose_every_element_is_refused_is_not_called_empty() -> None:
    """pydantic adds "at least 1 item after validation, not 0" when it refuses every element: not a problem
    of the file (its list is not empty), so not reported; each element's own problem is."""
    data = copy.deepcopy(BASE)
    for geo in data["geos"]:
        geo["prefixes"] = ["10.0.0.0/33"]
    found = problems_of(data)
    assert not [p for p in found if "at least 1 item" in p], found
    assert [p for p in found if p.startswith("geos[") and "is not a CIDR prefix" in p]
    assert "geos: List should have at least 1 item after validation, not 0" not in found
    assert problems_of({**BASE, "geos": []}) == ["geos: Tuple should have at least 1 item after validation, not 0"]


def test_salvage_cuts_in_the_file_s_terms() -> None:
    s = Salvage({"regions": [{"id": "a"}, {"id": "b", "capacity": 1}], "policy": {"watermark": 3}})
    assert s.cut(("policy", "watermark")) and s.cut(("regions", 0, "capacity"))
    assert s.cuts == ["policy.watermark", "regions[0]"] and s.dropped_ids == {"a"}
    assert s.clean() == {"regions": [{"id": "b", "capacity": 1}], "policy": {}}
    assert s.to_file(("regions", 0, "id")) == ("regions", 1, "id")
    assert s.problem_to_file("regions[0].id: x") == "regions[1].id: x"
    assert s.related("geos[0].prefer[0]: unknown region 'a'") and not s.related("geos[0].prefer[0]: unknown region 'b'")
    assert loc_path(("geos", 2, "prefer", 1)) == "geos[2].prefer[1]"


def test_steering_config_check_prints_every_problem_and_exits_2(tmp_path: Path) -> None:
    data = faulty("watermark", "capacity", "site_region", "prefer", "zone_twice")
    for zone in data["zones"]:
        zone["file"] = str(EXAMPLE_CONFIG.parent / zone["file"])
    path = tmp_path / "steering.yaml"
    path.write_text(yaml.safe_dump(data))
    proc = subprocess.run([STEERING, "config", "check", "--config", str(path)], capture_output=True, text=True,
                          timeout=60, cwd=ROOT)
    assert proc.returncode == 2 and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert [line.split(": ", 2)[2].split(":")[0] for line in lines] == [
        "policy.watermark", "regions[1].capacity", "zones", "sites[0].region", "geos[0].prefer[3]"], lines
