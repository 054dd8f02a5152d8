"""The OpenAPI 3.1 document at ``/api/v1/openapi.json``, built from the routes and schemas it describes (pure).

Each replica builds its own from its configuration: the regions, services
and geos it knows are enums, and the security scheme is there only when
``auth`` is configured. A test fuzzes the API from this document against a
real controller (tests/test_http_fuzz.py): no 5xx, every response matching
its schema.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from importlib import metadata
from typing import Any

from steering.http.routes import PREFIX, Route
from steering.http.schemas import Schema, ref

_ERRORS = {
    400: "Not a request this operation takes: malformed JSON, an unknown or missing field, a wrong type",
    401: "No bearer token, or an unknown one",
    403: "The token's role may not do this (or, without auth, the Host is not a loopback name)",
    404: "No such region, service, geo or table version",
    409: "Refused by a safety rule (named in `error.rules`, with its numbers and the preview), or other "
         "actions kept landing at the same time",
    413: "The body is too large",
    415: "The body is not application/json",
    422: "A value out of bounds or not known",
    503: "etcd cannot be reached, or the controller follows no table yet",
}


def _version() -> str:
    try:
        return metadata.version("steering")
    except metadata.PackageNotFoundError:
        return "0"


def _parameter(p: Any) -> dict[str, Any]:
    out = {"name": p.name, "in": p.where, "required": p.required or p.where == "path", "schema": p.schema}
    if p.description:
        out["description"] = p.description
    return out


def _json(schema: Schema) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _operation(route: Route, bearer: bool) -> dict[str, Any]:
    op: dict[str, Any] = {"operationId": route.operation, "summary": route.summary,
                          "tags": ["actions" if route.action else "reads"]}
    if route.description:
        op["description"] = route.description
    if route.params:
        op["parameters"] = [_parameter(p) for p in route.params]
    if route.body:
        op["requestBody"] = {"required": True, "content": _json(ref(route.body))}
    responses: dict[str, Any] = {}
    for status, schema in route.ok:
        responses[str(status)] = {"description": "Created" if status == 201 else "OK", "content": _json(ref(schema))}
        if status == 201:
            responses["201"]["headers"] = {"Location": {"schema": {"type": "string"},
                                                        "description": "the evacuation's address"}}
    codes = {400, 403, 422, 503} | ({401} if bearer else set()) | set(route.errors)
    if route.body:
        codes |= {413, 415}
    for status in sorted(codes):
        responses[str(status)] = {"description": _ERRORS[status], "content": _json(ref("Error"))}
    op["responses"] = responses
    return op


def document(routes: Iterable[Route], requests: Mapping[str, Schema], responses: Mapping[str, Schema], *,
             bearer: bool, loopback_only: bool) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for r in routes:
        paths.setdefault(PREFIX + r.path, {})[r.method.lower()] = _operation(r, bearer)
    components: dict[str, Any] = {"schemas": {**requests, **responses, "OpenApi": {"type": "object"}}}
    access = ("Bearer tokens (`Authorization: Bearer <token>`) with the gRPC API's roles: viewer reads, plans and "
              "explains; operator also acts." if bearer else
              "No auth is configured" + (": only requests naming a loopback Host are answered." if loopback_only
                                         else "."))
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "steering controller REST API", "version": _version(),
                 "description": "Every controller replica serves it beside gRPC, with the same tokens, roles, TLS, "
                                "audit and safety rules (docs/rest-api.md). " + access},
        "paths": paths,
        "components": components,
    }
    if bearer:
        components["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        doc["security"] = [{"bearer": []}]
    return doc


def stream_path(*, bearer: bool) -> dict[str, Any]:
    """``/stream``: described, though no JSON schema fits a stream (the fuzz test leaves it out)."""
    codes = [403, 503] + ([401] if bearer else [])
    return {"get": {
        "operationId": "streamStatus", "summary": "The status as server-sent events, each time it changes",
        "tags": ["reads"],
        "description": "`event: status` with the JSON of `GET /api/v1/status`, at once and each time it "
                       "changes (at once on a new table, else checked every second); `: ping` every 15 s. "
                       "Read it with fetch() to send the bearer token (EventSource cannot).",
        "responses": {"200": {"description": "text/event-stream",
                              "content": {"text/event-stream": {"schema": {"type": "string"}}}},
                      **{str(c): {"description": _ERRORS[c], "content": _json(ref("Error"))} for c in sorted(codes)}},
    }}
