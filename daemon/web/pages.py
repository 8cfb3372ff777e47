"""The dashboard's static files, shipped in the package and served at /.

The page holds no data: every number it shows comes from /api/, under the same
admin rule as any other client, so serving it needs no token. Scripts come only
from this origin (no CDN, no inline script), which the Content-Security-Policy
states for the browser.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from daemon.errors import ApiError, Handler

STATIC_DIR = Path(__file__).resolve().parent / "static"

_SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; "
        "script-src 'self'; connect-src 'self'; base-uri 'none'; "
        "form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


def add_routes(app: web.Application) -> None:
    app.router.add_get("/", index)
    app.router.add_get("/static", static_file)
    app.router.add_get("/static/{name:.*}", static_file)
    app.middlewares.append(_page_headers)


# The folder is flat and fixed at install time: a request names one of these
# files exactly, so no path is ever joined from what the client sent.
_STATIC_FILES = frozenset(path.name for path in STATIC_DIR.iterdir() if path.is_file())


async def static_file(request: web.Request) -> web.FileResponse:
    name = request.match_info.get("name", "")
    if name not in _STATIC_FILES:
        raise ApiError(404, "not_found", f"no static file {request.path!r}")
    return web.FileResponse(STATIC_DIR / name)


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(
        STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"}
    )


@web.middleware
async def _page_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    response = await handler(request)
    if request.path == "/" or request.path.startswith("/static/"):
        response.headers.update(_SECURITY_HEADERS)
        response.headers.setdefault("Cache-Control", "no-cache")
    return response
