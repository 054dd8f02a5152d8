"""The boto3 adapter: the only module here that talks to Route 53.

Synchronous on purpose (boto3 is); the sink runs it in a thread. It adds what
boto3 does not give us the way we want it:

* a token bucket, so we stay under ``max_requests_per_second`` (Route 53
  allows 5 requests/s per account; external-dns #1293);
* retries of ``Throttling`` and ``PriorRequestNotComplete`` (and dropped
  connections) with exponential backoff and full jitter, counted in metrics;
  botocore's own retries are off so every attempt is visible and rate-limited;
* complete reads: ListResourceRecordSets is followed by (name, type,
  identifier) and a token seen twice is an error, never an endless loop
  (moto repeats tokens; docs/dependencies.md);
* a change counts as done only when GetChange says INSYNC;
* a rejected batch (InvalidChangeBatch, InvalidInput, ...) raises
  ``ChangeRejected`` at once: retrying it cannot help.

Credentials come from boto3's standard chain (env, profile, instance role).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import boto3
import botocore.config
import botocore.exceptions

from steering import logs
from steering.route53 import metrics

RETRYABLE = frozenset({"Throttling", "ThrottlingException", "PriorRequestNotComplete", "RequestLimitExceeded",
                       "ServiceUnavailable", "InternalFailure"})
THROTTLE_CODES = frozenset({"Throttling", "ThrottlingException", "RequestLimitExceeded"})

log = logs.get(__name__)


class Route53Error(Exception):
    """Route 53 could not be read or written (after retries)."""


class ChangeRejected(Route53Error):
    """Route 53 refused a change batch; nothing of that batch was applied."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        self.message = message
        super().__init__(f"{code}: {message}")


class PaginationError(Route53Error):
    """ListResourceRecordSets handed out the same page token twice."""


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 8
    base_seconds: float = 0.2
    max_seconds: float = 20.0
    insync_timeout_seconds: float = 300.0
    poll_seconds: float = 2.0
    page_size: int = 300


class TokenBucket:
    """At most ``rate`` acquisitions per second on average, bursts up to ``burst``; thread-safe."""

    def __init__(self, rate: float, burst: float | None = None, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self.burst = burst if burst is not None else max(1.0, rate)
        self._tokens = self.burst
        self._clock = clock
        self._sleep = sleep
        self._last = clock()
        self._lock = threading.Lock()

    def acquire(self) -> float:
        """Take one token, sleeping until there is one; returns the seconds waited."""
        waited = 0.0
        while True:
            with self._lock:
                now = self._clock()
                self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
                self._last = now
                if self._tokens >= 1.0 - 1e-9:  # float dust must not turn into endless tiny sleeps
                    self._tokens = max(0.0, self._tokens - 1.0)
                    return waited
                need = (1.0 - self._tokens) / self.rate
            self._sleep(need)
            waited += need


class Route53Client:
    def __init__(self, hosted_zone_id: str, *, region: str = "us-east-1", endpoint_url: str | None = None,
                 max_requests_per_second: float = 5.0, retry: RetryPolicy = RetryPolicy(),
                 client: Any = None, sleep: Callable[[float], None] = time.sleep,
                 rng: random.Random | None = None) -> None:
        self.zone_id = hosted_zone_id if hosted_zone_id.startswith("/") else f"/hostedzone/{hosted_zone_id}"
        self.retry = retry
        self._sleep = sleep
        self._rng = rng or random.Random()
        self.bucket = TokenBucket(max_requests_per_second, sleep=sleep)
        if client is None:
            cfg = botocore.config.Config(retries={"total_max_attempts": 1, "mode": "standard"},
                                         connect_timeout=5, read_timeout=30)
            client = boto3.session.Session().client("route53", region_name=region, endpoint_url=endpoint_url,
                                                    config=cfg)
        self._client = client
        self._zone_name: str | None = None

    # ---- one call, with rate limit and retries

    def call(self, operation: str, **params: Any) -> Mapping[str, Any]:
        attempt = 0
        while True:
            self.bucket.acquire()
            metrics.API_CALLS.labels(operation).inc()
            try:
                response: Mapping[str, Any] = getattr(self._client, _snake(operation))(**params)  # boto3: untyped
                return response
            except botocore.exceptions.ClientError as exc:
                err = exc.response.get("Error", {})
                code = str(err.get("Code", "Unknown"))
                message = str(err.get("Message", ""))
                if code in THROTTLE_CODES:
                    metrics.THROTTLES.inc()
                if code not in RETRYABLE:
                    metrics.ERRORS.labels(code).inc()
                    if operation == "ChangeResourceRecordSets" and code in ("InvalidChangeBatch", "InvalidInput",
                                                                            "NoSuchHostedZone"):
                        raise ChangeRejected(code, message) from None
                    raise Route53Error(f"{operation}: {code}: {message}") from None
                problem = f"{code}: {message}"
            except (botocore.exceptions.ConnectionError, botocore.exceptions.HTTPClientError) as exc:
                problem = f"{type(exc).__name__}: {exc}"
            attempt += 1
            if attempt >= self.retry.attempts:
                metrics.ERRORS.labels("retries_exhausted").inc()
                raise Route53Error(f"{operation}: gave up after {attempt} attempts, last: {problem}")
            delay = self._rng.uniform(0, min(self.retry.max_seconds, self.retry.base_seconds * 2 ** attempt))
            log.warning("route53.retry", operation=operation, attempt=attempt, delay=round(delay, 3),
                        problem=problem, zone=self.zone_id)
            self._sleep(delay)

    # ---- reads

    def zone_name(self) -> str:
        if self._zone_name is None:
            out = self.call("GetHostedZone", Id=self.zone_id)
            name = str(out["HostedZone"]["Name"]).lower()
            self._zone_name = name if name.endswith(".") else name + "."
        return self._zone_name

    def list_records(self) -> list[dict[str, Any]]:
        """Every record set of the zone, following NextRecord{Name,Type,Identifier} to the end."""
        params: dict[str, Any] = {"HostedZoneId": self.zone_id, "MaxItems": str(self.retry.page_size)}
        seen: set[tuple[str, str, str]] = set()
        out: list[dict[str, Any]] = []
        while True:
            page = self.call("ListResourceRecordSets", **params)
            out.extend(page.get("ResourceRecordSets", []))
            if not page.get("IsTruncated"):
                return out
            token = (str(page.get("NextRecordName", "")), str(page.get("NextRecordType", "")),
                     str(page.get("NextRecordIdentifier", "")))
            if not token[0] or token in seen:
                metrics.ERRORS.labels("pagination").inc()
                raise PaginationError(f"ListResourceRecordSets returned the page token {token} twice "
                                      f"(or none while truncated) after {len(out)} records; refusing to loop")
            seen.add(token)
            params = {"HostedZoneId": self.zone_id, "MaxItems": str(self.retry.page_size),
                      "StartRecordName": token[0], "StartRecordType": token[1]}
            if token[2]:
                params["StartRecordIdentifier"] = token[2]

    # ---- writes

    def change(self, changes: Sequence[Mapping[str, Any]], comment: str = "") -> str:
        """Submit one change batch and return its change id (not yet INSYNC)."""
        batch: dict[str, Any] = {"Changes": list(changes)}
        if comment:
            batch["Comment"] = comment[:256]
        out = self.call("ChangeResourceRecordSets", HostedZoneId=self.zone_id, ChangeBatch=batch)
        return str(out["ChangeInfo"]["Id"])

    def wait_insync(self, change_id: str) -> float:
        """Poll GetChange until INSYNC; returns the seconds it took; Route53Error on timeout."""
        start = time.monotonic()
        deadline = start + self.retry.insync_timeout_seconds
        while True:
            status = str(self.call("GetChange", Id=change_id)["ChangeInfo"]["Status"])
            if status == "INSYNC":
                return time.monotonic() - start
            if time.monotonic() >= deadline:
                metrics.ERRORS.labels("insync_timeout").inc()
                raise Route53Error(f"change {change_id} still {status} after "
                                   f"{self.retry.insync_timeout_seconds:g}s")
            self._sleep(self.retry.poll_seconds)


def _snake(operation: str) -> str:
    out = []
    for i, ch in enumerate(operation):
        if ch.isupper() and i:
            out.append("_")
        out.append(ch.lower())
    return "".join(out)
