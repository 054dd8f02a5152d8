"""Waiting for a condition, never for the clock: the one polling helper of the tests.

``eventually(condition, timeout, what)`` calls ``condition`` until it returns something truthy and returns
that value; ``condition`` may be a plain function or return an awaitable (an ``async def``). After
``timeout`` seconds it fails the test with an ``AssertionError`` naming ``what`` and the last value seen.
An exception from ``condition`` ends the wait at once (a process that exited should fail the test now),
unless its type is listed in ``ignoring`` (a query timing out while a server restarts).

``eventually_sync`` is the same helper for tests that have no event loop (subprocess tests): it sleeps
with ``time.sleep`` and refuses an async condition.

The condition is always checked once more after the deadline passes, so a slow machine fails only
when nothing moved. Intervals are short: waiting costs only what the condition takes to come true.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from typing import Any

INTERVAL = 0.02


def _timed_out(what: str, timeout: float, last: Any) -> AssertionError:
    return AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")


async def eventually(condition: Callable[[], Any], timeout: float = 10.0, what: str = "condition", *,
                     interval: float = INTERVAL, ignoring: tuple[type[BaseException], ...] = ()) -> Any:
    """Poll ``condition`` (sync or async) until truthy; return its value, or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            last = condition()
            if inspect.isawaitable(last):
                last = await last
        except ignoring as exc:
            last = exc
        else:
            if last:
                return last
        if time.monotonic() >= deadline:
            raise _timed_out(what, timeout, last)
        await asyncio.sleep(interval)


def eventually_sync(condition: Callable[[], Any], timeout: float = 10.0, what: str = "condition", *,
                    interval: float = INTERVAL, ignoring: tuple[type[BaseException], ...] = ()) -> Any:
    """``eventually`` for code without an event loop: the same contract, blocking between polls."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            last = condition()
            if inspect.isawaitable(last):
                raise TypeError(f"eventually_sync got an awaitable from {condition!r}: use eventually")
        except ignoring as exc:
            last = exc
        else:
            if last:
                return last
        if time.monotonic() >= deadline:
            raise _timed_out(what, timeout, last)
        time.sleep(interval)
