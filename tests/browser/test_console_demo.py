"""The console in a real browser against ``steering demo`` as a user runs it (a subprocess on free loopback
ports, ``--http-port`` too): the overview and live table version, a broken region turning red, an evacuation
through the console changing real DNS answers, a refused evacuation showing its rule.

The tests share one demo (starting it is most of their time); each puts back what it changed, and waits
until the demo's table shows it, before it ends.
"""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import dns.message
import dns.query
import pytest
from playwright.sync_api import Page, expect

from tests.support.demo import DemoRun
from tests.support.wait import eventually_sync

EUROPE_CLIENT = "127.3.0.1"  # the demo's europe geo (deploy/examples/steering.yaml prefixes)
EU_WEST_1 = "192.0.2.30"  # eu-west-1's address for api.example.test.
LIVE_CEILING = 10.0  # issue #14 wants a new table on the page within a second: printed, this is only the ceiling
BREAK_SECONDS = 2.0  # issue #14: breaking a region turns it red within two seconds
MARKUP_REASON = 'eu peering <img src=x onerror="window.pwned=1"> incident'


class Demo:
    def __init__(self, run: DemoRun, info: dict[str, Any]) -> None:
        self.run = run
        self.url: str = info["console_url"]
        self.api = self.url.rstrip("/") + "/api/v1"

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.api + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"} if data else {})
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")

    def status(self) -> dict[str, Any]:
        code, body = self.call("GET", "/status")
        assert code == 200, body
        return dict(body)

    def region(self, name: str) -> dict[str, Any]:
        return next(r for r in self.status()["regions"] if r["region"] == name)

    def settled(self, name: str, health: str = "healthy") -> None:
        """Until the region is of this health, serving and not evacuated in the table."""
        def ok() -> bool:
            r = self.region(name)
            return r["health"] == health and r["serving"] and not r["evacuation"]

        eventually_sync(ok, 30, f"{name} {health}, serving and not evacuated")

    def restore_now(self, region: str) -> None:
        code, body = self.call("DELETE", f"/evacuations/{region}?mode=now&reason=browser+test+cleanup")
        assert code in (200, 409), body  # 409 not_evacuated: nothing to put back
        self.settled(region)

    def europe_addresses(self) -> frozenset[str]:
        q = dns.message.make_query("api.example.test.", "A")
        r = dns.query.udp(q, "127.0.0.1", port=self.run.dns_port, timeout=1.0, source=EUROPE_CLIENT)
        return frozenset(rd.address for rrset in r.answer for rd in rrset)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    run = DemoRun.start(tmp_path_factory.mktemp("console-demo"))  # with --http-port on free ports
    try:
        d = Demo(run, run.up())
        for r in ("us-east-1", "us-west-2", "eu-west-1"):
            d.settled(r)
        yield d
    finally:
        run.close()


def region_row(page: Page, name: str) -> Any:
    return page.locator(f'#regions tr[data-region="{name}"]')


def test_the_overview_shows_every_region_and_the_live_table_version(demo: Demo, page: Page, shot: Any) -> None:
    page.goto(demo.url)
    for name in ("us-east-1", "us-west-2", "eu-west-1"):
        expect(region_row(page, name)).to_contain_text("healthy")
    for site in ("oc-nyc-1", "oc-lon-1"):
        expect(page.locator(f'#sites tr[data-site="{site}"]')).to_contain_text("us-east-1" if site == "oc-nyc-1"
                                                                                else "eu-west-1")
    expect(page.locator("#conn")).to_have_text("Live")
    expect(page.locator("#banner")).to_be_hidden()
    status = demo.status()
    expect(page.locator("#table-leader")).to_have_text(status["table"]["leader"])
    expect(page.locator("#table-version")).to_have_text(f"v{status['table']['version']}")
    shot(page, "overview")

    # A new table (more load reported) shows as soon as the API has it (issue #14: within a second; the time
    # is printed, the wait's ceiling is generous: a loaded 2-core machine is not the claim under test).
    before = status["table"]["version"]
    load = next(r["load"] for r in status["regions"] if r["region"] == "us-east-1")
    done = demo.run.command("load", "us-east-1", str(int(load) + 700))
    assert done.returncode == 0, done.stderr
    try:
        newer = eventually_sync(lambda: (v := demo.status()["table"]["version"]) > before and v, 30,
                                "a new table version")
        seen = time.monotonic()
        page.wait_for_function("v => Number(document.getElementById('table-version').textContent.slice(1)) >= v",
                               arg=newer, timeout=LIVE_CEILING * 1000)
        print(f"table v{newer} on the page {time.monotonic() - seen:.2f} s after the API answered with it")
    finally:
        demo.run.command("load", "us-east-1", str(int(load)))

    page.get_by_role("link", name="Traffic").click()
    matrix = page.locator('table.matrix[data-service="api.example.test."]')
    expect(matrix.locator('tr[data-geo="europe"] td[data-target="eu-west-1"]')).to_have_attribute("data-weight", "1000")
    expect(page.locator("#chart svg polyline").first).to_be_attached()
    shot(page, "traffic")
    page.get_by_role("link", name="Timeline").click()
    expect(page.locator("#timeline li").first).to_be_visible()
    page.get_by_label("Kind").select_option("leader_elected")
    expect(page.locator("#timeline li")).not_to_have_count(0)
    for kind in page.locator("#timeline li").evaluate_all("items => items.map(i => i.dataset.kind)"):
        assert kind == "leader_elected"
    shot(page, "timeline")


def test_a_broken_region_turns_red_and_says_unhealthy(demo: Demo, page: Page, shot: Any) -> None:
    page.goto(demo.url)
    row = region_row(page, "us-west-2")
    expect(row).to_have_attribute("data-health", "healthy")
    try:
        done = demo.run.command("break", "us-west-2")
        assert done.returncode == 0, done.stderr
        broken = time.monotonic()
        expect(row).to_have_attribute("data-health", "unhealthy", timeout=BREAK_SECONDS * 1000)
        print(f"us-west-2 red on the page {time.monotonic() - broken:.2f} s after `steering demo break` returned")
        health = row.locator("td.health")
        expect(health).to_have_text("✗ unhealthy")
        assert health.evaluate("c => getComputedStyle(c).color") == "rgb(164, 22, 26)"  # --bad: red
        expect(row.locator("td.why")).to_contain_text("503")  # why: the simulated frontend's answer
        shot(page, "broken")
    finally:
        demo.run.command("heal", "us-west-2")
        demo.settled("us-west-2")
    expect(row).to_have_attribute("data-health", "healthy", timeout=LIVE_CEILING * 1000)


def test_an_evacuation_through_the_console_changes_real_dns_answers(demo: Demo, page: Page, shot: Any) -> None:
    # europe is served by eu-west-1 once the demo has settled (run alone, this test may start before)
    eventually_sync(lambda: EU_WEST_1 in demo.europe_addresses(), 60, "europe's clients on eu-west-1")
    page.goto(demo.url + "#actions")
    try:
        page.get_by_label("Evacuate a region").check()
        page.get_by_label("Region", exact=True).select_option("eu-west-1")
        page.get_by_label("Pace").select_option("now")
        page.get_by_label("Reason").fill("browser test: kernel upgrade")
        page.get_by_role("button", name="Preview").click()
        changes = page.locator("#preview-changes")
        expect(changes.locator('tr[data-geo="europe"]').first).to_contain_text("eu-west-1 1000")
        expect(page.locator('#preview-regions tr[data-region="eu-west-1"]')).to_contain_text("0%")
        expect(page.locator('#preview-regions tr[data-region="us-east-1"]')).to_contain_text("within the hard limit")
        apply = page.get_by_role("button", name="Apply")
        expect(apply).to_be_disabled()
        confirm = page.get_by_label("Type eu-west-1 to confirm")
        confirm.fill("eu-west")
        expect(apply).to_be_disabled()
        confirm.fill("eu-west-1")
        expect(apply).to_be_enabled()
        shot(page, "preview")
        apply.click()
        expect(page.locator("#action-progress")).to_contain_text("Done: evacuate eu-west-1", timeout=15000)
        shot(page, "applied")

        def moved() -> frozenset[str] | None:
            found = demo.europe_addresses()
            return found if found and EU_WEST_1 not in found else None

        eventually_sync(moved, 15, "europe's DNS answers without eu-west-1")
        page.get_by_role("link", name="Overview").click()
        expect(region_row(page, "eu-west-1")).to_contain_text("not serving")
        expect(page.locator('#evacuations li[data-evacuation="eu-west-1"]')).to_contain_text("browser test")
        page.get_by_role("link", name="Timeline").click()
        expect(page.locator('#timeline li[data-kind="operator: evacuate"]').first).to_contain_text("eu-west-1")
        shot(page, "evacuated")

        # and back, through the console too
        page.get_by_role("link", name="Actions").click()
        page.get_by_label("Restore a region").check()
        page.get_by_label("Region", exact=True).select_option("eu-west-1")
        page.get_by_label("Pace").select_option("now")
        page.get_by_label("Reason").fill("browser test: upgrade done")
        page.get_by_role("button", name="Preview").click()
        page.get_by_label("Type eu-west-1 to confirm").fill("eu-west-1")
        page.get_by_role("button", name="Apply").click()
        expect(page.locator("#action-progress")).to_contain_text("Done: restore eu-west-1", timeout=15000)
        shot(page, "restored")
    finally:
        demo.restore_now("eu-west-1")  # (europe's traffic then ramps back at max_shift per step)


def test_a_refused_evacuation_shows_the_rule(demo: Demo, page: Page, shot: Any) -> None:
    code, body = demo.call("POST", "/evacuations", {"region": "us-west-2", "reason": "browser test", "mode": "now"})
    assert code == 201, body
    try:
        eventually_sync(lambda: demo.region("us-west-2")["evacuation"], 15, "us-west-2 evacuated")
        page.goto(demo.url + "#actions")
        page.get_by_label("Region", exact=True).select_option("eu-west-1")
        page.get_by_label("Reason").fill("browser test: one too many")
        page.get_by_role("button", name="Preview").click()
        refusal = page.locator("#action-refusal")
        expect(refusal).to_be_visible()
        expect(refusal.locator('li[data-rule="min_serving_regions"]')).to_contain_text("would leave 1 region(s)")
        expect(page.locator("#confirm-form")).to_be_hidden()  # nothing to confirm: the preview is what it would do
        # The receivers' projection: its numbers depend on where the earlier tests' ramps stand, so check that
        # the verdict agrees with them (us-east-1 takes europe's share: over the hard limit only when its
        # projected utilization is above it).
        row = page.locator('#preview-regions tr[data-region="us-east-1"]')
        expect(row).to_contain_text("the hard limit")
        cells = row.locator("td").all_inner_texts()
        after, hard, verdict = float(cells[1].rstrip("%")), float(cells[2].rstrip("%")), cells[3]
        assert verdict == ("over the hard limit" if after > hard else "within the hard limit"), cells
        shot(page, "refused")
        assert not demo.region("eu-west-1")["evacuation"], "nothing refused is written"
    finally:
        demo.restore_now("us-west-2")


def test_a_pin_and_unpin_through_the_console(demo: Demo, page: Page, shot: Any) -> None:
    page.goto(demo.url + "#actions")
    try:
        page.get_by_label("Pin a geo's weights").check()
        page.get_by_label("Service").select_option("api.example.test.")
        page.get_by_label("Geo", exact=True).select_option("europe")
        weights = page.locator("#action-weights")
        weights.get_by_label("us-east-1").fill("3")
        weights.get_by_label("us-west-2").fill("1")
        weights.get_by_label("eu-west-1").fill("0")
        page.get_by_label("Reason").fill(MARKUP_REASON)
        page.get_by_role("button", name="Preview").click()
        expect(page.locator('#preview-changes tr[data-geo="europe"]')).to_contain_text("us-east-1 750 · us-west-2 250")
        page.get_by_label("Type europe to confirm").fill("europe")
        shot(page, "pin-preview")
        page.get_by_role("button", name="Apply").click()
        expect(page.locator("#action-progress")).to_contain_text("Done: pin api.example.test. europe", timeout=15000)
        page.get_by_role("link", name="Traffic").click()
        row = page.locator('table.matrix[data-service="api.example.test."] tr[data-geo="europe"]')
        expect(row).to_contain_text("pinned")
        expect(row.locator('td[data-target="us-east-1"]')).to_have_attribute("data-weight", "750")
        shot(page, "pinned")
        # the reason comes back from the server as text: shown as typed, never run as markup
        page.get_by_role("link", name="Timeline").click()
        expect(page.locator('#timeline li[data-kind="operator: pin"]').first).to_contain_text(MARKUP_REASON)
        assert page.locator("#timeline img").count() == 0
        assert page.evaluate("window.pwned") is None

        page.get_by_role("link", name="Actions").click()
        page.get_by_label("Unpin a geo").check()
        page.get_by_label("Geo", exact=True).select_option("europe")
        page.get_by_label("Reason").fill("browser test: resolved")
        page.get_by_role("button", name="Preview").click()
        page.get_by_label("Type europe to confirm").fill("europe")
        page.get_by_role("button", name="Apply").click()
        expect(page.locator("#action-progress")).to_contain_text("Done: unpin api.example.test. europe", timeout=15000)
    finally:
        demo.call("DELETE", "/pins/api.example.test./europe?reason=browser+test+cleanup")
        eventually_sync(lambda: not demo.call("GET", "/pins")[1]["pins"], 15, "no pins left")


def tab_to(page: Page, what: str, limit: int = 25) -> None:
    """Press Tab until the focused element matches the selector ``what`` (a keyboard user's way there)."""
    for _ in range(limit):
        page.keyboard.press("Tab")
        if page.evaluate("s => document.activeElement && document.activeElement.matches(s)", what):
            outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
            assert outline not in ("none", ""), f"{what} has no visible focus"
            return
    raise AssertionError(f"{what} not reached with {limit} Tab presses")


def test_the_console_works_from_the_keyboard(demo: Demo, page: Page, shot: Any) -> None:
    page.goto(demo.url)
    expect(page.locator("#conn")).to_have_text("Live")
    tab_to(page, 'nav a[href="#actions"]')
    page.keyboard.press("Enter")
    expect(page.locator("#view-actions")).to_be_visible()
    tab_to(page, "#action-region")
    page.keyboard.press("End")  # the last region of the list, eu-west-1 in the demo
    tab_to(page, "#action-reason")
    page.keyboard.type("keyboard test")
    tab_to(page, "#action-preview")
    page.keyboard.press("Enter")
    confirm = page.locator("#confirm-input")
    expect(confirm).to_be_focused()  # the preview is shown and the typed confirmation has the focus
    word = page.locator("#confirm-word").inner_text()
    page.keyboard.type(word)
    expect(page.get_by_role("button", name="Apply")).to_be_enabled()
    shot(page, "keyboard-confirm")
    tab_to(page, "#action-cancel")
    page.keyboard.press("Enter")
    expect(page.locator("#action-result")).to_be_hidden()
    expect(page.locator("#action-preview")).to_be_focused()
    assert not any(r["evacuation"] for r in demo.status()["regions"]), "nothing was applied"


def test_the_banner_says_when_the_stream_is_gone(demo: Demo, page: Page, shot: Any) -> None:
    """Last: it stops the controller that serves the page, then starts it again."""
    page.goto(demo.url)
    expect(page.locator("#conn")).to_have_text("Live")
    pid = demo.run.pids()["controller-1"]
    os.kill(pid, signal.SIGTERM)
    banner = page.locator("#banner")
    expect(banner).to_contain_text("disconnected", timeout=10000)
    expect(page.locator("#conn")).to_have_text("Disconnected")
    shot(page, "disconnected")
    started = time.monotonic()
    done = demo.run.command("restart", "controller-1")
    assert done.returncode == 0, done.stderr
    expect(page.locator("#conn")).to_have_text("Live", timeout=30000)
    expect(banner).to_be_hidden()
    print(f"reconnected {time.monotonic() - started:.1f} s after the restart began")
    shot(page, "reconnected")

