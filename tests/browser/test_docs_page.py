"""``/docs`` in headless Chromium: Swagger UI, served by the gateway, renders every operation of the OpenAPI
document, and the page asks nothing of any other site (no CDN, no outside validator)."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis
from playwright.async_api import Request, expect

from gateway.http.openapi import build_openapi
from tests.harness.browser import WAIT_MS, chromium, collect_console, screenshot
from tests.harness.stack import start_stack

pytestmark = [pytest.mark.browser, pytest.mark.redis]

METHODS = ("get", "post", "put", "patch", "delete")


async def test_swagger_ui_renders_every_operation_from_the_gateway_alone(redis_client: aioredis.Redis) -> None:
    operations = [(method.upper(), path) for path, item in build_openapi()["paths"].items()
                  for method in METHODS if method in item]
    stack = await start_stack(redis_client)
    requested: list[str] = []
    try:
        async with chromium() as browser:
            page = await browser.new_page()
            problems = collect_console(page)

            def on_request(request: Request) -> None:
                requested.append(request.url)

            page.on("request", on_request)
            await page.goto(stack.base_url + "/docs")
            blocks = page.locator(".opblock")
            await expect(blocks).to_have_count(len(operations), timeout=WAIT_MS)
            for method, path in operations:
                block = page.locator(f".opblock-{method.lower()}", has=page.get_by_text(path, exact=True))
                await expect(block.first).to_be_visible()
            await expect(page.get_by_text("Iqra web-session gateway").first).to_be_visible()

            # An operation opens with its answers, the error body among them.
            request_op = page.locator(".opblock-post", has=page.get_by_text("/api/session/request", exact=True))
            await request_op.first.locator(".opblock-summary").click()
            await expect(request_op.first.locator(".response-col_status", has_text="429")).to_be_visible()
            await screenshot(page, "api_docs")
        assert requested and all(url.startswith(stack.base_url + "/") for url in requested), requested
        assert stack.base_url + "/openapi.json" in requested
        assert not [p for p in problems if "error" in p], problems
    finally:
        await stack.close()
