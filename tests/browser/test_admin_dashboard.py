"""The admin dashboard (``/admin``) in headless Chromium, against a real gateway with the admin API on.

The operator's path: a wrong token is refused and asked again, the right one opens the live view; real
session requests fill the tables and charts; Pause, Resume and the capacity override are clicked and checked
through the admin API itself (a request queues behind a free slot while paused). The token must live in the
page's memory only. The filled dashboard is saved as a screenshot; with ``UPDATE_DASHBOARD_SCREENSHOT=1`` it
also replaces the README's ``docs/admin-dashboard.png``.
"""

from __future__ import annotations

import os
import re
import shutil
from typing import Any

import pytest
import redis.asyncio as aioredis
import ujson
from playwright.async_api import Page, Response, expect

from tests.harness.browser import WAIT_MS, chromium, collect_console, screenshot
from tests.harness.paths import ROOT
from tests.harness.session_hub import HubClient
from tests.harness.stack import Stack, base_config, body_of, conversation_id_of, start_stack

pytestmark = [pytest.mark.browser, pytest.mark.redis]

ADMIN_TOKEN = "admin-token-for-the-dashboard-test"
README_SCREENSHOT = ROOT / "docs" / "admin-dashboard.png"
#: Wide enough for the two-column layout the screenshot shows.
VIEWPORT = {"width": 1400, "height": 900}


async def _admin(stack: Stack, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    response = await stack.call(method, "/api/admin/" + path, body,
                                headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    return response.code, body_of(response)


async def _snapshot(stack: Stack) -> dict[str, Any]:
    code, snapshot = await _admin(stack, "GET", "queue?limit=50")
    assert code == 200, snapshot
    return snapshot


async def _admitted(stack: Stack) -> str:
    response = await stack.request_session()
    assert response.code == 200, response.body
    return conversation_id_of(ujson.loads(response.body)["webSocketUrl"])


async def _queued(stack: Stack) -> str:
    response = await stack.request_session()
    assert response.code == 202, response.body
    return ujson.loads(response.body)["uniqueRequestId"]


async def _served(stack: Stack, hub: HubClient) -> str:
    """Wait for the SessionReady of the request ``hub`` registered; its conversation id."""
    _, ready = await hub.next_event("SessionReady", timeout=WAIT_MS / 1000)
    return conversation_id_of(ready["webSocketUrl"])


async def _registered(stack: Stack, request_id: str, hubs: list[HubClient]) -> HubClient:
    hub = await HubClient.connect(stack.base_url)
    hubs.append(hub)
    await hub.register(request_id)
    return hub


async def _estimate_told(hub: HubClient) -> None:
    while True:
        _, update = await hub.next_event("QueuePositionUpdated", timeout=WAIT_MS / 1000)
        if update["estimatedWaitSeconds"] is not None:
            return


async def _sign_in(page: Page, token: str) -> None:
    await page.get_by_label("Admin token").fill(token)
    await page.get_by_role("button", name="Connect").click()


async def _polls_after(page: Page, count: int) -> None:
    """Wait until the page has shown ``count`` more snapshots (each poll is an event the page counts)."""
    start = await page.evaluate("() => window.adminDashboard.polls")
    await page.wait_for_function("n => window.adminDashboard.polls >= n", arg=start + count, timeout=WAIT_MS)


async def _chart_has(page: Page, chart: str, label: str, value: float | str = "positive") -> None:
    """Wait until the series ``label`` of ``chart`` holds a point: above 0 ("positive"), any ("present"), or
    ``value``. (No predicate is sent as code: the page's CSP forbids eval, rightly.)"""
    await page.wait_for_function(
        """([chart, label, value]) => { const c = window.adminDashboard.chart(chart);
             const i = c ? c.labels.indexOf(label) : -1;
             return i >= 0 && c.data[i + 1].some(v => v !== null
               && (value === "present" || (value === "positive" ? v > 0 : v === value))); }""",
        arg=[chart, label, value], timeout=WAIT_MS)


async def test_an_operator_watches_pauses_and_overrides_the_capacity(redis_client: aioredis.Redis) -> None:
    stack = await start_stack(redis_client, config=base_config(cap=2, Admin={"ApiToken": ADMIN_TOKEN}))
    hubs: list[HubClient] = []
    try:
        async with chromium() as browser:
            context = await browser.new_context(viewport=VIEWPORT)
            page = await context.new_page()
            problems = collect_console(page)
            responses: list[Response] = []
            page.on("response", lambda response: responses.append(response))
            await page.goto(stack.base_url + "/admin")

            # A wrong token: refused, asked again, the field emptied.
            await _sign_in(page, "not-the-token")
            await expect(page.get_by_role("alert")).to_contain_text("Wrong token")
            await expect(page.get_by_label("Admin token")).to_be_visible()
            await expect(page.get_by_label("Admin token")).to_have_value("")
            await page.get_by_label("Your name").fill("Ada <Operator>")  # named in the audit trail, markup dropped
            await _sign_in(page, ADMIN_TOKEN)
            await expect(page.locator("#dashboard")).to_be_visible(timeout=WAIT_MS)
            await expect(page.locator("#stat-queue")).to_have_text("0", timeout=WAIT_MS)
            await expect(page.locator("#stat-cap-source")).to_have_text("from the configuration")
            await expect(page.locator("#stat-dispatch")).to_have_text("Running")

            # Two sessions fill the cap, two requests wait (one registered on the hub), one request is invalid.
            calls = [await _admitted(stack), await _admitted(stack)]
            waiting = [await _queued(stack), await _queued(stack)]
            first_hub = await _registered(stack, waiting[0], hubs)
            assert (await stack.request_session({"campaignId": "nope"})).code == 400
            await expect(page.locator("#stat-queue")).to_have_text("2", timeout=WAIT_MS)
            await expect(page.locator("#stat-active")).to_have_text("2 / 2", timeout=WAIT_MS)
            await expect(page.locator("#entries tbody tr")).to_have_count(2)
            await expect(page.locator("#entries tbody tr").first).to_contain_text(waiting[0])
            await expect(page.locator("#entries tbody tr").first.locator("td").nth(5)).to_have_text("yes")
            await expect(page.locator("#sessions tbody tr")).to_have_count(2)
            await expect(page.locator("#sessions tbody")).to_contain_text(calls[0])
            await _chart_has(page, "outcomes", "queued")
            await _chart_has(page, "outcomes", "invalid")
            await _chart_has(page, "queue", "Waiting")

            # A call ends: the first waiting request is served, which the wait and estimate charts show.
            assert (await stack.end(calls[0])).code == 200
            calls[0] = await _served(stack, first_hub)
            await expect(page.locator("#stat-queue")).to_have_text("1", timeout=WAIT_MS)
            await expect(page.locator("#stat-wait-sub")).to_contain_text("of 1 served", timeout=WAIT_MS)
            await _chart_has(page, "wait", "p50", "present")
            await _chart_has(page, "outcomes", "admitted")

            # Paused: a slot frees, yet nothing is served, and a new request queues behind the free slot.
            await page.get_by_role("button", name="Pause").click()
            await expect(page.locator("#stat-dispatch")).to_have_text("Paused", timeout=WAIT_MS)
            await expect(page.locator("#paused-banner")).to_be_visible()
            snapshot = await _snapshot(stack)
            assert snapshot["paused"] is True
            assert snapshot["recentChanges"][0]["operator"] == "Ada Operator", snapshot["recentChanges"]
            await expect(page.locator("#changes tbody tr").first).to_contain_text("Ada Operator", timeout=WAIT_MS)
            assert (await stack.end(calls[1])).code == 200
            await expect(page.locator("#stat-active")).to_have_text("1 / 2", timeout=WAIT_MS)
            paused_request = await _queued(stack)
            paused_hub = await _registered(stack, paused_request, hubs)
            await _polls_after(page, 2)
            snapshot = await _snapshot(stack)
            assert snapshot["queueLength"] == 2 and snapshot["sessions"]["active"] == 1, snapshot
            assert [e["uniqueRequestId"] for e in snapshot["entries"]] == [waiting[1], paused_request]

            # Resumed: the queue moves into the free slot.
            await page.get_by_role("button", name="Resume").click()
            await expect(page.locator("#stat-dispatch")).to_have_text("Running", timeout=WAIT_MS)
            await expect(page.locator("#paused-banner")).to_be_hidden()
            await expect(page.locator("#stat-queue")).to_have_text("1", timeout=WAIT_MS)
            assert (await _snapshot(stack))["paused"] is False
            # One more waits behind: two requests served make a rate, so it is told an estimate when it moves up.
            behind = await _registered(stack, await _queued(stack), hubs)

            # A capacity override from the page, seen by the API and by new requests; more requests wait.
            await page.get_by_label("Capacity override").fill("3")
            await page.get_by_role("button", name="Apply").click()
            await expect(page.locator("#control-feedback")).to_contain_text("3 sessions (admin override)")
            await expect(page.locator("#stat-cap-source")).to_have_text("admin override", timeout=WAIT_MS)
            assert (await _snapshot(stack))["cap"] == {"maxConcurrentSessions": 3, "source": "override"}
            await _served(stack, paused_hub)
            await _estimate_told(behind)
            # Its session (a call ends) settles the estimate: the error chart has a point.
            assert (await stack.end(calls[0])).code == 200
            await _served(stack, behind)
            await _chart_has(page, "error", "p50", "present")
            await expect(page.locator("#stat-active")).to_have_text("3 / 3", timeout=WAIT_MS)
            for registered in (True, True, False):
                request_id = await _queued(stack)
                if registered:
                    await _registered(stack, request_id, hubs)
            await expect(page.locator("#stat-queue")).to_have_text("3", timeout=WAIT_MS)
            await _chart_has(page, "sessions", "Cap", 3)
            await _polls_after(page, 3)
            shot = await screenshot(page, "admin_dashboard")

            # Cleared: back to the configured cap.
            await page.get_by_role("button", name="Clear override").click()
            await expect(page.locator("#stat-cap-source")).to_have_text("from the configuration", timeout=WAIT_MS)
            assert (await _snapshot(stack))["cap"] == {"maxConcurrentSessions": 2, "source": "config"}

            # The token lives in the page's memory only.
            kept = await page.evaluate("""() => ({ local: JSON.stringify(localStorage), session:
                JSON.stringify(sessionStorage), cookie: document.cookie, html: document.documentElement.outerHTML,
                field: document.getElementById('token').value })""")
            assert kept["local"] == kept["session"] == "{}" and kept["cookie"] == "" and kept["field"] == ""
            assert ADMIN_TOKEN not in kept["html"]
            assert await context.cookies() == []
            assert ADMIN_TOKEN not in await page.evaluate("() => JSON.stringify(window.adminDashboard)")

            # uPlot came from the gateway itself, and drew every chart.
            chart_file = [r for r in responses if r.url.endswith("/static/vendor/uplot/uPlot.iife.min.js")]
            assert [r.status for r in chart_file] == [200]
            assert all(r.url.startswith(stack.base_url + "/") for r in responses), [r.url for r in responses]
            await expect(page.locator(".chart canvas")).to_have_count(5)
        # The one expected failure: the browser logs the wrong token's 401.
        unexpected = [p for p in problems if "status of 401" not in p]
        assert not unexpected, unexpected
        if os.environ.get("UPDATE_DASHBOARD_SCREENSHOT") == "1":
            shutil.copyfile(shot, README_SCREENSHOT)
    finally:
        for hub in hubs:
            await hub.close()
        await stack.close()


async def test_a_gateway_without_the_admin_api_says_so(redis_client: aioredis.Redis) -> None:
    stack = await start_stack(redis_client)
    try:
        async with chromium() as browser:
            page = await browser.new_page()
            await page.goto(stack.base_url + "/admin")
            await _sign_in(page, ADMIN_TOKEN)
            await expect(page.get_by_role("alert")).to_contain_text("Admin.ApiToken")
            await expect(page.locator("#dashboard")).to_be_hidden()
    finally:
        await stack.close()


# The quantile arithmetic, in the page's own script, on cases worked by hand (Prometheus' histogram_quantile).
QUANTILE_CASES = [
    # (q, bounds, cumulative counts, total, expected)
    (0.5, [1, 5, 10], [0, 10, 10], 10, 3.0),        # rank 5 of 10 in (1, 5]: 1 + 4 * 5/10
    (0.95, [1, 5, 10], [1, 1, 1], 4, 10),           # rank 3.8 above the last bound: the last bound
    (0.5, [2, 4], [4, 4], 4, 1.0),                   # the first bucket starts at 0
    (0.25, [-10, 0, 10], [2, 2, 4], 4, -10),        # a first bound <= 0 is the answer itself
    (0.75, [-10, 0, 10], [2, 2, 4], 4, 5.0),        # rank 3 in (0, 10]: 0 + 10 * 1/2
    (0.5, [1, 5], [0, 0], 0, None),                  # no observations: no quantile
]


async def test_quantiles_rates_and_the_window_follow_prometheus(redis_client: aioredis.Redis) -> None:
    stack = await start_stack(redis_client)
    try:
        async with chromium() as browser:
            page = await browser.new_page()
            await page.goto(stack.base_url + "/admin")
            await page.wait_for_function("() => window.IqraAdminStats !== undefined", timeout=WAIT_MS)
            for q, bounds, counts, total, expected in QUANTILE_CASES:
                got = await page.evaluate(
                    "([q, bounds, counts, total]) => IqraAdminStats.histogramQuantile(q, bounds.map((le, i) => "
                    "({le, count: counts[i]})), total)", [q, bounds, counts, total])
                assert got == pytest.approx(expected) if expected is not None else got is None, (q, bounds, got)
            rates = await page.evaluate("""() => [IqraAdminStats.counterRates({a: 10}, {a: 16, b: 2}, 2),
                IqraAdminStats.counterRates({a: 16}, {a: 4}, 2), IqraAdminStats.counterRates(null, {a: 1}, 2)]""")
            assert rates == [{"a": 3, "b": 1}, {"a": 2}, None]  # a counter that went down was reset
            window = await page.evaluate("""() => { const w = new IqraAdminStats.HistogramWindow(300);
                const h = (c1, c2, total) => ({buckets: [{le: 10, count: c1}, {le: 100, count: c2}], count: total});
                w.push(0, h(0, 0, 0)); w.push(100, h(4, 4, 4)); w.push(400, h(4, 8, 8));
                const slid = [w.observations(), w.quantile(0.5)];
                w.push(402, h(0, 1, 1));  // a reset: the window starts again
                return [...slid, w.observations(), w.quantile(0.5)]; }""")
            # The window's baseline is the reading at its start (t=100): 4 observations, all in (10, 100].
            assert window == [4, pytest.approx(55.0), 0, None]
    finally:
        await stack.close()


def test_the_readme_shows_the_committed_screenshot() -> None:
    assert README_SCREENSHOT.is_file() and README_SCREENSHOT.stat().st_size > 20_000
    assert re.search(r"!\[[^\]]+\]\(docs/admin-dashboard\.png\)", (ROOT / "README.md").read_text())
