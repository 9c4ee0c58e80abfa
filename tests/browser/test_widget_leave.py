"""A widget that leaves the queue before its hub connection is up gives the place back at once.

Headless Chromium against a real gateway stack and a real ``redis-server``. The SignalR bundle is held
back by a Playwright route, so after the 202 the widget has no hub connection to say ``Leave`` on: the
place must come back through ``POST /api/session/leave/{id}`` (a beacon when the page goes away, a
keepalive fetch when the visitor clicks Leave), not after the gateway's register timeout.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

import pytest
import redis.asyncio as aioredis
from playwright.async_api import Error as PlaywrightError
from playwright.async_api import Page, Route, expect

from tests.harness.browser import (
    WAIT_MS,
    chromium,
    collect_console,
    demo_body,
    demo_config,
    embed_html,
    start_site,
    start_widget_stack,
    wait_state,
)

pytestmark = [pytest.mark.browser, pytest.mark.redis]

BUNDLE = "**/static/vendor/signalr.js"


class _AccessLog(logging.Handler):
    """Futures for gateway access-log lines, each resolved by the first line starting with its prefix."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self._waiting: dict[str, asyncio.Future[str]] = {}

    def line_starting(self, prefix: str) -> asyncio.Future[str]:
        return self._waiting.setdefault(prefix, asyncio.get_running_loop().create_future())

    def emit(self, record: logging.LogRecord) -> None:
        line = record.getMessage()
        for prefix, future in self._waiting.items():
            if line.startswith(prefix) and not future.done():
                future.set_result(line)


@contextmanager
def _access_log() -> Iterator[_AccessLog]:
    logger = logging.getLogger("gateway.access")
    handler = _AccessLog()
    saved = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved)


async def _hold_bundle(page: Page) -> list[Route]:
    """Keep the SignalR bundle's request unanswered; returns the held routes."""
    held: list[Route] = []

    async def hold(route: Route) -> None:
        held.append(route)

    await page.route(BUNDLE, hold)
    return held


async def _release(held: list[Route]) -> None:
    for route in held:
        with suppress(PlaywrightError):  # the page that asked may be gone
            await route.abort()


async def _queued_without_hub(page: Page, stack: Any, held: list[Route]) -> str:
    data = await wait_state(page, "queued")
    # The widget asked for the bundle and is still waiting for it: no hub connection, no Register.
    assert held, "the widget never asked for the SignalR bundle"
    assert await page.evaluate("() => window.demoWidget.hub === null && !window.signalR")
    assert (await stack.gateway.store.counts())["queued"] == 1
    return data["uniqueRequestId"]


async def test_navigating_away_right_after_the_202_sends_a_leave_beacon(redis_client: aioredis.Redis) -> None:
    site = start_site()
    stack = await start_widget_stack(redis_client, config=demo_config(cap=1, origins=[site.origin]))
    site.html = embed_html(stack.base_url)
    try:
        assert (await stack.request_session(demo_body())).code == 200  # the only slot is taken
        with _access_log() as access:
            async with chromium() as browser:
                page = await browser.new_page()
                console = collect_console(page)
                held = await _hold_bundle(page)
                # The widget on a customer's site: the beacon crosses origins, as in a real deployment.
                await page.goto(site.origin + "/")
                await page.get_by_label("Name *").fill("Grace")
                await page.get_by_role("button", name="Start call").click()
                request_id = await _queued_without_hub(page, stack, held)
                # 204 from the leave route: the place went back over HTTP, and it was still waiting.
                left = access.line_starting(f"204 POST /api/session/leave/{request_id} ")

                await page.goto(stack.base_url + "/healthz")
                await asyncio.wait_for(left, WAIT_MS / 1000)
                await _release(held)
        assert (await stack.gateway.store.counts())["queued"] == 0, console
        status = await stack.call("GET", f"/api/session/status/{request_id}")
        assert b'"status":"failed"' in status.body and b'You left the waiting queue' in status.body
    finally:
        await stack.close()
        await site.close()


async def test_leave_clicked_before_the_hub_is_up_gives_the_place_back(redis_client: aioredis.Redis) -> None:
    stack = await start_widget_stack(redis_client, config=demo_config(cap=1))
    try:
        assert (await stack.request_session(demo_body())).code == 200
        async with chromium() as browser:
            page = await browser.new_page()
            held = await _hold_bundle(page)
            await page.goto(stack.base_url + "/")
            await page.evaluate("() => window.demoWidget.on('left', () => { window.leftQueue = true; })")
            await page.get_by_label("Your first name").fill("Ada")
            await page.get_by_role("button", name="Start call").click()
            request_id = await _queued_without_hub(page, stack, held)

            await page.get_by_role("button", name="Leave queue").click()
            await wait_state(page, "idle")
            await expect(page.get_by_role("status").first).to_have_text("You left the queue.")
            # "left" comes after the gateway answered the HTTP leave, so the queue is already empty.
            await page.wait_for_function("() => window.leftQueue === true", timeout=WAIT_MS)
            assert (await stack.gateway.store.counts())["queued"] == 0
            status = await stack.call("GET", f"/api/session/status/{request_id}")
            assert b'"status":"failed"' in status.body and b'You left the waiting queue' in status.body
            await _release(held)
    finally:
        await stack.close()
