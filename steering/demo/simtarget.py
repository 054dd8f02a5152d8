"""A simulated region or cache site: an HTTP service whose health and load come from a file.

``GET /healthz`` answers 200 "ok", or 503 while the target is broken;
``GET /stats`` answers ``{"capacity": {"requests_per_second": N}, "load":
{"requests_per_second": M}}``. The state file is re-read on every request,
so ``steering demo break REGION`` from another terminal only rewrites it.

Observers probe ``/healthz?from=<observer id>``; while that observer is in
the state's ``cut`` list (``steering demo cut REGION GEO``), its requests
get no answer: the connection closes, as if the network between them were
cut, while everyone else's still succeed.
"""

from __future__ import annotations

import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit


def read_state(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def write_state(path: Path, **changes: Any) -> dict[str, Any]:
    """Merge ``changes`` into the state file atomically (write, rename)."""
    state = read_state(path)
    state.update(changes)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, sort_keys=True))
    os.replace(tmp, path)
    return state


class SimTarget:
    def __init__(self, target_id: str, state_file: Path, capacity: float, load: float,
                 host: str = "127.0.0.1", port: int = 0) -> None:
        self.target_id = target_id
        self.state_file = state_file
        if not state_file.exists():
            write_state(state_file, broken=False, capacity=capacity, load=load)
        sim = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # http.server's naming
                state = read_state(sim.state_file)
                url = urlsplit(self.path)
                observer = parse_qs(url.query).get("from", [""])[0]
                if observer and observer in (state.get("cut") or []):
                    self.close_connection = True  # no answer: the observer cannot reach us
                    return
                if url.path == "/healthz":
                    broken = bool(state.get("broken"))
                    self._send(503 if broken else 200, b"broken\n" if broken else b"ok\n", "text/plain")
                elif self.path == "/stats":
                    body = {"capacity": {"requests_per_second": state.get("capacity", capacity)},
                            "load": {"requests_per_second": state.get("load", load)}}
                    self._send(200, json.dumps(body).encode(), "application/json")
                else:
                    self._send(404, b"not found\n", "text/plain")

            def _send(self, code: int, body: bytes, ctype: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.httpd.daemon_threads = True
        self.port = int(self.httpd.server_address[1])
        self._thread = threading.Thread(target=self.httpd.serve_forever, name=f"sim-{target_id}", daemon=True)

    def start(self) -> SimTarget:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
