"""The REST API server: aiohttp in the controller's event loop, beside gRPC (docs/rest-api.md).

``HttpApi.start`` listens on ``controller.http_listen`` (or ``--http-addr``)
and serves ``routes.ROUTES`` under ``/api/v1/``; ``/`` and the rest of the
path space stay free for the browser console. A request goes: auth (the gRPC
API's tokens and roles, ``auth.py``) → its parameters and JSON body checked
against the route's schemas (``validate.py``) → the handler, acting as the
token → JSON. Bodies are at most ``MAX_BODY`` bytes; strings are bounded as
``steering.limits`` bounds them for gRPC. Every refusal is JSON
(``errors.py``); nothing refused is written.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web

from steering import auth, logs
from steering.addr import parse_hostport
from steering.config import Config
from steering.controller.operator import ActionError
from steering.controller.routing_api import NoTable
from steering.http import errors, metrics, openapi, schemas, shapes, validate
from steering.http.auth import Guard, ssl_context
from steering.http.console import ConsoleFiles
from steering.http.errors import ApiError
from steering.http.feed import StatusFeed, sse
from steering.http.routes import OPERATOR, PREFIX, Api, Call, Param, Reply, Route, routes
from steering.store.client import StoreError

log = logs.get(__name__)

MAX_BODY = 64 * 1024  # a pin of 1000 targets is about 40 KiB of JSON
# The request line: a restore's or an unpin's query may carry a reason of 1024 characters, up to 12 bytes each
# once percent-encoded (aiohttp's default, 8190, would refuse it in plain text before any handler runs).
MAX_LINE = 32 * 1024
JSON = "application/json"
STREAM_PATH = "/stream"
MAX_STREAMS = 64  # open console streams per replica; more is 503 (each holds a connection, not a poll)
PING_SECONDS = 15.0  # a comment line keeps proxies from closing an idle stream
RECHECK_SECONDS = 60.0  # a stream's token is checked again this often: a revoked token stops following
_INTEGER = r"-?\d{1,30}"  # query text read as a number; longer is a wrong type, not a bigger number
_NUMBER = r"-?(\d{1,30}(\.\d{0,30})?|\.\d{1,30})([eE][-+]?\d{1,4})?"


class HttpApi:
    """The REST API of one controller replica."""

    def __init__(self, config: Config, api: Api, listen: str) -> None:
        self.listen = listen
        host, self._port = parse_hostport(listen)
        self._host = host
        self.guard = Guard.of(config, host)
        self.ssl = ssl_context(config)
        self.api = api
        self.routes = routes(api.known, self._openapi)
        self.bodies = schemas.requests(api.known)
        self.document = openapi.document(self.routes, self.bodies, schemas.responses(),
                                         bearer=self.guard.tokens is not None, loopback_only=self.guard.loopback_only)
        self.document["paths"][PREFIX + STREAM_PATH] = openapi.stream_path(bearer=self.guard.tokens is not None)
        self.app = web.Application(client_max_size=MAX_BODY, middlewares=[_json_errors])
        for r in self.routes:
            self.app.router.add_route(r.method, PREFIX + r.path, self._handler(r))
        self.feed = StatusFeed(self._status, api.tables)
        self.app.router.add_get(PREFIX + STREAM_PATH, self._stream)
        ConsoleFiles().add_routes(self.app)
        self._runner: web.AppRunner | None = None
        self._sampler: asyncio.Task[None] | None = None
        self.port = 0

    async def start(self) -> int:
        """Listen; returns the port (``:0`` picks a free one). OSError when the address is taken."""
        # a second for calls under way at a stop, as gRPC's grace
        runner = web.AppRunner(self.app, access_log=None, handle_signals=False, shutdown_timeout=1.0,
                               max_line_size=MAX_LINE)
        await runner.setup()
        site = web.TCPSite(runner, self._host, self._port, ssl_context=self.ssl, reuse_address=True,
                           reuse_port=False)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._sampler = asyncio.create_task(self._sample(), name="utilization-history")
        self.port = runner.addresses[0][1]
        log.info("http api listening", listen=self.listen, port=self.port, tls=self.ssl is not None,
                 auth=self.guard.tokens is not None)
        return self.port

    async def stop(self) -> None:
        if self._sampler is not None:
            self._sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sampler
            self._sampler = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _openapi(self, api: Api, call: Call) -> Reply:
        return Reply(200, self.document)

    async def _status(self) -> Any:
        return shapes.status(await self.api.operator.status())

    async def _sample(self) -> None:
        """Feed the utilization history: each table this replica follows, and the same one every so often."""
        history, version = self.api.utilization, -1
        while True:
            table = self.api.tables.current
            if table is not None:
                history.add(table, time.time())
                version = table.version
            await self.api.tables.wait_newer(version, timeout=history.every)

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        """``GET /api/v1/stream``: the status as server-sent events, each time it changes (docs/rest-api.md)."""
        rpc = OPERATOR + "Status"
        try:
            self.guard.check(request, rpc)
            if request.query:
                raise ApiError(400, "unknown_field", f"{next(iter(request.query))}: unknown query parameter",
                               field=next(iter(request.query)))
            if self.feed.readers >= MAX_STREAMS:
                raise ApiError(503, "unavailable", f"{MAX_STREAMS} streams are open on this replica; poll "
                               f"{PREFIX}/status instead", headers=errors.RETRY)
        except ApiError as exc:
            metrics.REQUESTS.labels("stream", str(exc.status)).inc()
            return respond(Reply(exc.status, exc.body(), exc.headers))
        metrics.REQUESTS.labels("stream", "200").inc()
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8",
                                           "Cache-Control": "no-store", "X-Accel-Buffering": "no"})
        await resp.prepare(request)
        await resp.write(b"retry: 2000\n\n")
        loop = asyncio.get_running_loop()
        checked = loop.time()
        states = self.feed.follow()
        try:
            pending: asyncio.Task[bytes] | None = None
            while True:
                if pending is None:
                    pending = asyncio.ensure_future(anext(states))
                done, _ = await asyncio.wait({pending}, timeout=PING_SECONDS)
                now = loop.time()
                if now - checked >= RECHECK_SECONDS:
                    try:
                        self.guard.check(request, rpc)
                    except ApiError as exc:
                        await resp.write(sse("error", json.dumps(exc.body()).encode()))
                        break
                    checked = now
                if done:
                    await resp.write(sse("status", pending.result()))
                    pending = None
                else:
                    await resp.write(b": ping\n\n")
        except ConnectionResetError:
            pass  # the browser went away: nothing to say to anyone
        finally:
            if pending is not None:
                pending.cancel()
                with contextlib.suppress(BaseException):
                    await pending
            await states.aclose()
        return resp

    def _handler(self, route: Route) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handle(request: web.Request) -> web.Response:
            started = time.monotonic()
            try:
                reply = await self._call(route, request)
            except ApiError as exc:
                reply = Reply(exc.status, exc.body(), exc.headers)
            metrics.REQUESTS.labels(route.operation, str(reply.status)).inc()
            metrics.SECONDS.labels(route.operation).observe(time.monotonic() - started)
            return respond(reply)

        return handle

    async def _call(self, route: Route, request: web.Request) -> Reply:
        """The call, or ApiError saying why not (never anything else: a bug is a logged 500)."""
        try:
            token = self.guard.check(request, route.rpc)
            call = await parse(route, request, self.bodies)
            with contextlib.ExitStack() as stack:
                if token is not None:
                    stack.enter_context(auth.acting(token))
                return await route.handler(self.api, call)
        except ApiError:
            raise
        except validate.Invalid as exc:
            raise ApiError(exc.status, exc.code, str(exc), field=exc.field) from None
        except ActionError as exc:
            raise errors.from_action(exc, shapes.preview(exc.preview) if exc.preview is not None else None) from None
        except StoreError as exc:
            raise errors.from_store(exc) from None
        except NoTable as exc:
            raise ApiError(503, "unavailable", str(exc), headers=errors.RETRY) from None
        except ValueError as exc:  # steering.limits, a key component, ResolveError: the same as gRPC's
            raise errors.from_value(exc) from None
        except Exception:
            log.exception("http api: request failed", operation=route.operation, path=request.path)
            raise ApiError(500, "internal", "internal error; the controller's log has the details") from None


def respond(reply: Reply) -> web.Response:
    body = reply.body if isinstance(reply.body, bytes) else \
        json.dumps(reply.body, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()
    return web.Response(body=body, status=reply.status, content_type=JSON, charset="utf-8",
                        headers={"Cache-Control": "no-store", **reply.headers})


@web.middleware
async def _json_errors(request: web.Request,
                       handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    """aiohttp's own refusals under /api/ (no such path, a method a path does not take) as JSON too."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400 or not (request.path.startswith(PREFIX + "/") or request.path == PREFIX):
            raise
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status, "bad_request")
        headers = {k: v for k, v in exc.headers.items() if k.lower() == "allow"}
        return respond(Reply(exc.status, ApiError(exc.status, code, f"{request.method} {request.path}: "
                                                  f"{exc.reason.lower()}").body(), headers))


# ---------------------------------------------------------------------- reading a request


async def parse(route: Route, request: web.Request, bodies: Mapping[str, schemas.Schema]) -> Call:
    """The request's path, query, header parameters and body, each checked against its schema."""
    path: dict[str, Any] = {}
    query: dict[str, Any] = {}
    headers: dict[str, Any] = {}
    declared = {p.name for p in route.params if p.where == "query"}
    for name in request.query:
        validate.text(name, "query")
        if name not in declared:
            raise ApiError(400, "unknown_field", f"{name}: unknown query parameter"
                           + (f" (known: {', '.join(sorted(declared))})" if declared else ""), field=name)
        if len(request.query.getall(name)) > 1:
            raise ApiError(400, "repeated_field", f"{name}: given more than once", field=name)
    for p in route.params:
        if p.where == "path":
            path[p.name] = _path_value(p, request.match_info[p.name])
        elif p.where == "query" and p.name in request.query:
            query[p.name] = validate.check(p.schema, _typed(p, request.query[p.name]), p.name)
        elif p.where == "header" and p.name in request.headers:
            headers[p.name] = validate.check(p.schema, _typed(p, request.headers[p.name]), p.name)
        elif p.required:
            raise ApiError(400, "missing_field", f"{p.name}: missing", field=p.name)
    body: Mapping[str, Any] = {}
    if route.body:
        body = validate.check(bodies[route.body], await _json_body(request), "")
    elif request.can_read_body and request.content_length != 0:
        raise ApiError(400, "unexpected_body", f"{route.method} {PREFIX}{route.path} takes no body; "
                       "its parameters go in the query")
    return Call(path, query, headers, body)


def _path_value(p: Param, raw: str) -> Any:
    """A path that names nothing is 404: an unknown region, service, geo or table version."""
    try:
        return validate.check(p.schema, _typed(p, raw), p.name)
    except validate.Invalid as exc:
        if exc.code == "invalid_value":
            raise ApiError(404, "not_found", str(exc), field=p.name) from None
        raise


def _typed(p: Param, raw: str) -> Any:
    """A query, path or header value read as its schema's type (a wrong type is 400)."""
    validate.text(raw, p.name)
    kind = p.schema.get("type")
    if kind == "integer":
        if not re.fullmatch(_INTEGER, raw):
            raise ApiError(400, "wrong_type", f"{p.name}: {raw[:40]!r} is not an integer", field=p.name)
        return int(raw)
    if kind == "number":
        if not re.fullmatch(_NUMBER, raw):
            raise ApiError(400, "wrong_type", f"{p.name}: {raw[:40]!r} is not a number", field=p.name)
        return float(raw)
    if kind == "boolean":
        if raw not in ("true", "false"):
            raise ApiError(400, "wrong_type", f"{p.name}: {raw[:40]!r} is not true or false", field=p.name)
        return raw == "true"
    return raw


async def _json_body(request: web.Request) -> Any:
    ctype = request.content_type
    if ctype != JSON:
        raise ApiError(415, "unsupported_media_type", f"Content-Type: {ctype!r}; send {JSON}", field="Content-Type")
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise ApiError(413, "too_large", f"the body is over {MAX_BODY} bytes") from None
    if not raw:
        raise ApiError(400, "missing_body", f"a JSON object is required ({JSON})")
    try:
        return json.loads(raw.decode("utf-8"), parse_constant=_no_constant, object_pairs_hook=_no_duplicates)
    except UnicodeDecodeError as exc:
        raise ApiError(400, "malformed_json", f"the body is not UTF-8 (byte {exc.start})") from None
    except RecursionError:
        raise ApiError(400, "malformed_json", "the body nests too deeply") from None
    except ValueError as exc:
        raise ApiError(400, "malformed_json", f"the body is not JSON: {exc}",
                       field=getattr(exc, "field", "") or "") from None


class _DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(f"{key!r} given twice")
        self.field = key


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise _DuplicateKey(k)  # which one would count is not obvious: refuse
        out[k] = v
    return out


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON (numbers must be finite)")
