"""The REST API's refusals: one JSON shape, and the HTTP status each kind of refusal gets (pure).

Every error body is ``{"error": {"status", "code", "message", "field",
"rules"}, "preview"}``: ``field`` names the field at fault (or null),
``rules`` each safety rule that refused an action with its numbers, and
``preview`` what the refused action would have done (null when there is
none). docs/rest-api.md ("Errors") lists the codes.

The operator actions' refusals come from the same code as gRPC's
(``operator.ActionError``); the status follows the gRPC code:

| gRPC | HTTP | code |
|---|---|---|
| INVALID_ARGUMENT | 422 | ``invalid_value`` |
| FAILED_PRECONDITION (a safety rule) | 409 | ``refused`` |
| ABORTED (other actions kept landing) | 409 | ``conflict`` |
| UNAVAILABLE (etcd, no table yet) | 503 | ``unavailable`` |
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import grpc

from steering.controller.operator import ActionError
from steering.controller.safety import Refusal
from steering.store.client import StoreError


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, *, field: str = "",
                 rules: Sequence[Refusal] = (), preview: Mapping[str, Any] | None = None,
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field
        self.rules, self.preview, self.headers = tuple(rules), preview, dict(headers or {})

    def body(self) -> dict[str, Any]:
        return {"error": {"status": self.status, "code": self.code, "message": self.message,
                          "field": self.field or None,
                          "rules": [{"rule": r.rule, "message": r.message} for r in self.rules]},
                "preview": dict(self.preview) if self.preview is not None else None}


_BY_GRPC: dict[grpc.StatusCode, tuple[int, str]] = {
    grpc.StatusCode.INVALID_ARGUMENT: (422, "invalid_value"),
    grpc.StatusCode.FAILED_PRECONDITION: (409, "refused"),
    grpc.StatusCode.ABORTED: (409, "conflict"),
    grpc.StatusCode.UNAVAILABLE: (503, "unavailable"),
    grpc.StatusCode.NOT_FOUND: (404, "not_found"),
    grpc.StatusCode.UNAUTHENTICATED: (401, "unauthenticated"),
    grpc.StatusCode.PERMISSION_DENIED: (403, "forbidden"),
}


def status_of(code: grpc.StatusCode) -> tuple[int, str]:
    return _BY_GRPC.get(code, (500, "internal"))


def from_action(exc: ActionError, preview: Mapping[str, Any] | None) -> ApiError:
    status, code = status_of(exc.code)
    return ApiError(status, code, exc.message, field=exc.field, rules=exc.refusals, preview=preview,
                    headers=RETRY if status == 503 else None)


def from_store(exc: StoreError) -> ApiError:
    return ApiError(503, "unavailable", f"etcd: {exc}", headers=RETRY)


def from_value(exc: ValueError) -> ApiError:
    """A bound of ``steering.limits`` (``LimitError`` names its field) or a key component the store refuses."""
    return ApiError(422, "invalid_value", str(exc), field=str(getattr(exc, "field", "")))


RETRY = {"Retry-After": "1"}
