"""Isolation of health writes: pure rules the ingest's writer applies before and after a batched write.

One site's record must never hold back the others. So a record is sized
before it is written (etcd refuses requests over ``--max-request-bytes``,
1.5 MiB by default), and a batch that etcd refuses for what it contains is
split in halves and retried until the culprit is alone; the culprit is then
written without its free text (status, capacity and load still count) or,
if even that is refused, dropped and reported. A batch that fails because
etcd is unreachable is not split: every value in it waits for the retry.
"""

from __future__ import annotations

import json

from steering import limits
from steering.model import TargetHealth

# Errors etcd gives for what a request carries (gRPC status and etcd's messages, as the store quotes them):
# "request is too large", "too many operations in txn request", a message over the server's gRPC limit.
_CONTENT_ERRORS = ("INVALID_ARGUMENT", "too large", "larger than max", "too many operations")
_NOT_CONTENT = ("space exceeded", "NOSPACE")  # etcd's quota alarm refuses every write alike


def record_bytes(health: TargetHealth) -> int:
    """The size of the record as the store encodes it (compact JSON)."""
    return len(json.dumps(health.to_dict(), separators=(",", ":"), sort_keys=True).encode())


def too_large(health: TargetHealth) -> bool:
    return record_bytes(health) > limits.MAX_HEALTH_RECORD_BYTES


def stripped(health: TargetHealth, why: str) -> TargetHealth:
    """The record without its free text: what the planner needs (status, capacity, load, time) survives."""
    return TargetHealth(status=health.status, capacity=health.capacity, load=health.load,
                        updated_at=health.updated_at, detail=why)


def refused_for_content(exc: BaseException) -> bool:
    """Did etcd refuse the request for what it carries (split it), rather than fail to take any (retry)?"""
    text = str(exc)
    if any(s in text for s in _NOT_CONTENT):
        return False
    return any(s in text for s in _CONTENT_ERRORS)


def halves(batch: dict[str, TargetHealth | None]) -> tuple[dict[str, TargetHealth | None], dict[str, TargetHealth | None]]:
    items = list(batch.items())
    mid = len(items) // 2
    return dict(items[:mid]), dict(items[mid:])
