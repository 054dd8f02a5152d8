"""Bearer tokens and roles for the controller's gRPC API, and its TLS credentials.

The tokens file (``auth.tokens_file`` in the configuration) is YAML::

    tokens:
      - {name: alice, role: operator, token: "s3cret-alice"}
      - {name: grafana, role: viewer, sha256: "9f86d08..."}   # hex sha256 of the token
      - {name: agent-us-east-1, role: agent, token: "...", sites: [us-east-1, oc-nyc-1]}

Roles: ``viewer`` may call Status, History, Plan and the RoutingService;
``operator`` may also Evacuate, Restore and Pin/Unpin (and report as an
agent); ``agent`` may only stream health reports. Clients send
``authorization: Bearer <token>``. No or an unknown token is UNAUTHENTICATED,
a role without the right PERMISSION_DENIED. The standard health service and
reflection stay open. Handlers read the caller's token name with ``actor()``
for the audit. Without an ``auth`` section every call is allowed and the
actor is ``anonymous``. The REST API (``steering.http``) applies the same
rules: each route names the gRPC method whose roles it takes, ``authorize``
decides for both, and ``acting`` sets ``actor()`` for its handler.

``sites`` binds a token to the region and cache-site ids it may report
health for (``"*"``: any). An ``agent`` token must name them; an
``operator`` token without ``sites`` may report any; a ``viewer`` never
reports. The ingest checks each report against ``caller()``'s token (see
``steering.controller.agentauth``). ``observers`` likewise names the
observer ids (``observers[].id`` of the config) a token may report as; an
``agent`` token gives ``sites``, ``observers`` or both (docs/health.md).
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import hmac
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias, cast

import grpc
import yaml

from steering import logs
from steering.config import Config, ConfigError

ROLES = ("viewer", "operator", "agent")
OPERATOR_METHODS = {"Evacuate", "Restore", "PinWeights", "UnpinWeights"}
DRILL_OPERATOR_METHODS = {"StartDrill", "AbortDrill", "AddSchedule", "RemoveSchedule"}
ANY_SITE = "*"
_ACTOR: contextvars.ContextVar[str] = contextvars.ContextVar("steering_actor", default="anonymous")
_log = logs.get("steering.auth")
_CALLER: contextvars.ContextVar[Token | None] = contextvars.ContextVar("steering_caller", default=None)


def actor() -> str:
    """The token name of the call being handled (``anonymous`` when the API is open)."""
    return _ACTOR.get()


def act_as(name: str) -> None:
    """Name the actor of what the current task does on its own (the drill runner's evacuations): audits say who."""
    _ACTOR.set(name)


def caller() -> Token | None:
    """The token of the call being handled; None when the API is open (no ``auth`` section)."""
    return _CALLER.get()


def allowed_roles(method: str) -> frozenset[str] | None:
    """Roles that may call ``/pkg.Service/Method``; None means open to everyone."""
    service, _, name = method.lstrip("/").partition("/")
    if service == "steering.v1.HealthService":
        return frozenset({"agent", "operator"})
    if service == "steering.v1.OperatorService":
        return frozenset({"operator"}) if name in OPERATOR_METHODS else frozenset({"viewer", "operator"})
    if service == "steering.v1.RoutingService":
        return frozenset({"viewer", "operator"})
    if service == "steering.v1.DrillService":  # starting or aborting a drill moves traffic, like Evacuate
        return frozenset({"operator"}) if name in DRILL_OPERATOR_METHODS else frozenset({"viewer", "operator"})
    return None  # grpc.health.v1.Health, reflection


@dataclass(frozen=True)
class Token:
    name: str
    role: str
    sha256: str  # hex digest of the secret
    sites: frozenset[str] | None = None  # what it may report health for; None: any site
    observers: frozenset[str] | None = None  # the observer ids it may report as; None: any

    def may_report(self, site: str) -> bool:
        return self.sites is None or site in self.sites


class Tokens:
    def __init__(self, tokens: list[Token]) -> None:
        self._by_hash = {t.sha256: t for t in tokens}

    def lookup(self, secret: str) -> Token | None:
        digest = hashlib.sha256(secret.encode()).hexdigest()
        for h, t in self._by_hash.items():
            if hmac.compare_digest(h, digest):
                return t
        return None

    def __len__(self) -> int:
        return len(self._by_hash)


def load_tokens(path: str | Path, known_sites: frozenset[str] | None = None,
                known_observers: frozenset[str] | None = None) -> Tokens:
    """Parse the tokens file; ConfigError naming each bad entry (and, given ``known_sites``, unknown sites)."""
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text())
    except OSError as exc:
        raise ConfigError(str(p), [f"cannot read: {exc.strerror or exc}"]) from None
    except yaml.YAMLError as exc:
        raise ConfigError(str(p), [f"invalid YAML: {exc}"]) from None
    entries = data.get("tokens") if isinstance(data, Mapping) else data
    if not isinstance(entries, list) or not entries:
        raise ConfigError(str(p), ["tokens: expected a non-empty list of {name, role, token | sha256[, sites]}"])
    problems: list[str] = []
    out: list[Token] = []
    names: set[str] = set()
    for i, e in enumerate(entries):
        where = f"tokens[{i}]"
        if not isinstance(e, Mapping):
            problems.append(f"{where}: expected a mapping")
            continue
        unknown = set(e) - {"name", "role", "token", "sha256", "sites", "observers"}
        if unknown:
            problems.append(f"{where}: unknown field(s) {', '.join(sorted(map(str, unknown)))}")
        name, role = e.get("name"), e.get("role")
        if not isinstance(name, str) or not name:
            problems.append(f"{where}.name: missing")
            continue
        if name in names:
            problems.append(f"{where}.name: duplicate {name!r}")
        names.add(name)
        if role not in ROLES:
            problems.append(f"{where}.role: {role!r} is not one of {', '.join(ROLES)}")
        observers, why = _observers(e.get("observers"), role, known_observers)
        if why:
            problems.append(f"{where}.observers: {why}")
        sites: frozenset[str] | None
        if role == "agent" and observers and e.get("sites") is None:
            sites, why = frozenset(), ""  # an observer's token: it reports as those observers only
        else:
            sites, why = _sites(e.get("sites"), role, known_sites)
        if why:
            problems.append(f"{where}.sites: {why}")
        secret, digest = e.get("token"), e.get("sha256")
        if (secret is None) == (digest is None):
            problems.append(f"{where}: give exactly one of token or sha256")
            continue
        if secret is not None:
            if not isinstance(secret, str) or len(secret) < 8:
                problems.append(f"{where}.token: must be a string of at least 8 characters")
                continue
            digest = hashlib.sha256(secret.encode()).hexdigest()
        elif not isinstance(digest, str) or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest.lower()):
            problems.append(f"{where}.sha256: not a 64-digit hex digest")
            continue
        out.append(Token(name=name, role=str(role), sha256=str(digest).lower(), sites=sites, observers=observers))
    if problems:
        raise ConfigError(str(p), problems)
    return Tokens(out)


def _sites(value: Any, role: Any, known: frozenset[str] | None) -> tuple[frozenset[str] | None, str]:
    """(the sites a token may report, None for any; a problem or "")."""
    if value is None:
        if role == "agent":
            return frozenset(), 'required for role agent: the site ids it may report, or ["*"] for any'
        return None, ""
    if role == "viewer":
        return frozenset(), "a viewer token does not report health; remove sites"
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        return frozenset(), 'expected a non-empty list of site ids (or ["*"])'
    if ANY_SITE in value:
        return None, "" if value == [ANY_SITE] else '"*" stands alone: it already means any site'
    unknown = sorted(set(value) - known) if known is not None else []
    if unknown:
        return frozenset(), f"unknown site(s) {', '.join(map(repr, unknown))} (not a region or cache site)"
    return frozenset(value), ""


def _observers(value: Any, role: Any, known: frozenset[str] | None) -> tuple[frozenset[str] | None, str]:
    """(the observer ids a token may report as, None for any; a problem or ""). An agent token without
    them reports as no observer; an operator token as any."""
    if value is None:
        return (frozenset() if role in ("agent", "viewer") else None), ""
    if role == "viewer":
        return frozenset(), "a viewer token does not report health; remove observers"
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        return frozenset(), 'expected a non-empty list of observer ids (or ["*"])'
    if ANY_SITE in value:
        return None, "" if value == [ANY_SITE] else '"*" stands alone: it already means any observer'
    unknown = sorted(set(value) - known) if known is not None else []
    if unknown:
        return frozenset(), f"unknown observer(s) {', '.join(map(repr, unknown))} (not in the config's observers)"
    return frozenset(value), ""


def _bearer(metadata: Any) -> str | None:
    for key, value in metadata or ():
        if key.lower() == "authorization":
            return bearer(value.decode() if isinstance(value, bytes) else str(value))
    return None


def bearer(header: str | None) -> str | None:
    """The secret of an ``Authorization: Bearer <token>`` value; None without the header, "" when it is
    not a bearer token."""
    if header is None:
        return None
    scheme, _, secret = header.strip().partition(" ")
    if scheme.lower() == "bearer" and secret.strip():
        return secret.strip()
    return ""


@dataclass(frozen=True)
class Denied:
    """Why a call is refused: UNAUTHENTICATED (no or an unknown token) or PERMISSION_DENIED (its role)."""

    code: grpc.StatusCode
    message: str


def authorize(tokens: Tokens, secret: str | None, method: str, roles: frozenset[str]) -> Token | Denied:
    """The token a call may act as, or why not: the one rule for the gRPC interceptor and the REST API
    (``steering.http.auth``), which names each of its routes by the gRPC method whose roles it shares."""
    token = tokens.lookup(secret) if secret else None
    if token is None:
        why = "missing bearer token" if secret is None else "invalid bearer token"
        return Denied(grpc.StatusCode.UNAUTHENTICATED, f"authorization: {why}")
    if token.role not in roles:
        return Denied(grpc.StatusCode.PERMISSION_DENIED,
                      f"authorization: token {token.name!r} has role {token.role}; "
                      f"{method.rsplit('/', 1)[-1]} needs {' or '.join(sorted(roles))}")
    return token


@contextlib.contextmanager
def acting(token: Token) -> Iterator[None]:
    """``actor()`` and ``caller()`` are ``token``'s inside the block (a REST call; gRPC sets them per call)."""
    names, callers = _ACTOR.set(token.name), _CALLER.set(token)
    try:
        yield
    finally:
        _CALLER.reset(callers)
        _ACTOR.reset(names)


# Strings: grpc's classes are generic only in its stubs, not at runtime.
_Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"
_Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"
# What a handler's behaviour is under grpc.aio: a coroutine function (one response) or an async generator (a stream).
_UnaryBehaviour: TypeAlias = Callable[[Any, _Context], Awaitable[Any]]
_StreamBehaviour: TypeAlias = Callable[[Any, _Context], AsyncIterator[Any]]


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Checks the bearer token and the role before the handler runs; sets ``actor()`` inside it."""

    def __init__(self, tokens: Tokens) -> None:
        self.tokens = tokens

    async def intercept_service(self, continuation: Callable[[grpc.HandlerCallDetails], Awaitable[_Handler | None]],
                                details: grpc.HandlerCallDetails) -> _Handler | None:
        handler = await continuation(details)
        roles = allowed_roles(details.method)
        if handler is None or roles is None:
            return handler
        found = authorize(self.tokens, _bearer(details.invocation_metadata), details.method, roles)
        if isinstance(found, Denied):
            return _deny(handler, found.code, found.message, details.method)
        return _as_actor(handler, found)


def log_denied(denied: Denied, peer: str, method: str) -> None:
    """One refused call, as every listener logs it: the message names the token's name at most, never the
    secret (an invalid one is not echoed: it may be a real token with a typo)."""
    _log.warning("authentication failed" if denied.code == grpc.StatusCode.UNAUTHENTICATED else "permission denied",
                 peer=peer, method=method, code=denied.code.name, error=denied.message)


def _deny(handler: _Handler, code: grpc.StatusCode, message: str, method: str) -> _Handler:
    def logged(context: _Context) -> None:
        log_denied(Denied(code, message), peer=context.peer(), method=method)  # the peer is known only here

    async def unary(request: Any, context: _Context) -> Any:
        logged(context)
        await context.abort(code, message)

    async def stream(request: Any, context: _Context) -> AsyncIterator[Any]:
        logged(context)
        await context.abort(code, message)
        yield  # pragma: no cover - makes this an async generator

    return _rebuild(handler, unary, stream)


def _as_actor(handler: _Handler, token: Token) -> _Handler:
    inner = (handler.unary_unary or handler.unary_stream or handler.stream_unary or handler.stream_stream)
    # cast: grpc-stubs types these behaviours for the synchronous server (a plain return or an Iterator, taking a
    # grpc.ServicerContext); under grpc.aio they are coroutine functions or async generators taking an aio context.
    inner_unary = cast(_UnaryBehaviour, inner)
    inner_stream = cast(_StreamBehaviour, inner)

    async def unary(request: Any, context: _Context) -> Any:
        _ACTOR.set(token.name)
        _CALLER.set(token)
        return await inner_unary(request, context)

    async def stream(request: Any, context: _Context) -> AsyncIterator[Any]:
        _ACTOR.set(token.name)
        _CALLER.set(token)
        async for item in inner_stream(request, context):
            yield item

    return _rebuild(handler, unary, stream)


def _rebuild(handler: _Handler, unary: _UnaryBehaviour, stream: _StreamBehaviour) -> _Handler:
    args = dict(request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer)
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(unary, **args)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(stream, **args)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(unary, **args)
    return grpc.stream_stream_rpc_method_handler(stream, **args)


def tokens_for(config: Config) -> Tokens | None:
    """The ``auth`` section's tokens (ConfigError naming each bad entry); None without one: the API is open."""
    if config.auth is None:
        return None
    known = frozenset(r.id for r in config.regions) | frozenset(s.id for s in config.sites)
    observers = frozenset(o.id for o in config.observers)
    return load_tokens(config.resolve_path(config.auth.tokens_file), known, observers)


def server_interceptors(config: Config) -> list[grpc.aio.ServerInterceptor]:
    tokens = tokens_for(config)
    return [] if tokens is None else [AuthInterceptor(tokens)]


def server_credentials(config: Config) -> grpc.ServerCredentials | None:
    """TLS from the ``tls`` section; with ``client_ca`` a client certificate signed by it is required."""
    if config.tls is None:
        return None
    problems = []
    blobs: dict[str, bytes] = {}
    for field in ("cert", "key", "client_ca"):
        path = getattr(config.tls, field)
        if path is None:
            continue
        try:
            blobs[field] = config.resolve_path(path).read_bytes()
        except OSError as exc:
            problems.append(f"tls.{field}: {config.resolve_path(path)}: {exc.strerror or exc}")
    if problems:
        raise ConfigError("tls", problems)
    ca = blobs.get("client_ca")
    return grpc.ssl_server_credentials([(blobs["key"], blobs["cert"])], root_certificates=ca,
                                       require_client_auth=ca is not None)


def server_ssl_context(config: Config, alpn: list[str] | None = None) -> ssl.SSLContext | None:
    """The ``tls`` section as a server context for the listeners gRPC does not serve (the REST API, the
    ingest listener); with ``client_ca`` a client certificate signed by it is required (ConfigError naming
    an unreadable file)."""
    tls = config.tls
    if tls is None:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        ctx.load_cert_chain(str(config.resolve_path(tls.cert)), str(config.resolve_path(tls.key)))
        if tls.client_ca is not None:
            ctx.load_verify_locations(str(config.resolve_path(tls.client_ca)))
            ctx.verify_mode = ssl.CERT_REQUIRED
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError("tls", [f"cannot use the certificate, key or client_ca: {exc}"]) from None
    if alpn:
        ctx.set_alpn_protocols(alpn)
    return ctx
