"""Route 53 for tests: moto's Route 53 in server mode on loopback (patched), a fault-injecting HTTP proxy,
the ``moto`` fixture, and ``Route53Env`` (a fresh hosted zone behind the proxy).

Both servers are real HTTP servers in threads of the test process, stopped through their APIs. Used by
tests/test_route53*.py. ``MotoRoute53`` and its moto patches are ``steering.demo.fakeroute53``'s (one copy:
``steering demo --route53`` runs the same fake), re-exported here.

moto 5.2.5 differs from AWS in ways that matter here (docs/dependencies.md):
GetChange is INSYNC at once and nothing is ever throttled — the proxy injects
PENDING, Throttling, PriorRequestNotComplete and InvalidChangeBatch — and
ListResourceRecordSets pages repeat themselves — the proxy paginates like AWS.
Two bugs need a patch of the in-process server (``MotoRoute53``, ``patch_moto``): a DELETE
with a SetIdentifier removes every record in the zone with that identifier,
whatever its name; and a CREATE identical to an earlier one is refused as
"already exists" even after the record was deleted. Patched, a delete touches
only the record named and a CREATE fails only if that record exists, as on AWS.
"""

from __future__ import annotations

import http.client
import http.server
import threading
import urllib.parse
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from steering.config import Config, load_yaml, parse_config
from steering.demo.fakeroute53 import MotoRoute53
from steering.route53.client import RetryPolicy
from steering.route53.records import Record, RecordKey
from steering.route53.sink import Route53Sink
from tests.support.paths import EXAMPLE_CONFIG

__all__ = ["FAST", "Fault", "FaultProxy", "MotoRoute53", "Route53Env", "make_boto3_client", "moto", "operation_of"]

_NS = "{https://route53.amazonaws.com/doc/2013-04-01/}"
ET.register_namespace("", _NS[1:-1])


@dataclass
class Fault:
    """Answer the next ``times`` matching requests with an error instead of forwarding them."""

    operation: str  # "ChangeResourceRecordSets" | "ListResourceRecordSets" | "GetChange" | "GetHostedZone"
    code: str
    times: int = 1
    status: int = 400
    message: str = "injected by the test proxy"


@dataclass
class ProxyLog:
    operation: str
    status: int
    injected: str = ""


@dataclass
class FaultProxy:
    """A loopback HTTP proxy in front of moto that injects Route 53 faults, and records every request."""

    upstream: str
    faults: list[Fault] = field(default_factory=list)
    pending_getchange: int = 0  # answer this many GetChange calls with PENDING first
    paginate: bool = True  # serve ListResourceRecordSets pages correctly, as AWS does (moto cannot)
    requests: list[ProxyLog] = field(default_factory=list)
    url: str = ""
    _server: http.server.ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> FaultProxy:
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _any(self) -> None:
                proxy._handle(self)

            do_GET = do_POST = do_DELETE = do_PUT = _any

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_port}"  # the address bound above
        self._thread = threading.Thread(target=self._server.serve_forever, name="route53-fault-proxy", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def inject(self, operation: str, code: str, times: int = 1, status: int = 400) -> Fault:
        fault = Fault(operation, code, times, status)
        with self._lock:
            self.faults.append(fault)
        return fault

    def count(self, operation: str, injected: str | None = None) -> int:
        with self._lock:
            return sum(1 for r in self.requests if r.operation == operation
                       and (injected is None or r.injected == injected))

    # ---- the work

    def _handle(self, req: http.server.BaseHTTPRequestHandler) -> None:
        length = int(req.headers.get("Content-Length") or 0)
        body = req.rfile.read(length) if length else b""
        op = operation_of(req.command, req.path)
        fault = None
        with self._lock:
            for f in self.faults:
                if f.operation == op and f.times > 0:
                    f.times -= 1
                    fault = f
                    break
        if fault is not None:
            payload = _error_xml(fault.code, fault.message)
            with self._lock:
                self.requests.append(ProxyLog(op, fault.status, fault.code))
            self._reply(req, fault.status, {"Content-Type": "text/xml"}, payload)
            return
        if op == "ListResourceRecordSets" and self.paginate:
            status, headers, data = self._paginated(req)
        else:
            status, headers, data = self._forward(req, body)
        injected = ""
        if op == "GetChange" and status == 200:
            with self._lock:
                if self.pending_getchange > 0:
                    self.pending_getchange -= 1
                    data = data.replace(b"INSYNC", b"PENDING")
                    injected = "PENDING"
        with self._lock:
            self.requests.append(ProxyLog(op, status, injected))
        self._reply(req, status, headers, data)

    def _paginated(self, req: http.server.BaseHTTPRequestHandler) -> tuple[int, dict[str, str], bytes]:
        """Fetch the whole zone from moto in one page, then serve the page asked for, keyed like AWS."""
        path, _, query = req.path.partition("?")
        params = dict(urllib.parse.parse_qsl(query))
        size = min(300, int(params.get("maxitems", "300")))
        status, headers, data = self._forward(req, b"", path=f"{path}?maxitems=1000000")
        if status != 200:
            return status, headers, data
        root = ET.fromstring(data)
        box = root.find(f"{_NS}ResourceRecordSets")
        assert box is not None
        items = list(box)

        def key(el: ET.Element) -> tuple[str, str, str]:
            name = (el.findtext(f"{_NS}Name") or "").lower().rstrip(".")
            return (".".join(reversed(name.split("."))), el.findtext(f"{_NS}Type") or "",
                    el.findtext(f"{_NS}SetIdentifier") or "")

        items.sort(key=key)
        start = 0
        if "name" in params:
            name = params["name"].lower().rstrip(".")
            want = (".".join(reversed(name.split("."))), params.get("type", ""), params.get("identifier", ""))
            start = next((i for i, el in enumerate(items) if key(el) >= want), len(items))
        page, rest = items[start:start + size], items[start + size:]
        for el in list(box):
            box.remove(el)
        box.extend(page)
        for tag in ("IsTruncated", "NextRecordName", "NextRecordType", "NextRecordIdentifier", "MaxItems"):
            for el in root.findall(f"{_NS}{tag}"):
                root.remove(el)
        ET.SubElement(root, f"{_NS}IsTruncated").text = "true" if rest else "false"
        if rest:
            nxt = rest[0]
            ET.SubElement(root, f"{_NS}NextRecordName").text = nxt.findtext(f"{_NS}Name")
            ET.SubElement(root, f"{_NS}NextRecordType").text = nxt.findtext(f"{_NS}Type")
            if nxt.findtext(f"{_NS}SetIdentifier"):
                ET.SubElement(root, f"{_NS}NextRecordIdentifier").text = nxt.findtext(f"{_NS}SetIdentifier")
        ET.SubElement(root, f"{_NS}MaxItems").text = str(size)
        return 200, headers, ET.tostring(root, xml_declaration=True, encoding="utf-8")

    def _forward(self, req: http.server.BaseHTTPRequestHandler, body: bytes,
                 path: str | None = None) -> tuple[int, dict[str, str], bytes]:
        host_port = self.upstream.split("://", 1)[1]
        conn = http.client.HTTPConnection(host_port, timeout=30)
        try:
            headers = {k: v for k, v in req.headers.items() if k.lower() not in ("connection", "keep-alive")}
            conn.request(req.command, path or req.path, body=body or None, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            out = {k: v for k, v in resp.getheaders()
                   if k.lower() not in ("content-length", "connection", "transfer-encoding")}
            return resp.status, out, data
        finally:
            conn.close()

    @staticmethod
    def _reply(req: http.server.BaseHTTPRequestHandler, status: int, headers: dict[str, str], data: bytes) -> None:
        req.send_response(status)
        for k, v in headers.items():
            req.send_header(k, v)
        req.send_header("Content-Length", str(len(data)))
        req.end_headers()
        req.wfile.write(data)


def operation_of(method: str, path: str) -> str:
    """The Route 53 operation of a REST request (just the ones the sink makes)."""
    p = path.split("?", 1)[0].rstrip("/")
    if "/rrset" in p:
        return "ChangeResourceRecordSets" if method == "POST" else "ListResourceRecordSets"
    if "/change/" in p:
        return "GetChange"
    if "/hostedzone/" in p and method == "GET":
        return "GetHostedZone"
    return f"{method} {p}"


def _error_xml(code: str, message: str) -> bytes:
    return (f'<?xml version="1.0"?>\n<ErrorResponse xmlns="https://route53.amazonaws.com/doc/2013-04-01/">'
            f"<Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error>"
            f"<RequestId>{uuid.uuid4()}</RequestId></ErrorResponse>").encode()


def make_boto3_client(endpoint_url: str) -> Any:
    """A plain boto3 Route 53 client for tests to poke the zone directly (foreign records, drift)."""
    import boto3

    return boto3.session.Session().client("route53", region_name="us-east-1", endpoint_url=endpoint_url)



# ---- fixtures

# Retries and GetChange polls in milliseconds: the proxy's faults are answered at once.
FAST = RetryPolicy(attempts=8, base_seconds=0.002, max_seconds=0.02, insync_timeout_seconds=10, poll_seconds=0.005)


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoRoute53]:
    """moto's server for a test module, with dummy AWS credentials in the environment meanwhile."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AWS_ACCESS_KEY_ID", "testing")
        mp.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        mp.setenv("AWS_SESSION_TOKEN", "testing")
        mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
        mp.delenv("AWS_PROFILE", raising=False)
        server = MotoRoute53().start()
        try:
            yield server
        finally:
            server.stop()


class Route53Env:
    """A fresh hosted zone in moto, a ``FaultProxy`` in front of it, and a boto3 client to look behind it."""

    def __init__(self, moto: MotoRoute53) -> None:
        self.boto = make_boto3_client(moto.url)
        self.zone_id = self.boto.create_hosted_zone(
            Name="example.test", CallerReference=str(uuid.uuid4()))["HostedZone"]["Id"]
        self.proxy = FaultProxy(upstream=moto.url).start()

    def config(self, data: dict[str, Any] | None = None, **route53: Any) -> Config:
        """The example config (or ``data``) with a route53 section pointing at the proxy."""
        data = dict(data if data is not None else load_yaml(EXAMPLE_CONFIG))
        data["route53"] = {"hosted_zone_id": self.zone_id, "endpoint_url": self.proxy.url,
                           "max_requests_per_second": 500, "sync_interval": 60, **route53}
        return parse_config(data, "test", EXAMPLE_CONFIG.parent)

    def sink(self, config: Config, **kw: Any) -> Route53Sink:
        return Route53Sink(config, retry=kw.pop("retry", FAST), **kw)

    def records(self) -> dict[RecordKey, Record]:
        """The zone as moto holds it, read in one page (its own pagination is broken: docs/dependencies.md)."""
        out = self.boto.list_resource_record_sets(HostedZoneId=self.zone_id, MaxItems="100000")
        recs = [Record.from_api(r) for r in out["ResourceRecordSets"]]
        return {r.key: r for r in recs}

    def change(self, *changes: dict[str, Any]) -> None:
        """Change the zone behind the sink's back (foreign records, drift)."""
        self.boto.change_resource_record_sets(HostedZoneId=self.zone_id, ChangeBatch={"Changes": list(changes)})

    def close(self) -> None:
        self.proxy.stop()
