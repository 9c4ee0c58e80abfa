"""The wheel works alone: ``pip wheel .`` from the checkout, installed into a fresh virtual environment,
then ``iqra-gateway demo`` run outside the checkout serves the widget, the SignalR browser bundle and a
queue that moves, with nothing imported from the checkout and no npm.

The wheel's dependencies come from the package index through pip's cache, as a user's install would.
"""

from __future__ import annotations

import ast
import asyncio
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from tornado.httpclient import AsyncHTTPClient

from gateway.http import static_site
from tests.harness.paths import ROOT
from tests.harness.processes import ChildProcess
from tests.harness.redis_process import free_port
from tests.harness.session_hub import HubClient
from tests.harness.stack import body_of, session_body

pytestmark = pytest.mark.slow

SIGNALR_BUNDLE = Path("node_modules", "@microsoft", "signalr", "dist", "browser", "signalr.min.js")
UPLOT_BUNDLE = Path("node_modules", "uplot", "dist", "uPlot.iife.min.js")
INSTALL_TIMEOUT = 240


def _outside_env() -> dict[str, str]:
    """The environment of a user's shell: no PYTHONPATH pointing into the checkout."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update(PIP_DISABLE_PIP_VERSION_CHECK="1", PYTHONUNBUFFERED="1")
    return env


def _run(*args: object, cwd: Path) -> str:
    done = subprocess.run([str(a) for a in args], cwd=cwd, env=_outside_env(), capture_output=True, text=True,
                          timeout=INSTALL_TIMEOUT, check=False)
    assert done.returncode == 0, f"{args} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dist = tmp_path_factory.mktemp("dist")
    _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", dist, ROOT, cwd=dist)
    (built,) = dist.glob("iqra_gateway-*.whl")
    return built


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment with the wheel and its dependencies (not the test extras)."""
    home = tmp_path_factory.mktemp("user")
    _run(sys.executable, "-m", "venv", home / "venv", cwd=home)
    _run(home / "venv" / "bin" / "python", "-m", "pip", "install", "-q", wheel, cwd=home)
    return home / "venv"


def _npm_bundles() -> list[str]:
    """setup.py's NPM_BUNDLES (read, not imported: importing setup.py would run setup())."""
    tree = ast.parse((ROOT / "setup.py").read_text())
    (value,) = [node.value for node in tree.body if isinstance(node, ast.Assign)
                and any(isinstance(t, ast.Name) and t.id == "NPM_BUNDLES" for t in node.targets)]
    return ast.literal_eval(value)


def test_the_wheel_carries_the_packages_lua_scripts_and_browser_files(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    top_level = {name.split("/")[0] for name in names if not name.startswith("iqra_gateway-")}
    assert top_level == {"gateway", "signalr", "ratelimit", "geo", "simulator"}
    for folder in ("gateway/admission/lua", "gateway/live/lua", "ratelimit/lua"):
        expected = {f"{folder}/{p.name}" for p in (ROOT / folder).glob("*.lua")}
        assert expected and expected <= names, folder
    browser = {p.name for p in (ROOT / "static").iterdir() if p.suffix in (".js", ".css", ".html")}
    assert {f"gateway/static/{name}" for name in browser} <= names
    assert f"gateway/static/{SIGNALR_BUNDLE.as_posix()}" in names
    # Every npm file the gateway serves (the SignalR bundle, Swagger UI, uPlot) and the licences beside them.
    bundles = _npm_bundles()
    assert UPLOT_BUNDLE.relative_to("node_modules").as_posix() in bundles and "uplot/LICENSE" in bundles
    for pattern in bundles:
        found = [p.relative_to(ROOT / "static").as_posix() for p in (ROOT / "static" / "node_modules").glob(pattern)]
        assert found and {f"gateway/static/{path}" for path in found} <= names, pattern
    # The admin dashboard's own files, in their folder.
    admin = {f"gateway/static/admin/{p.name}" for p in (ROOT / "static" / "admin").iterdir()}
    assert "gateway/static/admin/index.html" in admin and admin <= names
    assert not any(name.startswith("gateway/static/") and name.endswith(".json") for name in names)


def test_a_checkout_serves_its_own_static_folder():
    assert static_site.STATIC_ROOT == ROOT / "static"


def test_a_wheel_is_not_built_without_the_npm_bundles(tmp_path):
    # A checkout where `npm ci --prefix static` never ran: the wheel would serve a demo whose queue is dead.
    source = tmp_path / "checkout"
    for name in ("setup.py", "pyproject.toml"):
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        (source / name).write_bytes((ROOT / name).read_bytes())
    ignore = shutil.ignore_patterns("node_modules", "__pycache__")
    for package in ("gateway", "signalr", "ratelimit", "geo", "simulator", "static"):
        shutil.copytree(ROOT / package, source / package, ignore=ignore)
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", tmp_path / "dist", source],
                          cwd=tmp_path, env=_outside_env(), capture_output=True, text=True, timeout=INSTALL_TIMEOUT,
                          check=False)
    assert done.returncode != 0
    assert "static/node_modules/@microsoft/signalr/dist/browser/signalr.min.js is missing" in done.stderr
    assert "npm ci --prefix static" in done.stderr
    assert not list(tmp_path.glob("dist/*.whl"))


async def test_the_installed_wheel_runs_a_demo_whose_queue_works(venv):
    where = _run(venv / "bin" / "python", "-c", "import gateway, signalr; print(gateway.__file__, signalr.__file__)",
                 cwd=venv.parent)
    assert all(Path(path).is_relative_to(venv) for path in where.split()), where
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        str(venv / "bin" / "iqra-gateway"), "demo", "--host", "127.0.0.1", "--port", str(port), "--call-seconds", "60",
        cwd=venv.parent, env=_outside_env(), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    demo = ChildProcess("iqra-gateway demo", proc)
    http = AsyncHTTPClient(force_instance=True)
    base = f"http://127.0.0.1:{port}"
    try:
        await asyncio.wait_for(demo.line_containing("Press Ctrl+C"), 30)
        page = await http.fetch(base + "/")
        assert b'id="voice-widget"' in page.body
        assert b"demo-notice" not in page.body  # the page would say the bundle is missing
        widget = await http.fetch(base + "/static/widget.js")
        assert widget.body == (ROOT / "static" / "widget.js").read_bytes()
        bundle = await http.fetch(base + "/static/vendor/signalr.js")
        assert bundle.body == (ROOT / "static" / SIGNALR_BUNDLE).read_bytes()
        # The admin dashboard with its charts (the page has no notice of a missing uPlot).
        dashboard = await http.fetch(base + "/admin")
        assert b'type="password"' in dashboard.body and b'class="notice"' not in dashboard.body
        chart = await http.fetch(base + "/static/vendor/uplot/" + UPLOT_BUNDLE.name)
        assert chart.body == (ROOT / "static" / UPLOT_BUNDLE).read_bytes()

        answers = []
        for _ in range(3):
            response = await http.fetch(base + "/api/session/request", method="POST", raise_error=False,
                                        body=json.dumps(session_body("DemoCampaign", "local")),
                                        headers={"Content-Type": "application/json"})
            answers.append((response.code, body_of(response)))
        assert [code for code, _ in answers] == [200, 200, 202], answers  # the demo's cap is 2
        queued_id = answers[2][1]["uniqueRequestId"]

        # The queue moves: a call ends (the simulator sends the webhook) and the waiting client is served.
        hub = await HubClient.connect(base)
        try:
            await hub.register(queued_id)
            ended = await http.fetch(base + "/api/demo/end-call", method="POST", body=b"")
            assert body_of(ended)["ended"] is True
            _, ready = await hub.next_event("SessionReady", timeout=15)
            assert ready["webSocketUrl"].startswith("ws://127.0.0.1:")
        finally:
            await hub.close()
    finally:
        http.close()
        await demo.stop()
    assert proc.returncode == 0, "\n".join(demo.lines[-30:])
