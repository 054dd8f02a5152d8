"""The browser tests of the console (docs/console.md): Playwright from PyPI driving Debian's chromium, headless,
against real processes on loopback. Marked ``browser`` (``make test-browser``; ``-m "not browser"`` leaves
them out). Never ``playwright install``: the browser is the system's ``/usr/bin/chromium`` (or
``$STEERING_CHROMIUM``), which ``make test`` installs; without it, or without playwright, these tests fail
and say what is missing.

Screenshots of each state go to ``$STEERING_BROWSER_ARTIFACTS`` or the session's pytest tmp dir
(``browser-artifacts/``); their paths are printed at the end of the run.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = os.environ.get("STEERING_CHROMIUM", "/usr/bin/chromium")
# The machine's network is closed: without these chromium waits on update, sync and QUIC probes.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

_saved: list[Path] = []


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "browser: drives the console in a real browser (make test-browser)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.browser)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _saved:
        terminalreporter.write_sep("-", "console screenshots")
        for p in _saved:
            terminalreporter.write_line(str(p))


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    # Missing parts fail, never skip: `make test` installs both, so a skip would only hide a broken setup.
    try:
        from playwright import sync_api
    except ImportError:
        pytest.fail("playwright is not installed: make test installs it (pip install -e '.[dev]')")
    if not (os.path.exists(CHROMIUM) or shutil.which(CHROMIUM)):
        pytest.fail(f"no chromium at {CHROMIUM}: make test installs Debian's (apt-get install chromium, as root), "
                    "or set STEERING_CHROMIUM")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


class Shots:
    """Screenshots named after the test and the state they show."""

    def __init__(self, directory: Path, test: str) -> None:
        self.directory, self.test, self.n = directory, test, 0

    def __call__(self, page: Any, state: str) -> Path:
        self.n += 1
        path = self.directory / f"{self.test}-{self.n:02d}-{state}.png"
        page.screenshot(path=str(path), full_page=True)
        _saved.append(path)
        print(f"screenshot: {path}")
        return path


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    given = os.environ.get("STEERING_BROWSER_ARTIFACTS")
    if given:
        path = Path(given)
        path.mkdir(parents=True, exist_ok=True)
        return path
    return tmp_path_factory.mktemp("browser-artifacts", numbered=False)


@pytest.fixture
def shot(artifacts: Path, request: pytest.FixtureRequest) -> Shots:
    return Shots(artifacts, request.node.name.removeprefix("test_"))


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh tab (its own sessionStorage); a script error on the page, or anything the page's
    Content-Security-Policy refused (an inline style or script would be), fails the test."""
    context = browser.new_context(viewport={"width": 1360, "height": 900})
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda e: errors.append(str(e)))
    tab.on("console", lambda m: errors.append(m.text) if m.type == "error" and "Content Security Policy" in m.text
           else None)
    try:
        yield tab
    finally:
        context.close()
    assert not errors, f"script errors on the page: {errors}"
