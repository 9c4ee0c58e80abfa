"""The platform simulator: initiate, billing, control API, audio WebSocket, call end and webhook."""

from __future__ import annotations

import asyncio
import itertools
import math
from array import array
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import ujson
from tornado.httpclient import AsyncHTTPClient, HTTPResponse
from tornado.httpserver import HTTPServer
from tornado.testing import bind_unused_port
from tornado.web import Application, RequestHandler
from tornado.websocket import WebSocketClientConnection, websocket_connect

from simulator.app import (
    CONCURRENCY_LIMIT_CODE,
    INVALID_API_KEY_CODE,
    PlatformSimulator,
    make_simulator_app,
    serve_simulator,
)
from simulator.audio import greeting_tone, split_frames
from simulator.tokens import TokenError, sign_call_token, verify_call_token

TOKEN = "iqra_sk_sim"
WEBHOOK_TOKEN = "hook-secret"
TIMEOUT = 5.0


# -- a tiny real webhook receiver -----------------------------------------------------------------


@dataclass
class Receiver:
    url: str
    received: asyncio.Queue[tuple[dict[str, Any], str | None]] = field(default_factory=asyncio.Queue)
    failures_left: int = 0

    async def next(self) -> tuple[dict[str, Any], str | None]:
        return await asyncio.wait_for(self.received.get(), TIMEOUT)


class _WebhookHandler(RequestHandler):
    def initialize(self, receiver: Receiver) -> None:
        self.receiver = receiver

    def post(self) -> None:
        self.receiver.received.put_nowait((ujson.loads(self.request.body), self.request.headers.get("X-Api-Token")))
        if self.receiver.failures_left > 0:
            self.receiver.failures_left -= 1
            self.set_status(500)
        self.finish()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    sock, port = bind_unused_port()
    recv = Receiver(url=f"http://127.0.0.1:{port}/api/webhook/session-ended")
    server = HTTPServer(Application([(r"/api/webhook/session-ended", _WebhookHandler, {"receiver": recv})]))
    server.add_sockets([sock])
    yield recv
    server.stop()
    await server.close_all_connections()


# -- the simulator under test ---------------------------------------------------------------------


@dataclass
class Sim:
    sim: PlatformSimulator
    port: int
    http: AsyncHTTPClient

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def call_api(self, method: str, path: str, body: Any = None, *, token: str = TOKEN) -> HTTPResponse:
        return await self.http.fetch(
            self.base + path,
            method=method,
            body=(b"" if method == "POST" else None)
            if body is None
            else (body if isinstance(body, bytes) else ujson.dumps(body)),
            headers={"Authorization": f"Token {token}"},
            raise_error=False,
        )

    async def initiate(
        self, *, transport: int = 0, client: str = "u_127.0.0.1", rate: int = 16000, token: str = TOKEN, **extra: Any
    ) -> dict[str, Any]:
        body = {
            "TransportType": transport,
            "WebCampaignId": "wc",
            "RegionId": "eu",
            "ClientIdentifier": client,
            "AudioInputConfiguration": {
                "SampleRate": 16000,
                "BitsPerSample": 16,
                "AudioEncodingType": 1,
                "AudioEncodingFallbackMode": 0,
            },
            "AudioOutputConfiguration": {
                "SampleRate": rate,
                "BitsPerSample": 16,
                "AudioEncodingType": 1,
                "AudioEncodingFallbackMode": 0,
                "FrameDurationMs": 30,
            },
            "DynamicVariables": {},
            "Metadata": {},
            **extra,
        }
        response = await self.call_api("POST", "/api/v1/business/7/websession/initiate", body, token=token)
        assert response.code == 200
        return ujson.loads(response.body)

    async def json(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        response = await self.call_api(method, path, body)
        return response.code, ujson.loads(response.body)


SimFactory = Callable[..., Awaitable[Sim]]


@pytest.fixture
async def make_sim(receiver: Receiver) -> AsyncIterator[SimFactory]:
    started: list[tuple[Sim, HTTPServer]] = []
    http = AsyncHTTPClient(force_instance=True)

    async def factory(**kwargs: Any) -> Sim:
        options: dict[str, Any] = {
            "api_token": TOKEN,
            "webhook_url": receiver.url,
            "webhook_token": WEBHOOK_TOKEN,
            "call_seconds": None,
            "webhook_retry_delays": (0.05, 0.05),
        }
        options.update(kwargs)
        sim = PlatformSimulator(**options)
        sock, port = bind_unused_port()
        server = HTTPServer(make_simulator_app(sim))
        server.add_sockets([sock])
        handle = Sim(sim=sim, port=port, http=http)
        started.append((handle, server))
        return handle

    yield factory
    for handle, server in started:
        server.stop()
        await handle.sim.aclose()
        await server.close_all_connections()
    http.close()


@pytest.fixture
async def s(make_sim: SimFactory) -> Sim:
    return await make_sim()


async def read_greeting(conn: WebSocketClientConnection, sample_rate: int) -> bytes:
    expected = len(greeting_tone(sample_rate))
    audio = b""
    while len(audio) < expected:
        frame = await asyncio.wait_for(conn.read_message(), TIMEOUT)
        assert isinstance(frame, bytes)
        audio += frame
    return audio


async def read_close(conn: WebSocketClientConnection) -> tuple[int | None, str | None]:
    while (await asyncio.wait_for(conn.read_message(), TIMEOUT)) is not None:
        pass
    # The server closed; closing our side too releases the client's protocol object.
    conn.close()
    return conn.close_code, conn.close_reason


# -- pure parts -----------------------------------------------------------------------------------


def test_token_round_trip_and_url_safe_spelling() -> None:
    secret = b"k" * 32
    for client in ("u_1.2.3.4", "???>>>", "x" * 50):
        token = sign_call_token(secret, session_id="a" * 24, client_id=client, expires_unix=1000)
        assert not set("=+/") & set(token)
        verify_call_token(secret, token, session_id="a" * 24, client_id=client, now=999.0)


@pytest.mark.parametrize(
    ("mutate", "session", "client", "now", "code"),
    [
        (lambda t: t, "s1", "c1", 1000.0, "TOKEN_EXPIRED"),
        (lambda t: t, "s2", "c1", 10.0, "TOKEN_MISMATCH"),
        (lambda t: t, "s1", "c2", 10.0, "TOKEN_MISMATCH"),
        (lambda t: t.replace(".", ""), "s1", "c1", 10.0, "TOKEN_MALFORMED"),
        (lambda t: t + "!", "s1", "c1", 10.0, "TOKEN_MALFORMED"),
        (lambda t: "eyJ" + t, "s1", "c1", 10.0, "TOKEN_MALFORMED"),
        (
            lambda t: (
                t.split(".")[0]
                + "."
                + sign_call_token(b"other", session_id="s1", client_id="c1", expires_unix=1000).split(".")[1]
            ),
            "s1",
            "c1",
            10.0,
            "TOKEN_SIGNATURE",
        ),
    ],
)
def test_token_rejections(mutate: Callable[[str], str], session: str, client: str, now: float, code: str) -> None:
    token = mutate(sign_call_token(b"secret", session_id="s1", client_id="c1", expires_unix=1000))
    with pytest.raises(TokenError) as caught:
        verify_call_token(b"secret", token, session_id=session, client_id=client, now=now)
    assert caught.value.code == code


@pytest.mark.parametrize("rate", [8000, 16000, 24000, 48000])
def test_greeting_tone(rate: int) -> None:
    pcm = greeting_tone(rate, seconds=0.5)
    samples = array("h", pcm)
    assert len(samples) == rate // 2
    peak = max(abs(x) for x in samples)
    assert 0.25 * 32767 < peak <= 0.3 * 32767 + 1
    # Faded in and out: no click at either end.
    assert abs(samples[0]) < 100 and abs(samples[-1]) < 0.05 * 32767
    # The first note is 660 Hz: count zero crossings over its steady part.
    quarter = samples[rate // 40 : rate // 40 + rate // 10]
    crossings = sum(1 for a, b in itertools.pairwise(quarter) if (a < 0) != (b < 0))
    assert math.isclose(crossings / 2 / 0.1, 660, rel_tol=0.05)
    frames = split_frames(pcm, sample_rate=rate)
    assert all(len(f) == rate * 30 // 1000 * 2 for f in frames[:-1])
    assert b"".join(frames) == pcm


# -- initiate and billing -------------------------------------------------------------------------


async def test_initiate_answer_shapes(s: Sim) -> None:
    answer = await s.initiate()
    assert answer["success"] is True and answer["code"] is None
    data = answer["data"]
    conv = data["conversationSessionId"]
    assert len(conv) == 24 and int(conv, 16) >= 0
    assert len(data["webSessionId"]) == 24
    prefix = f"ws://127.0.0.1:{s.port}/ws/session/{conv}/websocket/u_127.0.0.1/"
    assert data["sessionWebSocketURL"].startswith(prefix)

    code, _ = await s.json("POST", "/_sim/shape", {"shape": "public"})
    assert code == 200
    public = (await s.initiate(transport=1))["data"]
    assert set(public) == {"sessionId", "sessionWebSocketURL"}
    assert "/webrtc/u_127.0.0.1/" in public["sessionWebSocketURL"]


async def test_public_host_overrides_request_host(make_sim: SimFactory) -> None:
    s = await make_sim(public_host="voice.example:443")
    url = (await s.initiate())["data"]["sessionWebSocketURL"]
    assert url.startswith("ws://voice.example:443/ws/session/")


async def test_wrong_token_gets_the_error_envelope(s: Sim) -> None:
    answer = await s.initiate(token="nope")
    assert answer == {"success": False, "message": "Invalid API key.", "code": INVALID_API_KEY_CODE, "data": None}
    code, usage = await s.json("GET", "/api/v1/user/billing/usage")
    assert code == 200 and usage["success"] is True
    response = await s.call_api("GET", "/api/v1/user/billing/usage", token="nope")
    assert ujson.loads(response.body)["code"] == INVALID_API_KEY_CODE
    assert s.sim.live_calls == []


@pytest.mark.parametrize(
    ("extra", "code"),
    [
        ({"TransportType": 5}, "InitiateWebSession:CONFIG_TRANSPORT_TYPE_INVALID"),
        ({"WebCampaignId": ""}, "InitiateWebSession:CAMPAIGN_NOT_FOUND"),
        ({"RegionId": None}, "InitiateWebSession:REGION_NOT_FOUND"),
        ({"ClientIdentifier": "a/b"}, "InitiateWebSession:CONFIG_CLIENT_IDENTIFIER_INVALID"),
        ({"ClientIdentifier": "x" * 257}, "InitiateWebSession:CONFIG_CLIENT_IDENTIFIER_TOO_LONG"),
        (
            {"AudioInputConfiguration": {"SampleRate": 16000}},
            "InitiateWebSession:CONFIG_AUDIO_INPUT_CONFIGURATION_INVALID",
        ),
        (
            {
                "AudioOutputConfiguration": {
                    "SampleRate": 16000,
                    "BitsPerSample": 16,
                    "AudioEncodingType": 1,
                    "AudioEncodingFallbackMode": 0,
                    "FrameDurationMs": 10,
                }
            },
            "InitiateWebSession:CONFIG_AUDIO_OUTPUT_CONFIGURATION_FRAME_DURATION_MS_INVALID",
        ),
        ({"Metadata": {"a": 1}}, "InitiateWebSession:CONFIG_METADATA_INVALID"),
    ],
)
async def test_initiate_validation(s: Sim, extra: dict[str, Any], code: str) -> None:
    answer = await s.initiate(**extra)
    assert answer["success"] is False
    assert answer["code"] == code
    assert s.sim.live_calls == []


async def test_initiate_unreadable_json_is_a_400(s: Sim) -> None:
    response = await s.call_api("POST", "/api/v1/business/7/websession/initiate", b"{nope")
    assert response.code == 400


async def test_billing_and_limit(s: Sim) -> None:
    first = (await s.initiate())["data"]["conversationSessionId"]
    await s.initiate()
    assert (await s.json("GET", "/api/v1/user/billing/usage"))[1]["data"]["currentUsage"] == {"Call_Concurrency": 2}
    assert (await s.json("GET", "/api/v1/user/billing/featuresactivequantity"))[1]["data"] == {"Call_Concurrency": 1000}

    assert (await s.json("POST", "/_sim/limit", {"limit": 2}))[0] == 200
    assert (await s.json("GET", "/api/v1/user/billing/featuresactivequantity"))[1]["data"] == {"Call_Concurrency": 2}
    refused = await s.initiate()
    assert (refused["success"], refused["code"]) == (False, CONCURRENCY_LIMIT_CODE)

    assert (await s.json("POST", f"/_sim/calls/{first}/end"))[0] == 200
    assert (await s.json("GET", "/api/v1/user/billing/usage"))[1]["data"]["currentUsage"] == {"Call_Concurrency": 1}
    assert (await s.initiate())["success"] is True
    stats = (await s.json("GET", "/_sim/stats"))[1]
    assert (stats["initiated"], stats["refused"], stats["ended"], stats["live"], stats["limit"]) == (3, 1, 1, 2, 2)


async def test_injected_failures(s: Sim) -> None:
    assert (await s.json("POST", "/_sim/fail", {"count": 1, "mode": "http500"}))[0] == 200
    response = await s.call_api("POST", "/api/v1/business/7/websession/initiate", {})
    assert response.code == 500
    await s.json("POST", "/_sim/fail", {"count": 2, "mode": "error", "code": "InitiateWebSession:REGION_DISABLED"})
    assert (await s.initiate())["code"] == "InitiateWebSession:REGION_DISABLED"
    assert (await s.initiate())["code"] == "InitiateWebSession:REGION_DISABLED"
    await s.json("POST", "/_sim/fail", {"count": 1, "mode": "concurrency"})
    assert (await s.initiate())["code"] == CONCURRENCY_LIMIT_CODE
    assert (await s.initiate())["success"] is True


async def test_timeout_mode_hangs(make_sim: SimFactory) -> None:
    s = await make_sim(hang_seconds=30)
    await s.json("POST", "/_sim/fail", {"count": 1, "mode": "timeout"})
    request = asyncio.ensure_future(s.initiate())
    done, _ = await asyncio.wait({request}, timeout=0.3)
    assert not done
    # Closing the simulator releases the held request.
    await s.sim.aclose()
    answer = await asyncio.wait_for(request, TIMEOUT)
    assert answer["success"] is False


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/_sim/fail", {"count": 1, "mode": "explode"}),
        ("/_sim/fail", {"count": -1, "mode": "error"}),
        ("/_sim/fail", {"count": True, "mode": "error"}),
        ("/_sim/fail", {"count": 1, "mode": "error", "code": 5}),
        ("/_sim/fail", b"not json"),
        ("/_sim/limit", {"limit": "ten"}),
        ("/_sim/limit", [1]),
        ("/_sim/shape", {"shape": "old"}),
    ],
)
async def test_control_api_rejects_bad_input(s: Sim, path: str, body: Any) -> None:
    code, answer = await s.json("POST", path, body)
    assert code == 400
    assert answer["message"]


async def test_end_unknown_call_is_404(s: Sim) -> None:
    code, answer = await s.json("POST", "/_sim/calls/ffffffffffffffffffffffff/end")
    assert code == 404 and "ffffffffffffffffffffffff" in answer["message"]


# -- audio WebSocket, call end, webhook -----------------------------------------------------------


async def test_echo_greeting_counts_and_hang_up_webhook(s: Sim, receiver: Receiver) -> None:
    data = (await s.initiate(rate=24000))["data"]
    conv = data["conversationSessionId"]
    conn = await websocket_connect(data["sessionWebSocketURL"])
    greeting = await read_greeting(conn, 24000)
    assert greeting == greeting_tone(24000)
    greeting_frames = len(split_frames(greeting, sample_rate=24000))

    chunks = [bytes([i]) * 960 for i in range(3)]
    for chunk in chunks:
        await conn.write_message(chunk, binary=True)
        assert await asyncio.wait_for(conn.read_message(), TIMEOUT) == chunk
    await conn.write_message("text is ignored")

    [listed] = (await s.json("GET", "/_sim/calls"))[1]["calls"]
    assert (listed["conversationSessionId"], listed["state"]) == (conv, "connected")
    assert (listed["framesReceived"], listed["bytesReceived"]) == (3, 3 * 960)
    assert (listed["framesSent"], listed["bytesSent"]) == (greeting_frames + 3, len(greeting) + 3 * 960)

    conn.close()
    body, token = await receiver.next()
    assert body == {"ConversationSessionId": conv}
    assert token == WEBHOOK_TOKEN
    await s.sim.drain_webhooks()
    call = s.sim.calls[conv]
    assert (call.state, call.end_reason, call.webhook, call.webhook_attempts) == (
        "ended",
        "client hung up",
        "delivered",
        1,
    )
    assert (await s.json("GET", "/_sim/calls"))[1]["calls"] == []
    assert len((await s.json("GET", "/_sim/calls?all=1"))[1]["calls"]) == 1


async def test_webrtc_socket_has_no_greeting(s: Sim) -> None:
    data = (await s.initiate(transport=1))["data"]
    conn = await websocket_connect(data["sessionWebSocketURL"])
    await conn.write_message(b"\x01\x02", binary=True)
    assert await asyncio.wait_for(conn.read_message(), TIMEOUT) == b"\x01\x02"
    conn.close()


async def test_bad_token_is_accepted_then_closed_with_policy_violation(s: Sim, receiver: Receiver) -> None:
    url = (await s.initiate())["data"]["sessionWebSocketURL"]
    base, token = url.rsplit("/", 1)
    conn = await websocket_connect(f"{base}/{token[:-3]}AAA")
    code, reason = await read_close(conn)
    assert code == 1008
    assert reason is not None and reason.startswith("[TOKEN_")
    [call] = s.sim.live_calls
    assert call.state == "initiated"


async def test_token_for_another_call_is_refused(s: Sim) -> None:
    first = (await s.initiate())["data"]
    second = (await s.initiate())["data"]
    token = first["sessionWebSocketURL"].rsplit("/", 1)[1]
    other = second["sessionWebSocketURL"].rsplit("/", 1)[0]
    conn = await websocket_connect(f"{other}/{token}")
    assert await read_close(conn) == (1008, "[TOKEN_MISMATCH] Token does not match this session.")


async def test_expired_token_with_injected_clock(make_sim: SimFactory) -> None:
    now = [1_000_000.0]
    s = await make_sim(clock=lambda: now[0])
    url = (await s.initiate())["data"]["sessionWebSocketURL"]
    now[0] += 301
    conn = await websocket_connect(url)
    assert await read_close(conn) == (1008, "[TOKEN_EXPIRED] Token has expired.")


async def test_second_socket_and_ended_call_are_refused(s: Sim, receiver: Receiver) -> None:
    url = (await s.initiate())["data"]["sessionWebSocketURL"]
    first = await websocket_connect(url)
    await read_greeting(first, 16000)
    second = await websocket_connect(url)
    assert (await read_close(second))[0] == 1008
    assert second.close_reason is not None and "SESSION_ALREADY_CONNECTED" in second.close_reason
    first.close()
    await receiver.next()
    third = await websocket_connect(url)
    assert await read_close(third) == (1008, "[SESSION_NOT_FOUND] Session not found or already ended.")


async def test_call_ends_after_call_seconds(make_sim: SimFactory, receiver: Receiver) -> None:
    s = await make_sim(call_seconds=0.3)
    data = (await s.initiate())["data"]
    conn = await websocket_connect(data["sessionWebSocketURL"])
    await read_greeting(conn, 16000)
    assert (await read_close(conn))[0] == 1000
    body, _ = await receiver.next()
    assert body == {"ConversationSessionId": data["conversationSessionId"]}
    assert s.sim.calls[data["conversationSessionId"]].end_reason == "max call duration reached"


async def test_unconnected_call_ends_after_call_seconds(make_sim: SimFactory, receiver: Receiver) -> None:
    s = await make_sim(call_seconds=0.2)
    conv = (await s.initiate())["data"]["conversationSessionId"]
    body, _ = await receiver.next()
    assert body == {"ConversationSessionId": conv}
    assert s.sim.calls[conv].end_reason == "never connected"
    assert (await s.json("GET", "/api/v1/user/billing/usage"))[1]["data"]["currentUsage"] == {"Call_Concurrency": 0}


async def test_control_api_ends_a_connected_call(s: Sim, receiver: Receiver) -> None:
    data = (await s.initiate())["data"]
    conn = await websocket_connect(data["sessionWebSocketURL"])
    await read_greeting(conn, 16000)
    code, answer = await s.json("POST", f"/_sim/calls/{data['conversationSessionId']}/end")
    assert code == 200 and answer["ended"] is True
    assert await read_close(conn) == (1000, "ended by control API")
    assert (await receiver.next())[0] == {"ConversationSessionId": data["conversationSessionId"]}
    # Ending twice is harmless and sends nothing more.
    assert (await s.json("POST", f"/_sim/calls/{data['conversationSessionId']}/end"))[1]["ended"] is False


async def test_webhook_is_retried(s: Sim, receiver: Receiver) -> None:
    receiver.failures_left = 2
    conv = (await s.initiate())["data"]["conversationSessionId"]
    s.sim.end_call(conv, "test")
    for _ in range(3):
        assert (await receiver.next())[0] == {"ConversationSessionId": conv}
    await s.sim.drain_webhooks()
    assert (s.sim.calls[conv].webhook, s.sim.calls[conv].webhook_attempts) == ("delivered", 3)


async def test_webhook_gives_up(s: Sim, receiver: Receiver, caplog: pytest.LogCaptureFixture) -> None:
    receiver.failures_left = 10
    conv = (await s.initiate())["data"]["conversationSessionId"]
    s.sim.end_call(conv, "test")
    await asyncio.wait_for(s.sim.drain_webhooks(), TIMEOUT)
    assert receiver.received.qsize() == 3
    assert (s.sim.calls[conv].webhook, s.sim.calls[conv].webhook_attempts) == ("failed", 3)
    assert (await s.json("GET", "/_sim/stats"))[1]["webhooksFailed"] == 1
    assert any("failed after 3 attempts" in r.getMessage() for r in caplog.records)


async def test_serve_simulator_on_a_free_port(receiver: Receiver) -> None:
    running = await serve_simulator(port=0, webhook_url=receiver.url, webhook_token=WEBHOOK_TOKEN, call_seconds=None)
    try:
        assert running.port > 0
        assert running.base_url == f"http://127.0.0.1:{running.port}/api/v1/"
        http = AsyncHTTPClient(force_instance=True)
        try:
            response = await http.fetch(
                running.base_url + "user/billing/featuresactivequantity",
                headers={"Authorization": "Token iqra_sk_simulator"},
            )
        finally:
            http.close()
        assert ujson.loads(response.body)["data"] == {"Call_Concurrency": 1000}
    finally:
        await running.stop()
