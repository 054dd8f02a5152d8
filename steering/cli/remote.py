"""steerctl's connection to the controllers: several servers, a bearer token, optional TLS, exit codes.

Servers come from ``--server`` (repeatable, or comma-separated) or
``STEERCTL_SERVER``; default ``127.0.0.1:50051``. A call goes to the first
server that answers; one that is down (UNAVAILABLE, or no answer within
``--timeout``) is skipped for the next. The token is ``--token``, else
``STEERCTL_TOKEN``, else the first line of ``$STEERCTL_TOKEN_FILE`` or of
``~/.config/steerctl/token``. TLS: ``--ca`` (``STEERCTL_CA``) turns it on;
``--cert``/``--key`` (``STEERCTL_CERT``/``STEERCTL_KEY``) add a client
certificate.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import click
import grpc

from steering.textsafe import printable
from steering.v1 import steering_pb2_grpc as pb_grpc

EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3
DEFAULT_SERVER = "127.0.0.1:50051"
DEFAULT_TOKEN_FILE = Path("~/.config/steerctl/token")

_EXIT_FOR = {
    grpc.StatusCode.INVALID_ARGUMENT: EXIT_USAGE,
    grpc.StatusCode.NOT_FOUND: EXIT_USAGE,
    grpc.StatusCode.UNAUTHENTICATED: EXIT_UNREACHABLE,
    grpc.StatusCode.PERMISSION_DENIED: EXIT_UNREACHABLE,
    grpc.StatusCode.UNAVAILABLE: EXIT_UNREACHABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED: EXIT_UNREACHABLE,
}
_FAILOVER = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


class Unreachable(Exception):
    """No server answered."""


def die(message: str, code: int) -> NoReturn:
    click.echo(f"steerctl: {message}", err=True)
    sys.exit(code)


def exit_code(err: grpc.RpcError) -> int:
    return _EXIT_FOR.get(err.code(), EXIT_REFUSED)


def describe(err: grpc.RpcError) -> str:
    code = err.code()
    details = (err.details() or "").splitlines()[0] if err.details() else code.name
    details = printable(details, 2000)  # the server's words may quote stored text (a reason, a check detail)
    if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
        return f"not authorized ({code.name}): {details}"
    return details


def connection_hint(err: grpc.RpcError, tls: bool, client_cert: bool) -> str:
    """What a failed connection most likely means. gRPC reports a server that drops the TLS handshake (no
    client certificate, one it does not trust, or plaintext to a TLS port) only as "Socket closed"."""
    details = err.details() or ""
    if "Socket closed" in details:
        if tls and not client_cert:
            return ("the server closed the connection during the TLS handshake: it probably requires a client "
                    "certificate (give --cert and --key)")
        if tls:
            return ("the server closed the connection during the TLS handshake: it probably does not accept this "
                    "client certificate (--cert must be signed by the server's tls.client_ca)")
        return "the server closed the connection: it probably requires TLS (give --ca)"
    if "handshake failed" in details.lower() or "ssl" in details.lower():
        return "the TLS handshake failed: is the server's certificate signed by --ca, and valid for this address?"
    return ""


def _token(explicit: str | None) -> str | None:
    if explicit:
        return explicit
    path = Path(os.environ.get("STEERCTL_TOKEN_FILE") or DEFAULT_TOKEN_FILE).expanduser()
    try:
        line = path.read_text().strip().splitlines()
    except OSError:
        return None
    return line[0].strip() if line else None


@dataclass
class Remote:
    servers: list[str]
    token: str | None = None
    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    timeout: float = 5.0
    _channels: dict[str, grpc.Channel] = field(default_factory=dict)

    @classmethod
    def from_options(cls, servers: tuple[str, ...], token: str | None, ca: str | None, cert: str | None,
                     key: str | None, timeout: float) -> Remote:
        flat = [s.strip() for entry in servers for s in entry.replace(",", " ").split() if s.strip()]
        if (cert is None) != (key is None):
            die("--cert and --key go together", EXIT_USAGE)
        for what, path in (("--ca", ca), ("--cert", cert), ("--key", key)):
            if path is not None and not Path(path).is_file():
                die(f"{what}: {path} does not exist", EXIT_USAGE)
        return cls(servers=flat or [DEFAULT_SERVER], token=_token(token), ca=ca, cert=cert, key=key,
                   timeout=timeout)

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.token}"),) if self.token else ()

    def _channel(self, server: str) -> grpc.Channel:
        ch = self._channels.get(server)
        if ch is None:
            if self.ca:
                creds = grpc.ssl_channel_credentials(
                    Path(self.ca).read_bytes(), Path(self.key).read_bytes() if self.key else None,
                    Path(self.cert).read_bytes() if self.cert else None)
                ch = grpc.secure_channel(server, creds)
            else:
                ch = grpc.insecure_channel(server)
            self._channels[server] = ch
        return ch

    def call(self, service: str, method: str, request: Any, timeout: float | None = None) -> Any:
        """A unary call on the first server that answers; raises RpcError or Unreachable."""
        tried = []
        for server in self.servers:
            stub = self._stub(service, server)
            try:
                return getattr(stub, method)(request, metadata=self.metadata, timeout=timeout or self.timeout)
            except grpc.RpcError as err:
                if err.code() not in _FAILOVER:
                    raise
                tried.append(self._failed(server, err))
        raise Unreachable("cannot reach any server: " + "; ".join(tried))

    def _failed(self, server: str, err: grpc.RpcError) -> str:
        hint = connection_hint(err, bool(self.ca), bool(self.cert))
        return f"{server} ({describe(err)})" + (f": {hint}" if hint else "")

    def stream(self, service: str, method: str, request: Any) -> Iterator[tuple[str, Any]]:
        """A server stream on the first server that accepts it: yields (server, message)."""
        tried = []
        for server in self.servers:
            stub = self._stub(service, server)
            call = getattr(stub, method)(request, metadata=self.metadata)
            try:
                for msg in call:
                    yield server, msg
                return
            except grpc.RpcError as err:
                if err.code() not in _FAILOVER:
                    raise
                tried.append(self._failed(server, err))
        raise Unreachable("cannot reach any server: " + "; ".join(tried))

    def _stub(self, service: str, server: str) -> Any:
        factory: Callable[[grpc.Channel], Any] = getattr(pb_grpc, f"{service}Stub")
        return factory(self._channel(server))

    def close(self) -> None:
        for ch in self._channels.values():
            ch.close()
        self._channels.clear()


def connection_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """The options every remote command takes; they arrive as one ``remote`` argument."""
    options = [
        click.option("--server", "servers", multiple=True, envvar="STEERCTL_SERVER",
                     help="controller HOST:PORT; repeat or comma-separate for several (env STEERCTL_SERVER)"),
        click.option("--token", envvar="STEERCTL_TOKEN", default=None,
                     help="bearer token (env STEERCTL_TOKEN; else $STEERCTL_TOKEN_FILE or ~/.config/steerctl/token)"),
        click.option("--ca", envvar="STEERCTL_CA", default=None, type=click.Path(dir_okay=False),
                     help="CA certificate: use TLS (env STEERCTL_CA)"),
        click.option("--cert", envvar="STEERCTL_CERT", default=None, type=click.Path(dir_okay=False),
                     help="client certificate for TLS (env STEERCTL_CERT)"),
        click.option("--key", envvar="STEERCTL_KEY", default=None, type=click.Path(dir_okay=False),
                     help="client key for TLS (env STEERCTL_KEY)"),
        click.option("--timeout", type=float, default=5.0, show_default=True, help="seconds per call"),
    ]

    def wrapper(servers: tuple[str, ...], token: str | None, ca: str | None, cert: str | None, key: str | None,
                timeout: float, **kw: Any) -> Any:
        remote = Remote.from_options(servers, token, ca, cert, key, timeout)
        try:
            return f(remote=remote, **kw)
        except Unreachable as exc:
            die(str(exc), EXIT_UNREACHABLE)
        except grpc.RpcError as err:
            die(describe(err), exit_code(err))
        finally:
            remote.close()

    updated = functools.update_wrapper(wrapper, f)  # keeps f's own click options (__click_params__); returns wrapper
    del updated.__wrapped__  # click must see the wrapper's signature, not f's
    command: Callable[..., Any] = updated
    for opt in reversed(options):
        command = opt(command)
    return command
