"""The operator's live dashboard at ``/admin``: a static page (``static/admin/``) that talks to the admin
API (``/api/admin/...``) from the browser with the token the operator types in.

The page holds the token in its own memory only, so the gateway serves it like any static file: no session,
no cookie, nothing to authenticate here. What it does send is a strict Content-Security-Policy (scripts and
styles from this gateway only, no inline script, no framing), since the page handles a token that can pause
the whole queue.

The charts are drawn by uPlot from npm (``static/node_modules/uplot``, installed with the SignalR bundle by
``npm ci --prefix static``), served by the gateway itself under :data:`UPLOT_URL`. Without it the page
carries a notice saying how to install it, and still shows the numbers, the tables and the controls.
"""

from __future__ import annotations

import html
from pathlib import Path

import tornado.web

from gateway.http.cors import CorsPolicy
from gateway.http.static_site import INSTALL_HINT, STATIC_ROOT

DASHBOARD_PATH = "/admin"
#: The page's own files, in ``static/admin/``.
DASHBOARD_FOLDER = "admin"
DASHBOARD_FILES = ("dashboard.js", "charts.js", "stats.js", "dashboard.css")
UPLOT_DIST = ("node_modules", "uplot", "dist")
#: The files of the package the page uses, served under :data:`UPLOT_URL`.
UPLOT_FILES = ("uPlot.iife.min.js", "uPlot.min.css")
UPLOT_URL = "/static/vendor/uplot/"
MISSING_UPLOT_MESSAGE = ("The charting library (uPlot) is not installed on this server, so the dashboard shows "
                         "numbers without charts. " + INSTALL_HINT)
NOTICE_MARKER = "<!--charts-notice-->"

#: The page loads its scripts, styles and API answers from this gateway only. uPlot sizes its elements through
#: the CSSOM (element.style), which style-src does not govern, so no 'unsafe-inline' is needed anywhere.
CONTENT_SECURITY_POLICY = "; ".join([
    "default-src 'none'", "script-src 'self'", "style-src 'self'", "img-src 'self' data:", "connect-src 'self'",
    "base-uri 'none'", "form-action 'none'", "frame-ancestors 'none'",
])
_TEXT_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}


def uplot_folder(root: Path = STATIC_ROOT) -> Path:
    """Where uPlot's browser files live (the folder may not exist)."""
    return root.joinpath(*UPLOT_DIST)


def _set_page_headers(handler: tornado.web.RequestHandler) -> None:
    handler.set_header("Content-Security-Policy", CONTENT_SECURITY_POLICY)
    handler.set_header("X-Frame-Options", "DENY")
    handler.set_header("X-Content-Type-Options", "nosniff")
    handler.set_header("Referrer-Policy", "no-referrer")


class DashboardPageHandler(tornado.web.RequestHandler):
    """``GET /admin``: the dashboard, with a notice when uPlot is missing."""

    def initialize(self, *, root: Path) -> None:
        self.root = root

    def get(self) -> None:
        page = (self.root / DASHBOARD_FOLDER / "index.html").read_text(encoding="utf-8")
        if not all((uplot_folder(self.root) / name).is_file() for name in UPLOT_FILES):
            notice = f'<p class="notice" role="alert">{html.escape(MISSING_UPLOT_MESSAGE)}</p>'
            # Without the tags of the missing files the browser logs no failed load on every visit.
            page = "\n".join(line for line in page.replace(NOTICE_MARKER, notice).splitlines()
                              if UPLOT_URL[1:] not in line) + "\n"
        _set_page_headers(self)
        self.set_header("Content-Type", "text/html; charset=utf-8")
        # The page itself holds nothing secret, but a cached copy would outlive an upgrade of its scripts.
        self.set_header("Cache-Control", "no-store")
        self.finish(page)


class DashboardFileHandler(tornado.web.StaticFileHandler):
    """The page's scripts and styles, and uPlot's two files (404 when the package is missing)."""

    def initialize(self, path: str, *, max_age: int = 0) -> None:  # type: ignore[override]
        super().initialize(path)
        self.max_age = max_age

    def get_content_type(self) -> str:
        # Spelled out: the system's MIME table (which StaticFileHandler reads) differs between machines.
        return _TEXT_TYPES[Path(self.absolute_path).suffix]

    def set_extra_headers(self, path: str) -> None:
        _set_page_headers(self)
        # The page's own files change with the gateway (revalidated by ETag); the vendor files may stay a while.
        self.set_header("Cache-Control", f"public, max-age={self.max_age}" if self.max_age else "no-cache")


def _alternatives(names: tuple[str, ...]) -> str:
    return "(" + "|".join(name.replace(".", r"\.") for name in names) + ")"


def dashboard_routes(*, cors: CorsPolicy, root: Path | None = None) -> list[tornado.web.URLSpec]:
    """``/admin``, its scripts and styles, and the uPlot files it loads.

    :param cors: the gateway's CORS policy. Unused: the page and its files are for the gateway's own origin
        (the admin API they call answers foreign pages as its routes decide), so they carry no CORS headers.
    :param root: the static folder with ``admin/`` and ``node_modules``; defaults to the checkout's.
    """
    del cors
    folder = root or STATIC_ROOT
    return [
        tornado.web.url(DASHBOARD_PATH, DashboardPageHandler, {"root": folder}),
        # The page names its files relative to /admin; /admin/ would resolve them wrongly, so it goes back.
        tornado.web.url(DASHBOARD_PATH + "/", tornado.web.RedirectHandler, {"url": "../admin"}),
        tornado.web.url(f"{DASHBOARD_PATH}/{_alternatives(DASHBOARD_FILES)}", DashboardFileHandler,
                        {"path": str(folder / DASHBOARD_FOLDER)}),
        tornado.web.url(UPLOT_URL + _alternatives(UPLOT_FILES), DashboardFileHandler,
                        {"path": str(uplot_folder(folder)), "max_age": 3600}),
    ]


__all__ = ["CONTENT_SECURITY_POLICY", "MISSING_UPLOT_MESSAGE", "UPLOT_FILES", "UPLOT_URL", "dashboard_routes",
           "uplot_folder"]
