"""``OperatorLog``: operator actions applied once, with their audit (docs/architecture.md §4 and §6).

An action is one transaction: compare ``requests/<id>`` absent (and
``oplog/seq`` at the version the caller's checks read), then the override
puts and deletes, ``requests/<id>`` on a lease that expires, the audit record
and ``oplog/seq``. The etcd *version* of ``oplog/seq`` is the operator
sequence: it moves with every action, so a caller that compares it knows no
other action landed since its read.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from etcd3aio import SortOrder, SortTarget

from steering import logs
from steering.store.client import StoreError
from steering.store.codec import record_bytes
from steering.store.keys import RESERVED, Keys, range_end
from steering.store.kv import KV

log = logs.get(__name__)


class OverridesChanged(StoreError):
    """Another operator action landed between reading the overrides and writing: re-check and retry."""


def audit_id(now: float) -> str:
    """``<UTC time>-<12 hex>``: audit keys sort by time."""
    stamp = datetime.fromtimestamp(now, tz=UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    return f"{stamp}-{uuid.uuid4().hex[:12]}"


def check_change_keys(puts: Mapping[str, bytes], deletes: list[str]) -> None:
    """Refuse (ValueError) keys an operator action may not touch, and a key both put and deleted."""
    for rel in [*puts, *deletes]:
        if any(rel.startswith(r) for r in RESERVED):
            raise ValueError(f"key {rel!r}: operator actions cannot write under {rel.split('/')[0]}/")
    both = set(puts) & set(deletes)
    if both:
        raise ValueError(f"keys {sorted(both)}: both put and deleted in one action")


class OperatorLog:
    def __init__(self, kv: KV, keys: Keys, request_ttl: float) -> None:
        self.kv = kv
        self.keys = keys
        # Request ids are remembered for request_ttl (a retry comes within seconds, a stale one within days),
        # on a lease shared by the requests of a tenth of that period, never kept alive: they expire.
        self.request_ttl = request_ttl
        self._request_lease: tuple[int, float] | None = None  # (lease id, monotonic time it was granted)

    async def sequence(self) -> int:
        """The operator sequence now (0 before the first action)."""
        seq = await self.kv.get(self.keys.operator_seq)
        return int(seq.kvs[0].version) if seq.kvs else 0

    async def request_audit_id(self, request_id: str) -> str | None:
        """The audit id of the action applied with ``request_id``, if one was (and has not expired)."""
        resp = await self.kv.get(self.keys.request(request_id))
        return resp.kvs[0].value.decode() if resp.kvs else None

    async def _request_lease_id(self) -> int:
        now = time.monotonic()
        if self._request_lease is None or now - self._request_lease[1] > self.request_ttl / 10:
            self._request_lease = (await self.kv.grant(int(self.request_ttl)), now)
        return self._request_lease[0]

    async def apply(self, request_id: str, puts: Mapping[str, bytes], deletes: list[str],
                    audit: Mapping[str, Any], expect_seq: int | None = None) -> tuple[bool, str]:
        """See ``Store.apply_operator_action``."""
        req_key = self.keys.request(request_id)
        check_change_keys(puts, deletes)
        now = time.time()
        aid = audit_id(now)
        record = {"time": now, **dict(audit), "id": aid, "request_id": request_id}
        ops = self.kv.ops
        txn = [ops.txn_op_put(self.keys.rel(k), v) for k, v in puts.items()]
        txn += [ops.txn_op_delete(self.keys.rel(k)) for k in deletes]
        txn += [ops.txn_op_put(req_key, aid.encode(), lease=await self._request_lease_id()),
                ops.txn_op_put(self.keys.audit(aid), record_bytes(record)),
                ops.txn_op_put(self.keys.operator_seq, aid.encode())]
        compare = [ops.txn_compare_create_revision(req_key, 0)]
        if expect_seq is not None:
            compare.append(ops.txn_compare_version(self.keys.operator_seq, expect_seq))
        resp = await self.kv.txn(compare, txn, [ops.txn_op_get(req_key)])
        if resp.succeeded:
            log.info("operator_action_applied", request_id=request_id, audit_id=aid,
                     puts=sorted(puts), deletes=sorted(deletes))
            return True, aid
        kvs = resp.responses[0].response_range.kvs
        earlier = kvs[0].value.decode() if kvs else ""
        if earlier == aid:  # our own first attempt went through; its reply was lost
            return True, aid
        if not earlier:  # the request is new, so the sequence compare failed
            raise OverridesChanged("another operator action landed since the overrides were read")
        log.info("operator_action_repeated", request_id=request_id, audit_id=earlier)
        return False, earlier

    async def list_audit(self, limit: int = 50) -> list[dict[str, Any]]:
        """Audit records, newest first."""
        p = self.keys.audit_prefix
        resp = await self.kv.get(p, range_end(p), limit=max(0, limit), sort_order=SortOrder.DESCEND,
                                 sort_target=SortTarget.KEY)
        out = []
        for kv in resp.kvs:
            try:
                rec = json.loads(kv.value)
                if isinstance(rec, dict):
                    out.append(rec)
                    continue
                raise ValueError("not a JSON object")
            except ValueError as exc:
                log.warning("audit_record_unreadable", key=self.keys.strip(kv.key), error=str(exc))
        return out
