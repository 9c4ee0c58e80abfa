"""The voice widget and the demo page in headless Chromium, against a real gateway stack.

Each test drives the page like a visitor (click, type, read the status line) and checks the other side
too: the simulated platform's frame counters, the admission store's queue. Screenshots land in
``artifacts/screenshots/`` for a person to look at.
"""

from __future__ import annotations

import asyncio
import re
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
import ujson
from playwright.async_api import Error as PlaywrightError
from playwright.async_api import Page, expect

from gateway.http.static_site import STATIC_ROOT
from tests.harness.browser import (
    VERBOSE_SIGNALR,
    WAIT_MS,
    capture_logs,
    chromium,
    collect_console,
    demo_body,
    demo_config,
    embed_html,
    screenshot,
    start_site,
    start_widget_stack,
    wait_state,
)
from tests.harness.geo_mmdb import ANONYMOUS_IP_TYPE, anonymous_record, write_database

pytestmark = [pytest.mark.browser, pytest.mark.redis]

#: 20 ms of PCM16 at the requested 16 kHz.
FRAME_BYTES = 640


def _live_calls(stack: Any) -> list[dict[str, Any]]:
    return [call.to_dict() for call in stack.sim.live_calls]


async def _start_call(page: Page, name: str = "Ada") -> None:
    await page.get_by_label("Your first name").fill(name)
    await page.get_by_role("button", name="Start call").click()


async def test_immediate_call_streams_audio_both_ways(redis_client: aioredis.Redis) -> None:
    stack = await start_widget_stack(redis_client, config=demo_config(cap=2))
    try:
        async with chromium() as browser:
            page = await browser.new_page()
            console = collect_console(page)
            await page.goto(stack.base_url + "/")
            await expect(page.locator("#stat-capacity")).to_have_text("2")
            # Pages can follow the widget through DOM events as well as widget.on("stateChange", ...).
            await page.evaluate("""() => { window.domStates = [];
                document.getElementById('voice-widget').addEventListener('iqra:statechange',
                    e => window.domStates.push(e.detail.state)); }""")
            await _start_call(page)
            await wait_state(page, "connected")
            await expect(page.get_by_role("status").first).to_have_text("Connected! The call is live.")
            # Enough frames both ways to be sure the microphone path and playback run, not one stray frame.
            await page.wait_for_function(
                "() => { const s = window.demoWidget.stats(); return s.framesSent > 40 && s.framesReceived > 40"
                " && s.playedMs > 500; }", timeout=WAIT_MS)
            calls = _live_calls(stack)
            assert len(calls) == 1, console
            call = calls[0]
            assert call["state"] == "connected"
            assert call["framesReceived"] > 40 and call["framesSent"] > 40
            # Every microphone frame is 20 ms at the requested input rate, PCM16.
            assert call["bytesReceived"] == call["framesReceived"] * FRAME_BYTES
            sent = await page.evaluate("() => window.demoWidget.stats()")
            assert sent["bytesSent"] == sent["framesSent"] * FRAME_BYTES
            # The request carried the form's values and the audio configuration the widget asked for.
            initiate = [r for r in stack.sim.requests if r.path.endswith("/websession/initiate")]
            assert len(initiate) == 1 and b'"FirstName":"Ada"' in initiate[0].body.replace(b" ", b"")
            await expect(page.locator("#stat-active")).to_have_text("1")
            assert await page.evaluate("() => window.domStates") == ["connecting", "connecting", "connecting",
                                                                     "connected"]
            await screenshot(page, "widget_connected")

            await page.get_by_role("button", name="Hang up").click()
            await wait_state(page, "idle")
            await expect(page.get_by_role("status").first).to_have_text("You hung up.")
            await expect(page.locator("#stat-active")).to_have_text("0", timeout=WAIT_MS)
            ended = stack.sim.calls[call["conversationSessionId"]]
            assert ended.state == "ended" and ended.end_reason == "client hung up"
            assert not [m for m in console if m.startswith("pageerror")], console
    finally:
        await stack.close()


#: Renders a sine through the capture worklet offline and returns the frames it posted.
RESAMPLE = """async ([contextRate, targetRate, frequency]) => {
  const seconds = 1;
  const context = new OfflineAudioContext(1, contextRate * seconds, contextRate);
  await context.audioWorklet.addModule('/static/audio-worklet.js');
  const node = new AudioWorkletNode(context, 'iqra-capture', {
    numberOfInputs: 1, numberOfOutputs: 1, outputChannelCount: [1],
    processorOptions: { targetRate, frameMs: 20 } });
  const frames = [];
  node.port.onmessage = e => frames.push(e.data);
  const tone = context.createOscillator();
  tone.frequency.value = frequency;
  tone.connect(node);
  node.connect(context.destination);
  tone.start();
  await context.startRendering();
  const expected = Math.floor(targetRate * seconds / (targetRate / 50)) - 1;
  const deadline = Date.now() + 5000;
  while (frames.length < expected && Date.now() < deadline) await new Promise(r => setTimeout(r, 20));
  const sizes = [...new Set(frames.map(f => f.byteLength))];
  const samples = [];
  for (const f of frames) { const v = new DataView(f); for (let i = 0; i < f.byteLength; i += 2) samples.push(v.getInt16(i, true)); }
  let crossings = 0;
  for (let i = 1; i < samples.length; i++) if ((samples[i - 1] < 0) !== (samples[i] < 0)) crossings++;
  const peak = Math.max(...samples.slice(targetRate / 10).map(Math.abs));
  return { frames: frames.length, sizes, samples: samples.length, crossings, peak };
}"""


async def test_capture_worklet_resamples_to_20ms_pcm16_frames(redis_client: aioredis.Redis) -> None:
    stack = await start_widget_stack(redis_client, config=demo_config())
    try:
        async with chromium() as browser:
            page = await browser.new_page()
            await page.goto(stack.base_url + "/")
            for context_rate, target_rate in ((48000, 16000), (44100, 16000), (48000, 24000), (8000, 16000)):
                result = await page.evaluate(RESAMPLE, [context_rate, target_rate, 1000])
                case = (context_rate, target_rate, result)
                # Every frame is exactly 20 ms of PCM16 at the target rate.
                assert result["sizes"] == [2 * (target_rate // 50)], case
                assert result["frames"] >= 49, case
                # A 1 kHz tone crosses zero 2000 times a second; a wrong rate would scale that.
                assert abs(result["crossings"] * target_rate / result["samples"] - 2000) < 40, case
                assert result["peak"] > 0.9 * 32767, case
    finally:
        await stack.close()


async def test_queue_shows_live_position_then_connects(redis_client: aioredis.Redis) -> None:
    stack = await start_widget_stack(redis_client, config=demo_config(cap=1))
    try:
        first = await stack.request_session(demo_body())
        assert first.code == 200, first.body
        ahead = await stack.request_session(demo_body())
        assert ahead.code == 202, ahead.body
        ahead_id = _json(ahead.body)["uniqueRequestId"]
        async with chromium() as browser:
            page = await browser.new_page()
            console = collect_console(page)
            await page.goto(stack.base_url + "/")
            await _start_call(page)
            data = await wait_state(page, "queued")
            assert data["queuePosition"] == 2
            await expect(page.locator(".iqra-position-value")).to_have_text("#2")
            await expect(page.locator("#stat-queued")).to_have_text("2")
            await expect(page.get_by_role("button", name="Leave queue")).to_be_focused()

            # The request ahead leaves: the hub pushes the new position and the widget shows it.
            assert await stack.gateway.service.leave(ahead_id)
            await expect(page.locator(".iqra-position-value")).to_have_text("#1", timeout=WAIT_MS)
            await expect(page.get_by_role("status").first).to_have_text(
                "You are number 1 in the queue. Please wait.")
            await expect(page.locator("#stat-queued")).to_have_text("1", timeout=WAIT_MS)
            await screenshot(page, "widget_queued")

            # The demo panel ends the call holding the only slot (through the simulator, which sends the
            # session-ended webhook): the widget gets the slot.
            await page.get_by_role("button", name="End the oldest call").click()
            await wait_state(page, "connected")
            first_call = next(iter(stack.sim.calls.values()))
            assert first_call.state == "ended" and first_call.end_reason == "ended by control API"
            await expect(page.locator("#panel-status")).to_contain_text("Ended the oldest call")
            await page.wait_for_function("() => window.demoWidget.stats().framesSent > 5", timeout=WAIT_MS)
            await screenshot(page, "widget_connected_after_queue")
            assert not [m for m in console if m.startswith("pageerror")], console
    finally:
        await stack.close()


#: Keeps every WebSocket the page opens, so a test can drop one as a network failure would.
RECORD_SOCKETS = """(() => {
  const Native = window.WebSocket;
  window.recordedSockets = [];
  window.WebSocket = class extends Native {
    constructor(...args) { super(...args); window.recordedSockets.push(this); }
  };
})();"""

#: Records the widget's hub registrations and states (the states also go to the console, which a failing
#: test prints).
WATCH_HUB = """() => {
  window.registrations = [];
  window.widgetStates = [];
  window.demoWidget.on('registered', e => window.registrations.push(e));
  window.demoWidget.on('stateChange', e => {
    window.widgetStates.push(e.state);
    console.info('widget state ' + e.state + ' ' + JSON.stringify(e.data));
    if (e.data.reconnecting) window.sawReconnecting = true;
  });
}"""

#: Closes the hub's socket under the client, as a network blip would (not a stop() by the page).
DROP_HUB_SOCKET = """() => {
  const hub = window.recordedSockets.filter(w => w.url.includes('/sessionHub') && w.readyState === WebSocket.OPEN);
  hub.forEach(w => w.close());
  return hub.length; }"""

#: Server-side loggers whose lines explain a hub test's failure.
HUB_LOGGERS = ("signalr", "gateway.live.hub", "gateway.live.abandonment", "gateway.queue.service", "gateway.access")


@asynccontextmanager
async def _hub_page(stack: Any) -> AsyncIterator[Page]:
    """The demo page with its hub sockets recorded, the widget watched and the SignalR client logging its
    reconnects; a failure inside prints the browser console and the gateway's log."""
    with capture_logs(*HUB_LOGGERS) as server_log:
        async with chromium() as browser:
            page = await browser.new_page()
            console = collect_console(page, everything=True)
            await page.add_init_script(RECORD_SOCKETS)
            await page.add_init_script(VERBOSE_SIGNALR)
            await page.goto(stack.base_url + "/")
            await page.evaluate(WATCH_HUB)
            try:
                yield page
            except (AssertionError, PlaywrightError, TimeoutError) as exc:
                raise AssertionError(_diagnostics(exc, console, server_log)) from exc


def _diagnostics(exc: BaseException, console: list[str], server_log: list[str]) -> str:
    # The demo page polls its stats every second: those lines would bury the hub's.
    server_log = [line for line in server_log if "/api/demo/stats" not in line]
    return "\n".join([f"{type(exc).__name__}: {exc}", "--- browser console ---", *console,
                      "--- gateway and SignalR log ---", *server_log])


async def _registered(page: Page, count: int) -> dict[str, Any]:
    """Wait for the widget's ``count``-th successful Register; returns that registration."""
    await page.wait_for_function("n => window.registrations.length >= n", arg=count, timeout=WAIT_MS)
    return await page.evaluate("n => window.registrations[n - 1]", count)


async def _reaches_the_front_and_connects(page: Page, stack: Any, ahead_id: str) -> None:
    """Only a connection that registered (again) hears about its new place and its turn."""
    assert await stack.gateway.service.leave(ahead_id)
    await expect(page.locator(".iqra-position-value")).to_have_text("#1", timeout=WAIT_MS)
    assert stack.sim.end_call(next(iter(stack.sim.calls)), "test ends the first call")
    await wait_state(page, "connected")
    assert "error" not in await page.evaluate("() => window.widgetStates")


async def test_hub_reconnect_registers_again(redis_client: aioredis.Redis) -> None:
    stack = await start_widget_stack(redis_client, config=demo_config(cap=1))
    try:
        assert (await stack.request_session(demo_body())).code == 200
        ahead = await stack.request_session(demo_body())
        ahead_id = _json(ahead.body)["uniqueRequestId"]
        async with _hub_page(stack) as page:
            await _start_call(page)
            # Drop the socket of a registered connection ("queued" alone comes before the hub even connects).
            first = await _registered(page, 1)
            assert await page.evaluate(DROP_HUB_SOCKET) == 1
            await page.wait_for_function("() => window.sawReconnecting === true", timeout=WAIT_MS)
            again = await _registered(page, 2)
            assert again["connectionId"] != first["connectionId"]
            assert again["uniqueRequestId"] == first["uniqueRequestId"]
            await page.wait_for_function(
                "() => window.demoWidget.hub && window.demoWidget.hub.state === 'Connected'"
                " && !window.demoWidget.stateData.reconnecting", timeout=WAIT_MS)
            await _reaches_the_front_and_connects(page, stack, ahead_id)
    finally:
        await stack.close()


async def test_hub_drop_during_first_register_is_only_a_blip(redis_client: aioredis.Redis,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The connection drops while the first Register is on its way (on a loaded machine that window is
    wide): the call is lost with the connection, the place is not; the widget registers after the reconnect."""
    stack = await start_widget_stack(redis_client, config=demo_config(cap=1))
    service = stack.gateway.session_hub
    register = service.register
    arrived, release = asyncio.Event(), asyncio.Event()

    async def hold_the_first(connection_id: str, request_id: Any) -> dict[str, Any]:
        if not arrived.is_set():
            arrived.set()
            await release.wait()  # cancelled when its connection goes
        return await register(connection_id, request_id)

    monkeypatch.setattr(service, "register", hold_the_first)
    try:
        assert (await stack.request_session(demo_body())).code == 200
        ahead = await stack.request_session(demo_body())
        ahead_id = _json(ahead.body)["uniqueRequestId"]
        async with _hub_page(stack) as page:
            await _start_call(page)
            await asyncio.wait_for(arrived.wait(), WAIT_MS / 1000)
            assert await page.evaluate(DROP_HUB_SOCKET) == 1
            await page.wait_for_function("() => window.sawReconnecting === true", timeout=WAIT_MS)
            registration = await _registered(page, 1)
            assert registration["queuePosition"] == 2
            await page.wait_for_function(
                "() => window.demoWidget.hub && window.demoWidget.hub.state === 'Connected'"
                " && !window.demoWidget.stateData.reconnecting", timeout=WAIT_MS)
            await _reaches_the_front_and_connects(page, stack, ahead_id)
    finally:
        release.set()
        await stack.close()


async def test_refusals_are_explained(redis_client: aioredis.Redis) -> None:
    stack = await start_widget_stack(redis_client, config=demo_config(cap=1, Queue={"MaxLength": 1}))
    try:
        assert (await stack.request_session(demo_body())).code == 200
        assert (await stack.request_session(demo_body())).code == 202  # the queue is now full
        async with chromium() as browser:
            page = await browser.new_page()
            await page.goto(stack.base_url + "/")
            await _start_call(page)
            data = await wait_state(page, "error")
            assert data["status"] == 503
            await expect(page.get_by_role("status").first).to_have_text(
                "The waiting queue is full. Please try again in 30 seconds.")
            await screenshot(page, "widget_queue_full")

            await page.goto(stack.base_url + "/?campaign=NoSuchCampaign")
            await _start_call(page)
            data = await wait_state(page, "error")
            assert data["status"] == 400
            await expect(page.get_by_role("status").first).to_have_text(
                "The request was not accepted: Invalid or missing CampaignId.")
    finally:
        await stack.close()


async def test_missing_signalr_bundle_says_how_to_install(redis_client: aioredis.Redis, tmp_path: Path) -> None:
    root = tmp_path / "static"
    shutil.copytree(STATIC_ROOT, root, ignore=shutil.ignore_patterns("node_modules"))
    stack = await start_widget_stack(redis_client, config=demo_config(cap=1), static_root=root)
    try:
        assert (await stack.request_session(demo_body())).code == 200
        async with chromium() as browser:
            page = await browser.new_page()
            await page.goto(stack.base_url + "/")
            await expect(page.get_by_role("alert")).to_contain_text("npm ci --prefix static")
            await _start_call(page)
            await wait_state(page, "error")
            status = page.get_by_role("status").first
            await expect(status).to_contain_text("Could not connect to the waiting queue.")
            await expect(status).to_contain_text("bash scripts/demo.sh")
            await screenshot(page, "widget_signalr_missing")
        # Only flat web files are public: not the npm folder, not package.json.
        for path in ("/static/package.json", "/static/node_modules/@microsoft/signalr/package.json"):
            assert (await stack.call("GET", path)).code == 404, path
    finally:
        await stack.close()


async def test_leave_button_gives_up_the_place(redis_client: aioredis.Redis) -> None:
    stack = await start_widget_stack(redis_client, config=demo_config(cap=1))
    try:
        assert (await stack.request_session(demo_body())).code == 200
        async with chromium() as browser:
            page = await browser.new_page()
            await page.goto(stack.base_url + "/")
            await _start_call(page)
            await wait_state(page, "queued")
            assert (await stack.gateway.store.counts())["queued"] == 1
            await page.evaluate("() => window.demoWidget.on('left', () => { window.leftQueue = true; })")
            await expect(page.get_by_role("button", name="Leave queue")).to_be_focused()
            await page.keyboard.press("Enter")  # keyboard users can leave too
            await wait_state(page, "idle")
            await page.wait_for_function("() => window.leftQueue === true", timeout=WAIT_MS)
            await expect(page.get_by_role("status").first).to_have_text("You left the queue.")
            assert (await stack.gateway.store.counts())["queued"] == 0
            await expect(page.get_by_role("button", name="Start call")).to_be_enabled()
            await screenshot(page, "widget_left_queue")
            await page.set_viewport_size({"width": 390, "height": 844})  # a phone: the cards stack
            await screenshot(page, "demo_narrow_screen")
    finally:
        await stack.close()


async def test_rate_limited_request_says_when_to_retry(redis_client: aioredis.Redis) -> None:
    stack = await start_widget_stack(redis_client, config=demo_config(cap=2, Security={"RateLimitHourly": 1}))
    try:
        assert (await stack.request_session(demo_body())).code == 200  # uses this client's hourly request
        async with chromium() as browser:
            page = await browser.new_page()
            await page.goto(stack.base_url + "/")
            await _start_call(page)
            data = await wait_state(page, "error")
            assert data["status"] == 429
            assert 0 < data["retryAfterSeconds"] <= 3600
            status = page.get_by_role("status").first
            await expect(status).to_contain_text("Too many call attempts (Hourly rate limit exceeded)")
            await expect(status).to_contain_text(re.compile(r"Please try again in about \d+ (minutes|hour)\."))
            await expect(page.get_by_role("button", name="Try again")).to_be_visible()
            assert len(stack.sim.calls) == 1  # the refused attempt never reached the platform
            await screenshot(page, "widget_rate_limited")
    finally:
        await stack.close()


async def test_vpn_client_is_told_why(redis_client: aioredis.Redis, tmp_path: Path) -> None:
    database = write_database(tmp_path / "anon.mmdb", ANONYMOUS_IP_TYPE,
                              {"203.0.113.10/32": anonymous_record(vpn=True)})
    config = demo_config(cap=2, Security={"BlockVpn": True}, GeoIp={"AnonymousIpDatabase": str(database)},
                         ForwardedHeaders={"KnownProxies": ["127.0.0.1"]})
    stack = await start_widget_stack(redis_client, config=config)
    try:
        async with chromium() as browser:
            # The gateway sits behind a trusted proxy on loopback, which reports a VPN exit as the client.
            context = await browser.new_context(extra_http_headers={"X-Forwarded-For": "203.0.113.10"})
            page = await context.new_page()
            await page.goto(stack.base_url + "/")
            await _start_call(page)
            data = await wait_state(page, "error")
            assert data["status"] == 403
            await expect(page.get_by_role("status").first).to_have_text(
                "Calls cannot be started from your network (VPN detected). If you use a VPN or proxy, "
                "turn it off and try again.")
            assert not stack.sim.calls
            await screenshot(page, "widget_vpn_blocked")
    finally:
        await stack.close()


async def test_refused_microphone_gets_a_clear_message(redis_client: aioredis.Redis) -> None:
    stack = await start_widget_stack(redis_client, config=demo_config(cap=2))
    try:
        async with chromium(fake_ui=False) as browser:
            context = await browser.new_context(permissions=[])
            page = await context.new_page()
            await page.goto(stack.base_url + "/")
            await _start_call(page)
            await wait_state(page, "error")
            await expect(page.get_by_role("status").first).to_have_text(
                "Microphone access was refused. Allow the microphone for this site in your browser's settings, "
                "then try again.")
            # The microphone is asked for first, so a refusal costs no session and no place in the queue.
            assert not stack.sim.requests
            assert await stack.gateway.store.counts() == {"active": 0, "pending": 0, "queued": 0, "campaigns": {}}
            await screenshot(page, "widget_microphone_refused")
    finally:
        await stack.close()


async def test_widget_on_another_origin(redis_client: aioredis.Redis) -> None:
    site = start_site()
    stranger = start_site()
    stack = await start_widget_stack(redis_client, config=demo_config(cap=1, origins=[site.origin]))
    site.html = stranger.html = embed_html(stack.base_url)
    try:
        assert (await stack.request_session(demo_body())).code == 200  # the only slot is taken
        async with chromium() as browser:
            page = await browser.new_page()
            console = collect_console(page)
            await page.goto(site.origin + "/")
            await page.get_by_label("Name *").fill("Grace")
            await page.get_by_role("button", name="Start call").click()
            # Queued: the 202 body was readable (CORS) and the hub accepted a cross-origin connection.
            await wait_state(page, "queued")
            await page.wait_for_function("() => window.demoWidget.hub && window.demoWidget.hub.state === 'Connected'",
                                         timeout=WAIT_MS)
            assert stack.sim.end_call(next(iter(stack.sim.calls)), "test ends the first call")
            await wait_state(page, "connected")
            await page.wait_for_function(
                "() => { const s = window.demoWidget.stats(); return s.framesSent > 10 && s.framesReceived > 10; }",
                timeout=WAIT_MS)
            calls = _live_calls(stack)
            assert len(calls) == 1 and calls[0]["framesReceived"] > 10, console
            await screenshot(page, "widget_cross_origin")
            # Once its turn came, the widget closed its hub connection.
            assert await page.evaluate("() => window.demoWidget.hub === null")
            await page.get_by_role("button", name="Hang up").click()
            await wait_state(page, "idle")

            # A site that is not in AllowedOrigins gets no CORS headers: the browser blocks the answer.
            page2 = await browser.new_page()
            await page2.goto(stranger.origin + "/")
            await page2.get_by_role("button", name="Start call").click()
            await wait_state(page2, "error")
            await expect(page2.get_by_role("status").first).to_have_text("Please fill in: Name.")
            await page2.get_by_label("Name *").fill("Mallory")
            await page2.get_by_role("button", name="Try again").click()
            await wait_state(page2, "error")
            await expect(page2.get_by_role("status").first).to_have_text(
                "Could not reach the voice service. Check your internet connection and try again.")
            await screenshot(page2, "widget_origin_not_allowed")
    finally:
        await stack.close()
        await site.close()
        await stranger.close()


def _json(body: bytes) -> dict[str, Any]:
    return ujson.loads(body)
