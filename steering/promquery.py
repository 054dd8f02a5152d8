"""Prometheus guards of a drill: ask a Prometheus whether an alert fires or a query returns anything.

The alerting rule's semantics: a query is true when it returns at least one series (its first sample's
value is recorded); ``--abort-on-alert NAME`` is the query ``ALERTS{alertname="NAME",alertstate="firing"}``.
One instant query per guard over the HTTP API (``/api/v1/query``) with the standard library, in a thread;
anything but a successful answer (no connection, a timeout, an error status, a body that is not the API's)
raises ``PrometheusError`` and counts as "unreachable" (docs/drills.md).
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

MAX_QUERY = 1000
MAX_BODY = 1 << 20
_ALERT = re.compile(r"^[A-Za-z_:][A-Za-z0-9_:]{0,199}$")


class PrometheusError(Exception):
    """Prometheus did not answer the query usefully."""


def check_alert(field: str, name: str) -> str:
    if not _ALERT.match(name or ""):
        raise ValueError(f"{field}: {name[:40]!r} is not an alert name (letters, digits, '_' and ':')")
    return name


def check_query(field: str, promql: str) -> str:
    if not promql or not promql.strip():
        raise ValueError(f"{field}: empty")
    if len(promql) > MAX_QUERY:
        raise ValueError(f"{field}: {len(promql)} characters; at most {MAX_QUERY}")
    if any(ord(c) < 32 for c in promql):
        raise ValueError(f"{field}: control characters")
    return promql


def alert_query(name: str) -> str:
    return f'ALERTS{{alertname="{name}",alertstate="firing"}}'


def _get(url: str, promql: str, timeout: float) -> Any:
    full = f"{url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    try:
        with urllib.request.urlopen(full, timeout=timeout) as resp:
            body = resp.read(MAX_BODY + 1)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise PrometheusError(f"{url}: {getattr(exc, 'reason', exc)}") from None
    if len(body) > MAX_BODY:
        raise PrometheusError(f"{url}: answer larger than {MAX_BODY} bytes")
    try:
        return json.loads(body)
    except ValueError:
        raise PrometheusError(f"{url}: answer is not JSON") from None


def first_value(answer: Any) -> float | None:
    """The value of the first series of an instant query's answer; None when it returned nothing."""
    if not isinstance(answer, dict) or answer.get("status") != "success":
        raise PrometheusError(f"query failed: {str(answer.get('error', answer) if isinstance(answer, dict) else answer)[:200]}")
    data = answer.get("data")
    if not isinstance(data, dict):
        raise PrometheusError("answer has no data")
    result = data.get("result")
    if data.get("resultType") == "scalar" and isinstance(result, list) and len(result) == 2:
        v = _number(result[1])
        return v if v != 0 else None
    if not isinstance(result, list):
        raise PrometheusError("answer's result is not a list")
    if not result:
        return None
    sample = result[0].get("value") if isinstance(result[0], dict) else None
    if not isinstance(sample, list) or len(sample) != 2:
        raise PrometheusError("answer's first series has no value")
    return _number(sample[1])


def _number(text: Any) -> float:
    try:
        v = float(text)
    except (TypeError, ValueError):
        raise PrometheusError(f"value {str(text)[:40]!r} is not a number") from None
    return v if math.isfinite(v) else 0.0


async def query(url: str, promql: str, timeout: float) -> float | None:
    """The first value ``promql`` returns (None: no series, the guard is false); PrometheusError otherwise."""
    return first_value(await asyncio.to_thread(_get, url, promql, timeout))


async def evaluate(url: str, timeout: float, alerts: tuple[str, ...],
                   queries: tuple[str, ...]) -> dict[str, tuple[float, bool]]:
    """Every Prometheus guard of a drill: label (``alert:NAME``, ``query:PROMQL``) -> (value, true?).
    PrometheusError when any of them cannot be asked."""
    asked = [(f"alert:{a}", alert_query(a)) for a in alerts] + [(f"query:{q}", q) for q in queries]
    values = await asyncio.gather(*(query(url, promql, timeout) for _, promql in asked))
    return {label: (v if v is not None else 0.0, v is not None) for (label, _), v in zip(asked, values, strict=True)}
