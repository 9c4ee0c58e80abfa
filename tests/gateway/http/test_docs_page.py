"""``/docs``: Swagger UI from npm, served by the gateway itself, or a page that says how to install it.

(That it renders the document in a browser is ``tests/browser/test_docs_page.py``.)
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import tornado.web
from tornado.httpclient import AsyncHTTPClient
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets

from gateway.http.cors import CorsPolicy
from gateway.http.docs import (
    SWAGGER_UI_FILES,
    SWAGGER_UI_URL,
    docs_routes,
    swagger_ui_folder,
)
from gateway.http.static_site import STATIC_ROOT


async def test_the_page_loads_swagger_ui_and_the_document_from_the_gateway_only(stack_factory) -> None:
    stack = await stack_factory()
    page = await stack.call("GET", "/docs")
    assert page.code == 200
    assert page.headers["Content-Type"] == "text/html; charset=utf-8"
    html = page.body.decode()
    # Every URL the page names is relative to the gateway (the icon is none, so none is asked for): no CDN, no
    # outside validator.
    assert re.findall(r'(?:src|href)="([^"]+)"', html) == ["data:,", f"{SWAGGER_UI_URL[1:]}swagger-ui.css",
                                                           f"{SWAGGER_UI_URL[1:]}swagger-ui-bundle.js"]
    assert "//" not in html.replace("// validatorUrl", "")
    assert 'url: "openapi.json"' in html and "validatorUrl: null" in html
    for name, content_type in zip(SWAGGER_UI_FILES, ("text/javascript", "text/css")):
        asset = await stack.call("GET", SWAGGER_UI_URL + name)
        assert asset.code == 200, name
        assert asset.headers["Content-Type"] == f"{content_type}; charset=utf-8"
        assert asset.body == (swagger_ui_folder() / name).read_bytes()
    # Only the two files the page loads are public, not the rest of the npm package.
    assert (await stack.call("GET", SWAGGER_UI_URL + "package.json")).code == 404


async def test_without_swagger_ui_the_page_says_how_to_install_it(tmp_path: Path) -> None:
    root = tmp_path / "static"
    shutil.copytree(STATIC_ROOT, root, ignore=shutil.ignore_patterns("node_modules"))
    sockets = bind_sockets(0, "127.0.0.1")
    server = HTTPServer(tornado.web.Application(docs_routes(cors=CorsPolicy(()), root=root)))
    server.add_sockets(sockets)
    base = f"http://127.0.0.1:{sockets[0].getsockname()[1]}"
    client = AsyncHTTPClient(force_instance=True)
    try:
        page = await client.fetch(base + "/docs", raise_error=False)
        assert page.code == 200
        html = page.body.decode()
        assert 'role="alert"' in html and "npm ci --prefix static" in html
        assert '<a href="openapi.json">' in html and "swagger-ui-bundle.js" not in html
        assert (await client.fetch(base + SWAGGER_UI_URL + SWAGGER_UI_FILES[0], raise_error=False)).code == 404
        assert (await client.fetch(base + "/openapi.json", raise_error=False)).code == 200
    finally:
        client.close()
        server.stop()
        await server.close_all_connections()
