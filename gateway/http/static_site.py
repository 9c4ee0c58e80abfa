"""Serves the browser side: the embeddable widget under ``/static/``, the SignalR browser bundle at
``/static/vendor/signalr.js`` and, for ``iqra-gateway demo``, the demo page at ``/``.

The widget is embedded by sites on other origins, so its files carry ``Access-Control-Allow-Origin: *``
(the AudioWorklet module is fetched in CORS mode; the files are public anyway). Only flat files with
web extensions are served, so ``static/node_modules`` and ``package.json`` stay private.

The SignalR bundle comes from npm (``static/node_modules``). When it is missing the route answers with a
script that says how to install it, which the widget then shows, and the demo page carries a notice.
"""

from __future__ import annotations

from pathlib import Path

import tornado.web


def _find_root() -> Path:
    # An installed wheel carries the files as gateway/static/ (setup.py copies them there, npm bundles
    # included); a checkout, or an editable install of one, has them in static/ next to gateway/.
    package = Path(__file__).resolve().parents[1]
    installed = package / "static"
    if (installed / "widget.js").is_file():
        return installed
    return package.parent / "static"


#: The folder with widget.js, the demo page and node_modules/.
STATIC_ROOT = _find_root()
SIGNALR_DIST = ("node_modules", "@microsoft", "signalr", "dist", "browser")
INSTALL_HINT = "Install it with `bash scripts/demo.sh` or `npm ci --prefix static`, then reload."
MISSING_BUNDLE_MESSAGE = "The SignalR browser bundle is not installed on this server. " + INSTALL_HINT
NOTICE_MARKER = "<!--signalr-notice-->"


def signalr_bundle(root: Path = STATIC_ROOT) -> Path:
    """Where the minified SignalR browser bundle lives (it may not exist)."""
    return root.joinpath(*SIGNALR_DIST, "signalr.min.js")


class WidgetFileHandler(tornado.web.StaticFileHandler):
    """Static files that any site may load (the widget runs on the embedding site's origin)."""

    def set_extra_headers(self, path: str) -> None:
        self.set_header("Access-Control-Allow-Origin", "*")
        self.set_header("X-Content-Type-Options", "nosniff")
        if not self.get_query_argument("v", None):
            # Unversioned URLs must not stick in caches across upgrades of the widget.
            self.set_header("Cache-Control", "no-cache")


class SignalRBundleHandler(tornado.web.RequestHandler):
    """``/static/vendor/signalr.js``: the npm bundle, or a script explaining how to install it."""

    def initialize(self, *, root: Path) -> None:
        self.root = root

    def set_default_headers(self) -> None:
        self.set_header("Access-Control-Allow-Origin", "*")
        self.set_header("Content-Type", "text/javascript; charset=utf-8")
        self.set_header("X-Content-Type-Options", "nosniff")

    def get(self) -> None:
        bundle = signalr_bundle(self.root)
        try:
            data = bundle.read_bytes()
        except FileNotFoundError:
            # A 200 with a script (not a 404) so the page can read the reason instead of a bare load error.
            self.set_header("Cache-Control", "no-store")
            message = MISSING_BUNDLE_MESSAGE.replace("\\", "\\\\").replace('"', '\\"')
            self.finish(f'window.IqraSignalRMissing = "{message}";\nconsole.error(window.IqraSignalRMissing);\n')
            return
        self.set_header("Cache-Control", "public, max-age=3600")
        self.finish(data)


class DemoPageHandler(tornado.web.RequestHandler):
    """``/``: the demo page, with an install notice when the SignalR bundle is missing."""

    def initialize(self, *, root: Path) -> None:
        self.root = root

    def get(self) -> None:
        html = (self.root / "index.html").read_text(encoding="utf-8")
        if not signalr_bundle(self.root).is_file():
            notice = ('<p class="demo-notice" role="alert"><strong>Queueing will not work:</strong> the SignalR '
                      "browser bundle is missing. Install it with <code>bash scripts/demo.sh</code> or "
                      "<code>npm ci --prefix static</code>, then reload.</p>")
            html = html.replace(NOTICE_MARKER, notice)
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.set_header("Cache-Control", "no-cache")
        self.finish(html)


def static_routes(*, demo: bool, root: Path | None = None) -> list[tornado.web.URLSpec]:
    """Routes for the widget's files, and the demo page at ``/`` when ``demo`` is true.

    :param demo: also serve the demo page at ``/`` (only ``iqra-gateway demo`` wants that).
    :param root: the folder to serve; defaults to the checkout's ``static/``.
    """
    folder = root or STATIC_ROOT
    routes: list[tornado.web.URLSpec] = [
        tornado.web.url(r"/static/vendor/signalr\.js", SignalRBundleHandler, {"root": folder}),
        tornado.web.url(r"/static/([A-Za-z0-9_-]+\.(?:js|css|html|svg|png|ico|webp))", WidgetFileHandler,
                        {"path": str(folder)}),
    ]
    if demo:
        routes.append(tornado.web.url(r"/", DemoPageHandler, {"root": folder}))
    return routes


__all__ = ["MISSING_BUNDLE_MESSAGE", "STATIC_ROOT", "signalr_bundle", "static_routes"]
