"""The API contract on the wire: ``GET /openapi.json`` (:func:`gateway.http.openapi.build_openapi`) and the
``/docs`` page, which renders it with Swagger UI.

Swagger UI comes from npm (``static/node_modules/swagger-ui-dist``, installed with the SignalR bundle by
``npm ci --prefix static``) and is served by the gateway itself: the page loads nothing from another site.
Without the package the page says how to install it and links the raw document.
"""

from __future__ import annotations

import functools
import html
from pathlib import Path
from typing import Any

import tornado.web

from gateway.http.base import JsonHandler
from gateway.http.cors import CorsPolicy
from gateway.http.openapi import DOCS_PATH, OPENAPI_PATH, build_openapi
from gateway.http.static_site import INSTALL_HINT, STATIC_ROOT
from gateway.model import jsonutil

SWAGGER_UI_DIST = ("node_modules", "swagger-ui-dist")
#: The files of the package the page uses, served under :data:`SWAGGER_UI_URL`.
SWAGGER_UI_FILES = ("swagger-ui-bundle.js", "swagger-ui.css")
SWAGGER_UI_URL = "/static/vendor/swagger-ui/"
MISSING_SWAGGER_UI_MESSAGE = ("Swagger UI is not installed on this server, so the API cannot be shown here. "
                              + INSTALL_HINT)


def swagger_ui_folder(root: Path = STATIC_ROOT) -> Path:
    """Where the npm package ``swagger-ui-dist`` lives (it may not exist)."""
    return root.joinpath(*SWAGGER_UI_DIST)


@functools.cache
def openapi_json() -> bytes:
    """The document, encoded once per process (it depends on nothing but the code)."""
    return jsonutil.dumps(build_openapi()).encode()


class OpenApiHandler(JsonHandler):
    """``GET /openapi.json``."""

    def get(self) -> None:
        self.set_header("Cache-Control", "no-cache")  # revalidated (Tornado's ETag) after an upgrade
        self.finish(openapi_json())


# Relative URLs: the page also works behind a proxy that mounts the gateway under a path prefix.
_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Iqra web-session gateway: HTTP API</title>
<link rel="icon" href="data:,">
{head}
</head>
<body>
{body}
</body>
</html>
"""
_SWAGGER_HEAD = f'<link rel="stylesheet" href="{SWAGGER_UI_URL[1:]}swagger-ui.css">'
_SWAGGER_BODY = f"""<div id="docs"></div>
<script src="{SWAGGER_UI_URL[1:]}swagger-ui-bundle.js"></script>
<script>
  // validatorUrl null: Swagger UI would otherwise send the document to an outside validator.
  window.docsUi = SwaggerUIBundle({{url: "{OPENAPI_PATH[1:]}", dom_id: "#docs", validatorUrl: null,
                                   deepLinking: true}});
</script>"""
_MISSING_BODY = f"""<main>
<h1>Iqra web-session gateway: HTTP API</h1>
<p role="alert">{html.escape(MISSING_SWAGGER_UI_MESSAGE)}</p>
<p>The OpenAPI document itself is at <a href="{OPENAPI_PATH[1:]}">{OPENAPI_PATH}</a>.</p>
</main>"""


class DocsPageHandler(tornado.web.RequestHandler):
    """``/docs``: Swagger UI on the document, or how to install it."""

    def initialize(self, *, root: Path) -> None:
        self.root = root

    def get(self) -> None:
        installed = all((swagger_ui_folder(self.root) / name).is_file() for name in SWAGGER_UI_FILES)
        page = _PAGE.format(head=_SWAGGER_HEAD if installed else "",
                            body=_SWAGGER_BODY if installed else _MISSING_BODY)
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.set_header("Cache-Control", "no-cache")
        self.set_header("X-Content-Type-Options", "nosniff")
        self.finish(page)


class SwaggerUiFileHandler(tornado.web.StaticFileHandler):
    """The two Swagger UI files the page loads (404 when the package is missing)."""

    def get_content_type(self) -> str:
        # Spelled out: the system's MIME table (which StaticFileHandler reads) differs between machines.
        return "text/css; charset=utf-8" if self.absolute_path.endswith(".css") else "text/javascript; charset=utf-8"

    def set_extra_headers(self, path: str) -> None:
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Cache-Control", "public, max-age=3600")


def docs_routes(*, cors: CorsPolicy, root: Path | None = None) -> list[tornado.web.URLSpec]:
    """``/openapi.json``, ``/docs`` and the Swagger UI files it loads.

    :param cors: the gateway's CORS policy (the document is a JSON route like the others).
    :param root: the static folder whose ``node_modules`` holds Swagger UI; defaults to the checkout's.
    """
    folder = root or STATIC_ROOT
    files = "|".join(name.replace(".", r"\.") for name in SWAGGER_UI_FILES)
    deps: dict[str, Any] = {"cors": cors}
    return [
        tornado.web.url(OPENAPI_PATH.replace(".", r"\."), OpenApiHandler, deps),
        tornado.web.url(DOCS_PATH, DocsPageHandler, {"root": folder}),
        tornado.web.url(SWAGGER_UI_URL + f"({files})", SwaggerUiFileHandler, {"path": str(swagger_ui_folder(folder))}),
    ]


__all__ = ["MISSING_SWAGGER_UI_MESSAGE", "docs_routes", "openapi_json", "swagger_ui_folder"]
