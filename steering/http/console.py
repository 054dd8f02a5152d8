"""The browser console's files: ``/`` and ``/console/<name>`` from ``steering/http/console/`` (docs/console.md).

Plain files, no build step: what is in the directory is what is served,
nothing generated. Only names of files in that directory are served (no
subdirectories, no ``..``), read once at start. They carry no secret, so no
token is asked for them; the API calls the page makes are authenticated as
any other. The Content-Security-Policy lets the page load only its own files
and talk only to its own origin: a string from the server that slipped into
the page as markup still could not run.
"""

from __future__ import annotations

import mimetypes
import re
from pathlib import Path

from aiohttp import web

DIRECTORY = Path(__file__).with_name("console")
PREFIX = "/console/"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,100}$")
_TYPES = {".js": "text/javascript", ".css": "text/css", ".html": "text/html", ".svg": "image/svg+xml",
          ".txt": "text/plain", ".json": "application/json", ".ico": "image/x-icon", ".png": "image/png"}
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
           "X-Frame-Options": "DENY", "Cache-Control": "no-cache"}


class ConsoleFiles:
    """The files, read once: a console edited on disk shows after a restart, as code does."""

    def __init__(self, directory: Path = DIRECTORY) -> None:
        self.files: dict[str, tuple[bytes, str]] = {}
        if directory.is_dir():
            for path in sorted(directory.iterdir()):
                if path.is_file() and _NAME.match(path.name):
                    kind = _TYPES.get(path.suffix) or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
                    self.files[path.name] = (path.read_bytes(), kind)

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/", self._index)
        app.router.add_get(PREFIX + "{name}", self._file)

    async def _index(self, request: web.Request) -> web.Response:
        return self._respond("index.html")

    async def _file(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if not _NAME.match(name) or name == "index.html":
            raise web.HTTPNotFound()
        return self._respond(name)

    def _respond(self, name: str) -> web.Response:
        found = self.files.get(name)
        if found is None:
            if name == "index.html":
                return web.Response(status=503, text="the console's files are not installed "
                                    f"(expected in {DIRECTORY}); the API is at /api/v1/\n", headers=HEADERS)
            raise web.HTTPNotFound()
        body, kind = found
        charset = "utf-8" if kind.startswith("text/") or kind in ("application/json", "image/svg+xml") else None
        return web.Response(body=body, content_type=kind, charset=charset, headers=HEADERS)
