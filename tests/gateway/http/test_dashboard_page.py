"""``/admin``: the dashboard's page and files, served by the gateway itself with a strict Content-Security-Policy,
uPlot from npm, or a notice saying how to install it.

(That the page works against the admin API in a browser is ``tests/browser/test_admin_dashboard.py``.)
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
from gateway.http.dashboard import (
    CONTENT_SECURITY_POLICY,
    MISSING_UPLOT_MESSAGE,
    UPLOT_FILES,
    UPLOT_URL,
    dashboard_routes,
    uplot_folder,
)
from gateway.http.static_site import STATIC_ROOT

ADMIN_FOLDER = STATIC_ROOT / "admin"
TEXT_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}


def _assert_locked_down(headers) -> None:
    policy = dict(part.strip().split(" ", 1) for part in headers["Content-Security-Policy"].split(";"))
    assert policy["script-src"] == "'self'" and policy["default-src"] == "'none'"
    assert policy["frame-ancestors"] == "'none'" and policy["connect-src"] == "'self'"
    assert "unsafe" not in headers["Content-Security-Policy"]
    assert headers["X-Frame-Options"] == "DENY"
    assert headers["X-Content-Type-Options"] == "nosniff"


async def test_the_page_is_locked_down_and_loads_only_the_gateways_files(stack_factory) -> None:
    stack = await stack_factory()
    page = await stack.call("GET", "/admin")
    assert page.code == 200
    assert page.headers["Content-Type"] == "text/html; charset=utf-8"
    assert page.headers["Cache-Control"] == "no-store"
    assert page.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    _assert_locked_down(page.headers)
    html = page.body.decode()
    # Every URL is relative to the gateway (no CDN), every script is a file (the policy forbids inline ones).
    urls = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert urls == ["data:,", f"{UPLOT_URL[1:]}uPlot.min.css", "admin/dashboard.css",
                    f"{UPLOT_URL[1:]}uPlot.iife.min.js", "admin/stats.js", "admin/charts.js", "admin/dashboard.js"]
    assert len(re.findall(r"<script\b", html)) == len(re.findall(r'<script src="[^"]+" defer></script>', html)) == 4
    assert "style=" not in html and "<style" not in html and not re.search(r"\son[a-z]+\s*=", html, re.IGNORECASE)
    assert 'type="password"' in html and 'class="notice"' not in html  # uPlot is installed: no notice
    for url in urls[1:]:
        asset = await stack.call("GET", "/" + url)
        assert asset.code == 200, url
        assert asset.headers["Content-Type"] == TEXT_TYPES[Path(url).suffix], url
        _assert_locked_down(asset.headers)
        folder = uplot_folder() if url.startswith(UPLOT_URL[1:]) else ADMIN_FOLDER
        assert asset.body == (folder / Path(url).name).read_bytes(), url
    assert (await stack.call("GET", UPLOT_URL + UPLOT_FILES[0])).headers["Cache-Control"] == "public, max-age=3600"


async def test_only_the_files_the_page_loads_are_public(stack_factory) -> None:
    stack = await stack_factory()
    for path in ("/admin/index.html", "/admin/../package.json", "/static/admin/dashboard.js",
                 UPLOT_URL + "uPlot.esm.js", UPLOT_URL + "../package.json"):
        assert (await stack.call("GET", path)).code == 404, path


async def test_admin_with_a_slash_goes_back_to_the_page(stack_factory) -> None:
    # Relative URLs resolve under /admin/ to /admin/admin/...: the page only works without the slash.
    stack = await stack_factory()
    answer = await stack.http.fetch(stack.base_url + "/admin/", follow_redirects=False, raise_error=False)
    assert answer.code == 301
    assert answer.headers["Location"] == "../admin"


async def test_without_uplot_the_page_says_how_to_install_it(tmp_path: Path) -> None:
    root = tmp_path / "static"
    shutil.copytree(STATIC_ROOT, root, ignore=shutil.ignore_patterns("node_modules"))
    sockets = bind_sockets(0, "127.0.0.1")
    server = HTTPServer(tornado.web.Application(dashboard_routes(cors=CorsPolicy(()), root=root)))
    server.add_sockets(sockets)
    base = f"http://127.0.0.1:{sockets[0].getsockname()[1]}"
    client = AsyncHTTPClient(force_instance=True)
    try:
        page = await client.fetch(base + "/admin", raise_error=False)
        assert page.code == 200
        html = page.body.decode()
        assert '<p class="notice" role="alert">' in html and "npm ci --prefix static" in html
        assert MISSING_UPLOT_MESSAGE.split(",")[0] in html
        # The page still works without charts, and asks for no file that is not there.
        assert UPLOT_URL[1:] not in html and "admin/dashboard.js" in html
        assert (await client.fetch(base + UPLOT_URL + UPLOT_FILES[0], raise_error=False)).code == 404
    finally:
        client.close()
        server.stop()
        await server.close_all_connections()
