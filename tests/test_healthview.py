"""``steering.controller.healthview``: what a replica writes for its agents, and when a site goes silent. Pure."""

from __future__ import annotations

import pytest

from steering.controller.healthview import HealthView, material_change
from steering.model import Status, TargetHealth

BAND = 0.05


def h(status: Status = "healthy", capacity: float | None = 1000.0, load: float | None = 500.0) -> TargetHealth:
    return TargetHealth(status=status, capacity=capacity, load=load)


@pytest.mark.parametrize(("old", "new", "changed"), [
    (None, h(), True),  # a first report is always written
    (h(), h(), False),
    (h("healthy"), h("unhealthy"), True),
    (h(capacity=None), h(capacity=1000.0), True),  # a capacity figure appears
    (h(capacity=1000.0), h(capacity=None), True),  # or goes back to the config's
    (h(capacity=1000.0), h(capacity=1050.0), False),  # 50 of a scale of 1050: within 5 %
    (h(capacity=1000.0), h(capacity=1060.0), True),  # 60 > 5 % of 1060
    (h(load=500.0), h(load=550.0), False),  # the scale is the largest figure (capacity 1000), not the load
    (h(load=500.0), h(load=560.0), True),
    (h(capacity=None, load=None), h(capacity=None, load=0.5), True),  # tiny figures: the scale is at least 1
    (h(capacity=None, load=None), h(capacity=None, load=0.05), False),
])
def test_material_change(old: TargetHealth | None, new: TargetHealth, changed: bool) -> None:
    assert material_change(old, new, BAND) is changed


def test_a_report_is_written_on_material_change_only() -> None:
    view = HealthView(band=BAND, silence_seconds=10.0)
    assert view.observe("us-east-1", h(), now=1.0) == h()
    assert view.observe("us-east-1", h(load=510.0), now=2.0) is None
    assert view.latest("us-east-1") == h(load=510.0)  # the latest report is kept even when not written
    assert view.observe("us-east-1", h("unhealthy"), now=3.0) == h("unhealthy")
    assert view.latest("elsewhere") is None


def test_small_drifts_are_compared_with_what_was_written_so_they_add_up() -> None:
    view = HealthView(band=BAND, silence_seconds=10.0)
    view.observe("s", h(load=500.0), now=0.0)
    written = [load for load in (530.0, 545.0, 560.0) if view.observe("s", h(load=load), now=1.0) is not None]
    assert written == [560.0]  # each step is within the band of the last, not of what was written


def test_silent_sites_are_those_not_heard_from_for_longer_than_the_timeout_and_are_forgotten() -> None:
    view = HealthView(band=BAND, silence_seconds=10.0)
    view.observe("b", h(), now=0.0)
    view.observe("a", h(), now=0.0)
    view.observe("c", h(), now=5.0)
    assert view.silent(now=10.0) == []  # exactly the timeout is not yet silent
    assert view.silent(now=10.5) == ["a", "b"]  # sorted
    assert view.latest("a") is None and view.latest("c") == h()
    assert view.silent(now=10.5) == []  # forgotten: reported once
    # A site that reports again after going silent is written again, even unchanged.
    assert view.observe("a", h(), now=11.0) == h()
