"""What an agent under test talks to: a recording controller, HTTP targets, a TCP listener, a gRPC health
server, a black hole. Moved here from ``agents/testing.py`` (test-only; nothing in the product uses it).

Everything binds to 127.0.0.1 on a free port and is stopped by the test that
started it.
"""

from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from steering.v1 import steering_pb2, steering_pb2_grpc
from tests.support.ports import free_port

# ---------------------------------------------------------------- controller


class RecordingHealthService(steering_pb2_grpc.HealthServiceServicer):
    """Acks every report and keeps it; can reject reports or ask for another interval."""

    def __init__(self, controller_id: str) -> None:
        self.controller_id = controller_id
        self.reports: list[steering_pb2.HealthReport] = []
        self.streams = 0
        self.half_closed = 0  # streams the agent ended cleanly (half-closed), not by an error
        self.report_interval = 0.0
        self.reject: str | None = None  # a field name: end each stream INVALID_ARGUMENT naming it
        self.silent = False  # accept reports but never ack (a hung controller)
        self.metadata: list[dict[str, Any]] = []  # invocation metadata of each stream
        # A code: end each stream with it before reading a report, as the controller's auth interceptor does.
        self.refuse: grpc.StatusCode | None = None
        # Send the headers on accepting a stream, as the controller does; False: only with the first ack,
        # as controllers did before agents waited for them.
        self.early_headers = True

    async def Report(self, request_iterator: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        self.streams += 1
        self.metadata.append(dict(context.invocation_metadata() or ()))
        if self.refuse is not None:
            await context.abort(self.refuse, "refused by test")
        if self.early_headers:
            await context.send_initial_metadata(())
        async for report in request_iterator:
            if self.reject is not None:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{self.reject}: rejected by test")
            self.reports.append(report)
            if self.silent:
                continue
            yield steering_pb2.ReportAck(
                sequence=report.sequence, controller_id=self.controller_id,
                report_interval_seconds=self.report_interval,
            )
        self.half_closed += 1


class FakeController:
    """A real grpc.aio server with the HealthService; stop() and start() again on the same port."""

    def __init__(self, controller_id: str = "c1", port: int | None = None,
                 credentials: grpc.ServerCredentials | None = None) -> None:
        self.port = port or free_port()
        self.service = RecordingHealthService(controller_id)
        self.credentials = credentials
        self._server: grpc.aio.Server | None = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def reports(self) -> list[steering_pb2.HealthReport]:
        return self.service.reports

    async def start(self) -> FakeController:
        server = grpc.aio.server()
        # grpcio-tools generates steering_pb2_grpc without annotations
        steering_pb2_grpc.add_HealthServiceServicer_to_server(self.service, server)  # type: ignore[no-untyped-call]
        if self.credentials is not None:
            server.add_secure_port(self.endpoint, self.credentials)
        else:
            server.add_insecure_port(self.endpoint)
        await server.start()
        self._server = server
        return self

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(grace=None)
            self._server = None


# ---------------------------------------------------------------- gRPC target


class GrpcHealthTarget:
    def __init__(self) -> None:
        self.port = free_port()
        self.servicer = health.aio.HealthServicer()
        self._server: grpc.aio.Server | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> GrpcHealthTarget:
        server = grpc.aio.server()
        health_pb2_grpc.add_HealthServicer_to_server(self.servicer, server)
        server.add_insecure_port(self.address)
        await server.start()
        self._server = server
        return self

    async def set(self, service: str, serving: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        await self.servicer.set(service, status)

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(grace=None)
            self._server = None


# ---------------------------------------------------------------- HTTP target


class HttpTarget:
    """A threaded HTTP server whose answer the test sets: status, body, or a hang.

    ``routes`` maps a path to (status, content type, body); ``hang`` makes
    every request wait until ``release()`` or close (bounded at 60 s).
    """

    def __init__(self) -> None:
        self.routes: dict[str, tuple[int, str, bytes]] = {"/": (200, "text/plain", b"ok")}
        self.hang = False
        self.requests = 0
        self._release = threading.Event()
        target = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                target.requests += 1
                if target.hang:
                    target._release.wait(60)
                    return
                status, ctype, body = target.routes.get(self.path.split("?")[0], (404, "text/plain", b"no route"))
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), name="http-target", daemon=True)
        self._thread.start()

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def set(self, path: str, status: int = 200, body: bytes | str = b"ok", ctype: str = "text/plain") -> None:
        self.routes[path] = (status, ctype, body.encode() if isinstance(body, str) else body)

    def release(self) -> None:
        self.hang = False
        self._release.set()

    def close(self) -> None:
        self.release()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


# ---------------------------------------------------------------- TCP target


class TcpTarget:
    """A listening socket (the kernel completes the handshake; nobody needs to accept)."""

    def __init__(self) -> None:
        self._sock: socket.socket | None = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(128)
        self.port = int(self._sock.getsockname()[1])

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


class BlackHoleTarget:
    """A port whose connects hang: a listener with a full accept queue drops new SYNs."""

    def __init__(self) -> None:
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(0)
        self.port = int(self._sock.getsockname()[1])
        self._fillers: list[socket.socket] = []
        for _ in range(4):
            c = socket.socket()
            c.setblocking(False)
            try:
                c.connect(("127.0.0.1", self.port))
            except BlockingIOError:
                pass
            self._fillers.append(c)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def close(self) -> None:
        for c in self._fillers:
            c.close()
        self._sock.close()
