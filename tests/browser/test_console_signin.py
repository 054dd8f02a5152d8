"""Token sign-in in a real browser: ``steering controller --http-addr`` with an ``auth`` tokens file on a real
etcd. The page asks for a token when the API answers 401, keeps it for the tab, sends it as a bearer token,
refuses a wrong one, shows a viewer's 403 when it tries to act, and forgets the token on sign-out."""

from __future__ import annotations

import re
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from steering.etcdproc import EtcdCluster
from tests.support.controller import ControllerProcess, write_config
from tests.support.pki import OPERATOR, VIEWER, tokens_file
from tests.support.ports import free_port
from tests.support.wait import eventually_sync

TOKEN_KEY = "steering.console.token"


def _answers(url: str, token: str) -> bool:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=2) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


@pytest.fixture
def console(etcd: EtcdCluster, tmp_path: Path) -> Iterator[str]:
    """The console's URL on a controller with auth on (no agents: its regions stay unknown, which is enough)."""
    port = free_port()
    config = write_config(tmp_path / "steering.yaml", etcd.endpoints,
                          {"auth": {"tokens_file": str(tokens_file(tmp_path / "tokens.yaml"))}})
    proc = ControllerProcess(tmp_path, config, extra=["--http-addr", f"127.0.0.1:{port}"])
    base = f"http://127.0.0.1:{port}/"
    try:
        def up() -> bool:
            assert proc.proc.poll() is None, proc.log_path.read_text()[-2000:]
            return _answers(base + "api/v1/table", VIEWER)

        eventually_sync(up, 30, "the controller to serve a table over HTTP")
        yield base
    finally:
        proc.stop()


def test_sign_in_with_a_token_and_sign_out(console: str, page: Page, shot: Any) -> None:
    page.goto(console)
    form = page.locator("#signin")
    expect(form).to_be_visible()
    expect(page.locator("#view-overview")).to_be_hidden()
    shot(page, "signin")

    token = page.get_by_label("Access token")
    token.fill("not-a-token-at-all")
    token.press("Enter")
    expect(page.locator("#signin-error")).to_contain_text("invalid bearer token")
    assert page.evaluate(f"sessionStorage.getItem('{TOKEN_KEY}')") is None
    shot(page, "refused-token")

    token.fill(VIEWER)
    page.get_by_role("button", name="Sign in").click()
    expect(form).to_be_hidden()
    for name in ("us-east-1", "us-west-2", "eu-west-1"):
        expect(page.locator(f'#regions tr[data-region="{name}"]')).to_be_visible()
    expect(page.locator("#table-version")).to_have_text(re.compile(r"^v\d+$"))
    expect(page.locator("#conn")).to_have_text("Live")
    assert page.evaluate(f"sessionStorage.getItem('{TOKEN_KEY}')") == VIEWER
    shot(page, "signed-in")

    # A viewer may look, not act: the 403 is shown with the token's name and role.
    page.get_by_role("link", name="Actions").click()
    page.get_by_label("Reason").fill("browser test")
    page.get_by_role("button", name="Preview").click()
    refusal = page.locator("#action-refusal")
    expect(refusal).to_contain_text("role may not act")
    expect(refusal).to_contain_text("grafana")
    shot(page, "viewer-refused")

    page.reload()  # the token lives as long as the tab
    expect(page.locator("#conn")).to_have_text("Live")
    expect(form).to_be_hidden()

    page.get_by_role("button", name="Sign out").click()
    expect(form).to_be_visible()
    assert page.evaluate(f"sessionStorage.getItem('{TOKEN_KEY}')") is None
    shot(page, "signed-out")

    # An operator's token can act: its preview comes back.
    token.fill(OPERATOR)
    token.press("Enter")
    expect(form).to_be_hidden()
    page.get_by_role("link", name="Actions").click()
    page.get_by_label("Region", exact=True).select_option("eu-west-1")
    page.get_by_label("Reason").fill("browser test")
    page.get_by_role("button", name="Preview").click()
    expect(page.locator("#confirm-form")).to_be_visible()
    expect(page.get_by_label("Type eu-west-1 to confirm")).to_be_focused()
