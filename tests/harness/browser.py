"""Headless Chromium against a whole gateway stack, for the widget's browser tests.

The stack is the one of :mod:`tests.harness.stack` (gateway + platform simulator as real Tornado servers on
loopback) with the widget's files, the demo page and the demo API mounted, plus, when a test needs a
page on another origin, a tiny "customer site" server that embeds the widget from the gateway.
Chromium is Debian's (never a downloaded one) with a fake microphone that plays a tone.
"""

from __future__ import annotations

import copy
import logging
import re
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
import tornado.web
from playwright.async_api import Browser, ConsoleMessage, Page, Playwright, async_playwright
from tornado.httpclient import AsyncHTTPClient
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets

from gateway.app import Gateway
from gateway.cli.demo_api import demo_routes
from gateway.config import load_settings
from gateway.http.static_site import static_routes
from simulator.app import PlatformSimulator, make_simulator_app
from tests.harness.paths import ROOT
from tests.harness.stack import API_TOKEN, WEBHOOK_TOKEN, Stack

CHROMIUM = "/usr/bin/chromium"
BASE_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", "--no-first-run", "--use-fake-device-for-media-stream"]
FAKE_UI = "--use-fake-ui-for-media-stream"
SCREENSHOTS = ROOT / "artifacts" / "screenshots"
#: Generous for a shared 2-core machine, still far below the pytest timeout.
WAIT_MS = 15_000


def demo_config(*, cap: int | None = 2, origins: list[str] | None = None, **sections: Any) -> dict[str, Any]:
    """The demo's configuration (campaign ``DemoCampaign``, region ``local``), with test overrides."""
    config: dict[str, Any] = {
        # The demo page is served by the gateway: its own origin is allowed, as `iqra-gateway demo` does.
        "AllowedOrigins": ["{gateway}", *(origins or [])],
        "VoiceAiPlatform": {"ApiSecretToken": API_TOKEN, "BaseUrl": "http://placeholder/api/v1/",
                            "Campaigns": {"DemoCampaign": {"BusinessId": "1", "WebCampaignId": "demo-web-campaign",
                                                           "AllowedRegionIds": ["local"]}},
                            "RequestTimeoutSeconds": 3, "ConnectTimeoutSeconds": 3},
        "Security": {"WebhookApiToken": WEBHOOK_TOKEN},
        "Concurrency": {"MaxConcurrentSessions": cap, "PendingLeaseSeconds": 10},
    }
    if cap is None:
        del config["Concurrency"]["MaxConcurrentSessions"]
    for key, value in sections.items():
        config.setdefault(key, {}).update(value)
    return config


def demo_body(**overrides: Any) -> dict[str, Any]:
    """A session request as the demo page's widget sends it."""
    body: dict[str, Any] = {
        "campaignId": "DemoCampaign", "regionId": "local", "transportType": 0, "clientIdentifier": None,
        "dynamicVariables": {}, "metadata": {},
        "audioConfiguration": {"inputEncodingType": 1, "inputSampleRate": 16000, "inputBitsPerSample": 16,
                               "outputEncodingType": 1, "outputSampleRate": 16000, "outputBitsPerSample": 16},
    }
    body.update(overrides)
    return body


async def start_widget_stack(redis_client: aioredis.Redis, *, config: dict[str, Any],
                             call_seconds: float | None = None, dispatch_interval: float = 0.2,
                             static_root: Path | None = None) -> Stack:
    """Gateway + simulator (as :func:`tests.harness.stack.start_stack`) with the static site and demo API
    mounted before the gateway starts. ``config["AllowedOrigins"]`` may use ``{gateway}`` for the
    gateway's own origin."""
    gw_sockets = bind_sockets(0, "127.0.0.1")
    gw_port = gw_sockets[0].getsockname()[1]
    sim = PlatformSimulator(api_token=API_TOKEN, webhook_url=f"http://127.0.0.1:{gw_port}/api/webhook/session-ended",
                            webhook_token=WEBHOOK_TOKEN, call_seconds=call_seconds, webhook_retry_delays=(0.05, 0.1))
    sim_sockets = bind_sockets(0, "127.0.0.1")
    sim_port = sim_sockets[0].getsockname()[1]
    sim_server = HTTPServer(make_simulator_app(sim))
    sim_server.add_sockets(sim_sockets)
    config = copy.deepcopy(config)
    config["VoiceAiPlatform"]["BaseUrl"] = f"http://127.0.0.1:{sim_port}/api/v1/"
    gateway_origin = f"http://127.0.0.1:{gw_port}"
    config["AllowedOrigins"] = [o.replace("{gateway}", gateway_origin) for o in config.get("AllowedOrigins", [])]
    settings = load_settings(data=config, environ={}).settings
    gateway = Gateway(settings, redis=redis_client, dispatch_interval=dispatch_interval)
    sim_url = f"http://127.0.0.1:{sim_port}"
    gateway.add_routes([*static_routes(demo=True, root=static_root), *demo_routes(gateway, simulator_url=sim_url)])
    await gateway.start(sockets=gw_sockets)
    http = AsyncHTTPClient(force_instance=True)
    return Stack(gateway=gateway, sim=sim, sim_server=sim_server, base_url=gateway_origin, sim_url=sim_url, http=http)


class _SitePage(tornado.web.RequestHandler):
    def initialize(self, *, site: SiteServer) -> None:
        self.site = site

    def get(self) -> None:
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.finish(self.site.html)


def embed_html(gateway_url: str) -> str:
    """A customer's page: one tag for the widget, one call to mount it."""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Customer site</title>
<link rel="stylesheet" href="{gateway_url}/static/widget.css">
<style>body {{ font-family: sans-serif; margin: 2rem; background: #fafafa; }}</style></head>
<body><h1>Shop.example support</h1><div id="voice"></div>
<script src="{gateway_url}/static/widget.js"></script>
<script>
  window.demoWidget = IqraWidget.mount(document.getElementById("voice"), {{
    middlewareUrl: "{gateway_url}/", campaignId: "DemoCampaign", regionId: "local",
    fields: [{{ name: "FirstName", label: "Name", target: "dynamicVariable", required: true }}],
  }});
</script></body></html>"""


@dataclass
class SiteServer:
    """A web server on its own origin (another port is another origin) serving ``html`` at ``/``;
    the page is set after start, since it usually names a gateway that needs this origin first."""

    origin: str
    html: str = "<!doctype html><title>not ready</title>"
    server: HTTPServer | None = None

    async def close(self) -> None:
        assert self.server is not None
        self.server.stop()
        await self.server.close_all_connections()


def start_site() -> SiteServer:
    sockets = bind_sockets(0, "127.0.0.1")
    site = SiteServer(origin=f"http://127.0.0.1:{sockets[0].getsockname()[1]}")
    site.server = HTTPServer(tornado.web.Application([(r"/", _SitePage, {"site": site})]))
    site.server.add_sockets(sockets)
    return site


@asynccontextmanager
async def chromium(*, fake_ui: bool = True) -> AsyncIterator[Browser]:
    """Debian's headless Chromium with a fake microphone; ``fake_ui`` auto-accepts permission prompts."""
    args = [*BASE_ARGS, FAKE_UI] if fake_ui else list(BASE_ARGS)
    async with async_playwright() as pw:
        browser = await _launch(pw, args)
        try:
            yield browser
        finally:
            await browser.close()


async def _launch(pw: Playwright, args: list[str]) -> Browser:
    return await pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=args)


async def screenshot(page: Page, name: str) -> Path:
    """Save a full-page screenshot under ``artifacts/screenshots/`` for a person to look at."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', name)}.png"
    await page.screenshot(path=str(path), full_page=True)
    return path


async def wait_state(page: Page, state: str, timeout: float = WAIT_MS) -> dict[str, Any]:
    """Wait until the page's widget is in ``state``; returns its state data."""
    await page.wait_for_function("s => window.demoWidget && window.demoWidget.state === s", arg=state,
                                 timeout=timeout)
    return await page.evaluate("() => window.demoWidget.stateData")


def collect_console(page: Page, *, everything: bool = False) -> list[str]:
    """Console errors and page errors (every console message with ``everything``, stamped with the
    wall clock like :func:`capture_logs` lines so the two interleave), to show in a failing assertion."""
    messages: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if everything:
            messages.append(f"{_stamp(time.time())} console.{message.type}: {message.text}")
        elif message.type in ("error", "warning"):
            messages.append(f"{message.type}: {message.text}")

    page.on("console", on_console)
    page.on("pageerror", lambda e: messages.append(f"pageerror: {e}"))
    return messages


#: Makes the SignalR browser client log at Information (its reconnect attempts and why they failed)
#: whatever level the widget asks for: an init script, so it needs no change to the page.
VERBOSE_SIGNALR = """(() => {
  let bundle;
  Object.defineProperty(window, 'signalR', { configurable: true,
    get() { return bundle; },
    set(value) {
      bundle = value;
      const builder = value && value.HubConnectionBuilder && value.HubConnectionBuilder.prototype;
      if (!builder || builder.__verbose) return;
      const configure = builder.configureLogging;
      builder.configureLogging = function () { return configure.call(this, value.LogLevel.Information); };
      builder.__verbose = true;
    } });
})();"""


def _stamp(seconds: float) -> str:
    return time.strftime("%H:%M:%S", time.gmtime(seconds)) + f".{int(seconds * 1000) % 1000:03d}"


class _Lines(logging.Handler):
    _format = logging.Formatter()

    def __init__(self, lines: list[str]) -> None:
        super().__init__(logging.DEBUG)
        self.lines = lines

    def emit(self, record: logging.LogRecord) -> None:
        line = f"{_stamp(record.created)} {record.levelname} {record.name}: {record.getMessage()}"
        if record.exc_info:
            line += "\n" + self._format.formatException(record.exc_info)
        self.lines.append(line)


@contextmanager
def capture_logs(*names: str, level: int = logging.DEBUG) -> Iterator[list[str]]:
    """Every record of the loggers ``names`` (and their children) at ``level`` and above, as lines
    stamped with the wall clock (UTC), for a failing test to print."""
    lines: list[str] = []
    handler = _Lines(lines)
    loggers = [logging.getLogger(name) for name in names]
    saved = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(level)
    try:
        yield lines
    finally:
        for logger, old in zip(loggers, saved, strict=True):
            logger.removeHandler(handler)
            logger.setLevel(old)
