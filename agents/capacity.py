"""Capacity and load: fixed numbers, or read from an HTTP endpoint.

The extraction is pure (``from_json``, ``from_prometheus``); ``Readings``
does the fetching, once per URL per round even when capacity and load come
from the same endpoint, and keeps the last good value when a read fails (a
hiccup of the stats endpoint should not make the site look empty).
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Mapping
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from agents import httpget
from agents.config import Reading


class ReadingError(Exception):
    """The endpoint answered, but not with the number we were told to find."""


def from_json(body: bytes | str, path: str) -> float:
    """The number at a dotted path: ``from_json(b'{"a": [{"b": 3}]}', "a.0.b") == 3.0``."""
    try:
        node: Any = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ReadingError(f"not JSON: {exc}") from None
    walked = []
    for part in path.split("."):
        walked.append(part)
        where = ".".join(walked)
        if isinstance(node, dict):
            if part not in node:
                raise ReadingError(f"{where}: no such field")
            node = node[part]
        elif isinstance(node, list):
            if not part.lstrip("-").isdigit() or not -len(node) <= int(part) < len(node):
                raise ReadingError(f"{where}: not an index of a list of {len(node)}")
            node = node[int(part)]
        else:
            raise ReadingError(f"{where}: cannot descend into {type(node).__name__}")
    if isinstance(node, bool) or not isinstance(node, (int, float, str)):
        raise ReadingError(f"{path}: {node!r} is not a number")
    try:
        value = float(node)
    except ValueError:
        raise ReadingError(f"{path}: {node!r} is not a number") from None
    return _finite(value, path)


def from_prometheus(text: str, metric: str, labels: Mapping[str, str] | None = None) -> float:
    """The sum of the samples named ``metric`` whose labels include ``labels``."""
    wanted = dict(labels or {})
    total = 0.0
    found = 0
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name != metric:
                    continue
                if all(sample.labels.get(k) == v for k, v in wanted.items()):
                    total += sample.value
                    found += 1
    except ValueError as exc:
        raise ReadingError(f"not Prometheus text: {exc}") from None
    if not found:
        sel = ",".join(f'{k}="{v}"' for k, v in sorted(wanted.items()))
        raise ReadingError(f"no sample {metric}{{{sel}}}" if sel else f"no sample {metric}")
    return _finite(total, metric)


def _finite(value: float, what: str) -> float:
    if math.isnan(value) or math.isinf(value):
        raise ReadingError(f"{what}: {value} is not a finite number")
    if value < 0:
        raise ReadingError(f"{what}: {value} is negative")
    return value


def extract(reading: Reading, body: bytes) -> float:
    if reading.json_path is not None:
        value = from_json(body, reading.json_path)
    else:
        assert reading.metric is not None
        value = from_prometheus(body.decode("utf-8", "replace"), reading.metric, reading.labels)
    return value * reading.scale


class Readings:
    """The current value of each named reading, refreshed by ``refresh()``."""

    def __init__(self, readings: Mapping[str, Reading]) -> None:
        self._readings = dict(readings)
        self.values: dict[str, float] = {
            name: r.value * r.scale for name, r in self._readings.items() if r.value is not None
        }
        self.errors: dict[str, str] = {}

    async def refresh(self) -> dict[str, str]:
        """Fetch every URL once; returns the errors of this round by reading name."""
        by_url: dict[str, list[str]] = {}
        for name, r in self._readings.items():
            if r.url is not None:
                by_url.setdefault(r.url, []).append(name)
        if not by_url:
            return {}
        urls = list(by_url)
        timeouts = [max(self._readings[n].timeout_seconds for n in by_url[u]) for u in urls]
        bodies = await asyncio.gather(*(self._fetch(u, t) for u, t in zip(urls, timeouts, strict=True)))
        errors: dict[str, str] = {}
        for url, body in zip(urls, bodies, strict=True):
            for name in by_url[url]:
                if isinstance(body, str):
                    errors[name] = body
                    continue
                try:
                    self.values[name] = extract(self._readings[name], body)
                except ReadingError as exc:
                    errors[name] = f"{url}: {exc}"
        self.errors = errors
        return errors

    @staticmethod
    async def _fetch(url: str, timeout: float) -> bytes | str:
        try:
            response = await asyncio.wait_for(httpget.get(url), timeout)
        except TimeoutError:
            return f"{url}: timeout after {timeout:g}s"
        except httpget.HttpError as exc:
            return f"{url}: {exc}"
        if response.status != 200:
            return f"{url}: status {response.status}"
        return response.body

    def get(self, name: str) -> float | None:
        return self.values.get(name)
