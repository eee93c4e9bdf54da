"""The dashboard: one page served by the aggregator next to the query API it reads.

Everything the browser needs is in ``static/`` (hand-written JavaScript modules, CSS, inline
SVG charts): no build step, no CDN, no external font, so the page works on a machine without
internet access. The page signs in once with the read key (``POST /v1/session`` sets the
HttpOnly cookie), then reads the query API with that cookie and follows the live SSE stream
(``EventSource`` cannot send an Authorization header, hence the cookie).

The one route of its own, ``GET /v1/deployments/{d}/violations`` (violations.py), lists violated
monitor windows for the quality charts' markers; it is a route of the query API's sub-application
(api/wiring.py), so the API's keys guard it.
docs/dashboard.md describes the page.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

STATIC = Path(__file__).resolve().parent / "static"
PREFIX = "/dashboard"

# The page loads nothing from elsewhere, so the policy can say so: a script injected through
# data (an answer, a span attribute) could not run inline, nor send anything to another origin.
_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")


async def _index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "index.html")


async def _to_dashboard(request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound(f"{PREFIX}/")


async def _headers(request: web.Request, response: web.StreamResponse) -> None:
    if request.path == "/" or request.path.startswith(PREFIX):
        response.headers["Content-Security-Policy"] = _CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        # Revalidate every time (cheap: Last-Modified), so an upgrade never mixes old and new files.
        response.headers["Cache-Control"] = "no-cache"


def setup(app: web.Application) -> None:
    """Add the dashboard's page to the aggregator's application."""
    router = app.router
    router.add_get("/", _to_dashboard)
    router.add_get(PREFIX, _to_dashboard)
    router.add_get(f"{PREFIX}/", _index)
    router.add_static(f"{PREFIX}/static", STATIC)
    app.on_response_prepare.append(_headers)
