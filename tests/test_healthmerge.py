"""``steering.controller.healthmerge``: per-replica records into one health per site, and the start-up grace."""

from __future__ import annotations

from steering.controller.healthmerge import merge, record_key, split_key
from steering.model import TargetHealth

KNOWN = ["us-east-1", "eu-west-1", "oc-lon-1"]


def test_record_keys_name_the_site_and_the_replica() -> None:
    assert record_key("oc-lon-1", "replica-a") == "oc-lon-1@replica-a"
    assert split_key(record_key("oc-lon-1", "replica-a")) == ("oc-lon-1", "replica-a")
    assert split_key("oc-lon-1") == ("oc-lon-1", "")


def test_the_newest_record_of_a_site_wins_whichever_replica_wrote_it() -> None:
    old = TargetHealth(status="healthy", load=1.0, updated_at=100.0)
    new = TargetHealth(status="unhealthy", load=2.0, updated_at=105.0)
    for records in ({"us-east-1@a": old, "us-east-1@b": new}, {"us-east-1@b": new, "us-east-1@a": old}):
        assert merge(records, KNOWN, silent_after_grace=True)["us-east-1"] == new


def test_records_of_the_same_time_agree_whatever_their_order() -> None:
    a = TargetHealth(status="healthy", updated_at=100.0)
    b = TargetHealth(status="unhealthy", updated_at=100.0)
    one = merge({"eu-west-1@a": a, "eu-west-1@b": b}, KNOWN, True)["eu-west-1"]
    other = merge({"eu-west-1@b": b, "eu-west-1@a": a}, KNOWN, True)["eu-west-1"]
    assert one == other == b


def test_one_health_per_known_site_and_nothing_else() -> None:
    records = {"us-east-1@a": TargetHealth(status="healthy", updated_at=1.0),
               "not-configured@a": TargetHealth(status="healthy", updated_at=1.0)}
    out = merge(records, KNOWN, silent_after_grace=True)
    assert list(out) == KNOWN


def test_a_site_without_a_record_is_unknown_during_the_grace_and_silent_after() -> None:
    during = merge({}, KNOWN, silent_after_grace=False)
    assert {h.status for h in during.values()} == {"unknown"}
    after = merge({}, KNOWN, silent_after_grace=True)
    assert {h.status for h in after.values()} == {"silent"}
    assert after["oc-lon-1"].capacity is None and after["oc-lon-1"].detail


def test_during_the_grace_a_site_the_last_table_had_silent_stays_silent() -> None:
    previous = {"oc-lon-1": "silent", "eu-west-1": "unhealthy"}
    out = merge({}, KNOWN, silent_after_grace=False, previous=previous)
    assert out["oc-lon-1"].status == "silent"  # no traffic back to a site nobody hears from
    assert out["eu-west-1"].status == "unknown"
    assert out["us-east-1"].status == "unknown"
    # A record, however old, beats the grace and the previous table.
    rec = TargetHealth(status="healthy", updated_at=1.0)
    assert merge({"oc-lon-1@a": rec}, KNOWN, False, previous)["oc-lon-1"] == rec
