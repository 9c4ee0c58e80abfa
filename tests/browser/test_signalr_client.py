"""The official browser bundle in headless Chromium, loaded from another origin than the hub.

Two static origins serve the same page: the example hub allows the first (CORS with credentials and
WebSocket Origin check), not the second. Chromium is Debian's ``/usr/bin/chromium`` driven by the
``playwright`` package (its own browser downloads are never used).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from tests.harness.interop import ExampleServer, StaticSite

pytestmark = [pytest.mark.interop, pytest.mark.browser]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run",
]
ALLOWED, FOREIGN = 0, 1


@pytest.fixture(scope="module")
def site() -> Iterator[StaticSite]:
    with StaticSite(count=2) as static:
        yield static


@pytest.fixture(scope="module")
def hub(site: StaticSite) -> Iterator[ExampleServer]:
    with ExampleServer(origins=(site.origin(ALLOWED),)) as server:
        yield server


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def _open(browser: Browser, url: str) -> Page:
    page = browser.new_page()
    page.set_default_timeout(20_000)
    page.goto(url)
    assert page.evaluate("typeof signalR") == "object", "the SignalR bundle did not load"
    return page


@pytest.fixture(scope="module")
def allowed_page(browser: Browser, site: StaticSite) -> Iterator[Page]:
    page = _open(browser, site.page(ALLOWED))
    yield page
    page.close()


@pytest.fixture(scope="module")
def foreign_page(browser: Browser, site: StaticSite) -> Iterator[Page]:
    page = _open(browser, site.page(FOREIGN))
    yield page
    page.close()


@pytest.mark.parametrize(
    ("transport", "transport_class"),
    [("WebSockets", "WebSocketTransport"), ("ServerSentEvents", "ServerSentEventsTransport"),
     ("LongPolling", "LongPollingTransport")],
)
def test_cross_origin_page_connects_invokes_and_receives_broadcast(
    allowed_page: Page, hub: ExampleServer, site: StaticSite, transport: str, transport_class: str
) -> None:
    result: dict[str, Any] = allowed_page.evaluate("([url, t]) => runScenario(url, t)", [hub.url, transport])
    assert result == {
        "transport": transport_class,
        "echo": {"from": site.origin(ALLOWED)},
        "add": 42,
        "broadcast": [f"browser-{transport}", f"browser-{transport}"],
    }


@pytest.mark.parametrize("transport", ["WebSockets", "ServerSentEvents", "LongPolling"])
def test_page_from_non_allowed_origin_cannot_negotiate(foreign_page: Page, hub: ExampleServer, transport: str) -> None:
    result = foreign_page.evaluate("([url, t]) => tryConnect(url, t, false)", [hub.url, transport])
    # The CORS-blocked negotiate surfaces in the client as a failed fetch.
    assert "error" in result, result
    assert "Failed to complete negotiation with the server" in result["error"], result


def test_page_from_non_allowed_origin_cannot_open_websocket(foreign_page: Page, hub: ExampleServer) -> None:
    """Skipping negotiate leaves only the WebSocket upgrade, where the server checks Origin itself."""
    result = foreign_page.evaluate("([url, t]) => tryConnect(url, t, true)", [hub.url, "WebSockets"])
    assert "error" in result, result
    assert "WebSocket failed to connect" in result["error"], result


def test_same_page_connects_when_its_origin_is_allowed(allowed_page: Page, hub: ExampleServer) -> None:
    """Control for the two tests above: identical calls succeed from the allowed origin."""
    assert allowed_page.evaluate("([url, t]) => tryConnect(url, t, false)", [hub.url, "WebSockets"]) == {
        "connected": True
    }
    assert allowed_page.evaluate("([url, t]) => tryConnect(url, t, true)", [hub.url, "WebSockets"]) == {
        "connected": True
    }
