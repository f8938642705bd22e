"""Serves the dashboard built from dashboard/ (npm run build) at /dashboard/, with its policy.

The build writes `static/index.html` and content-hashed assets beside it, so an asset may be
cached for a year while the page itself is checked on every load. A collector installed
without the build answers /dashboard/ with a page saying so, and logs it once at start.
"""

import logging
import re
from pathlib import Path

from aiohttp import web

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
PATH = "/dashboard/"
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self';"
    " img-src 'self' data:; font-src 'self'; manifest-src 'self'; form-action 'self';"
    " frame-ancestors 'none'; base-uri 'none'"
)
"""Only this origin's own files: no inline script or style, no frames, no other hosts."""
ASSET_NAME = re.compile(r"^[A-Za-z0-9_-]+-[A-Za-z0-9]{8}\.(js|css)(\.map)?$")
"""What the build names its assets: name-hash.ext; nothing else is served from assets/."""
IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"
NOT_BUILT = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Plantwire dashboard not built</title></head>
<body><h1>The dashboard is not built</h1>
<p>This collector was installed without the dashboard's files ({static}/index.html is
missing). Build them with <code>make dashboard</code> (Node.js and npm) before installing,
or install a wheel that ships them. The API is unaffected.</p></body></html>
"""


class Dashboard:
    """The dashboard's files in one folder (the package's own unless told otherwise)."""

    def __init__(self, folder: Path = STATIC) -> None:
        self.folder = folder

    @property
    def built(self) -> bool:
        """Whether the build's page is there."""
        return (self.folder / "index.html").is_file()

    async def page(self, request: web.Request) -> web.StreamResponse:
        """The single page; 503 with an explanation when the build is missing."""
        headers = {"Content-Security-Policy": CSP, "Cache-Control": REVALIDATE}
        if not self.built:
            return web.Response(
                status=503,
                text=NOT_BUILT.format(static=self.folder),
                content_type="text/html",
                headers=headers,
            )
        return web.FileResponse(self.folder / "index.html", headers=headers)

    async def asset(self, request: web.Request) -> web.StreamResponse:
        """A content-hashed script or stylesheet, cached for good."""
        name = request.match_info["name"]
        path = self.folder / "assets" / name
        if ASSET_NAME.match(name) is None or not path.is_file():
            raise web.HTTPNotFound(text=f"no dashboard file {name!r}")
        return web.FileResponse(
            path, headers={"Content-Security-Policy": CSP, "Cache-Control": IMMUTABLE}
        )


async def to_dashboard(request: web.Request) -> web.StreamResponse:
    """The root leads to the dashboard."""
    raise web.HTTPFound(PATH)


def add_dashboard(app: web.Application, dashboard: Dashboard | None = None) -> None:
    """Serve the dashboard at /dashboard/ (and send / there); log once if it is not built."""
    dashboard = dashboard or Dashboard()
    if not dashboard.built:
        log.error(
            "the dashboard is not built (%s/index.html is missing): /dashboard/ explains;"
            " run `make dashboard`",
            dashboard.folder,
        )
    app.router.add_get("/", to_dashboard)
    app.router.add_get(PATH, dashboard.page)
    app.router.add_get(PATH + "assets/{name}", dashboard.asset)
