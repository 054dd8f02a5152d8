"""Who may call the REST API: the gRPC API's tokens, roles and TLS (``steering.auth``).

Each route names the gRPC method it stands for (``/steering.v1.OperatorService/Evacuate``),
and ``steering.auth.allowed_roles`` and ``authorize`` decide for both transports:
``viewer`` reads, plans and explains; ``operator`` also evacuates, restores and
pins. ``Authorization: Bearer <token>``; no or an unknown token is 401 (with
``WWW-Authenticate: Bearer``), a role without the right 403. The handler runs
as the token (``auth.acting``), so the audit names it as gRPC's does.

TLS is the config's ``tls`` section: the same certificate and key, and with
``client_ca`` a client certificate signed by it is required.

Without any authentication on a loopback address, a request must name a
loopback host (``Host: 127.0.0.1:8080``, ``localhost``, ``[::1]``): a web page
in the operator's browser that rebinds its own DNS name to 127.0.0.1 would
otherwise reach an API that takes actions without a token.
"""

from __future__ import annotations

import ssl

from aiohttp import web

from steering import auth, logs
from steering.addr import is_loopback, parse_hostport
from steering.config import Config
from steering.http.errors import ApiError

log = logs.get(__name__)


class Guard:
    def __init__(self, tokens: auth.Tokens | None, loopback_only: bool) -> None:
        self.tokens = tokens
        self.loopback_only = loopback_only  # no authentication at all: only loopback Host names

    @classmethod
    def of(cls, config: Config, listen_host: str) -> Guard:
        tokens = auth.tokens_for(config)
        authenticated = tokens is not None or (config.tls is not None and config.tls.client_ca is not None)
        return cls(tokens, loopback_only=not authenticated and is_loopback(listen_host))

    def check(self, request: web.Request, rpc: str) -> auth.Token | None:
        """The token the call acts as (None: the API is open), or ApiError 401/403."""
        if self.loopback_only:
            self._check_host(request)
        roles = auth.allowed_roles(rpc)
        if self.tokens is None or roles is None:
            return None
        found = auth.authorize(self.tokens, auth.bearer(request.headers.get("Authorization")), rpc, roles)
        if isinstance(found, auth.Token):
            return found
        unauthenticated = found.code.name == "UNAUTHENTICATED"
        # As the gRPC interceptor: the token's name at most, never the secret (a typo'd real one).
        log.warning("authentication failed" if unauthenticated else "permission denied", peer=request.remote,
                    method=rpc, path=request.path, code=found.code.name, error=found.message)
        if unauthenticated:
            raise ApiError(401, "unauthenticated", found.message, field="Authorization",
                           headers={"WWW-Authenticate": 'Bearer realm="steering"'})
        raise ApiError(403, "forbidden", found.message, field="Authorization")

    @staticmethod
    def _check_host(request: web.Request) -> None:
        host = request.headers.get("Host", "")
        try:
            name, _ = parse_hostport(host, default_port=0)
        except ValueError:
            name = ""
        if not is_loopback(name):
            raise ApiError(403, "forbidden", f"Host: {host[:100]!r} is not a loopback name; without auth the API "
                           "answers only requests to 127.0.0.1, [::1] or localhost (configure auth to serve "
                           "others)", field="Host")


def ssl_context(config: Config) -> ssl.SSLContext | None:
    """The ``tls`` section as a server context (ConfigError naming an unreadable file)."""
    return auth.server_ssl_context(config)
