"""The student page: `GET /` and its static files under `/static/`.

Plain ES modules and AudioWorklet modules, served as they are (no build step). Every response
says `Cache-Control: no-cache` so a redeployed worker never runs a stale page against a newer
protocol, and `.js` goes out as `text/javascript`, which `audioWorklet.addModule` insists on.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

STATIC_DIR = Path(__file__).resolve().parent / "static"
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
}
NO_CACHE = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
# Looked up by name, never built from the request: no traversal, no NUL reaching the filesystem.
FILES = {p.name: p for p in STATIC_DIR.iterdir() if p.suffix in CONTENT_TYPES and p.is_file()}
_PAGES = web.AppKey("pages_routes", bool)


def _file_response(path: Path) -> web.FileResponse:
    headers = {**NO_CACHE, "Content-Type": CONTENT_TYPES[path.suffix]}
    return web.FileResponse(path, headers=headers)


async def index(_request: web.Request) -> web.FileResponse:
    return _file_response(STATIC_DIR / "index.html")


async def static_file(request: web.Request) -> web.StreamResponse:
    path = FILES.get(request.match_info["name"])
    if path is None:
        raise web.HTTPNotFound(text="no such file")
    return _file_response(path)


def add_page_routes(app: web.Application) -> None:
    """Register `GET /` and `GET /static/{name}`; calling it twice on one app is harmless."""
    if app.get(_PAGES):
        return
    app[_PAGES] = True
    app.router.add_get("/", index)
    app.router.add_get("/static/{name}", static_file)
