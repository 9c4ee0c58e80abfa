"""The platform client against the real simulator (and a scripted server for malformed answers)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest
import ujson
from tornado.httpclient import AsyncHTTPClient
from tornado.httpserver import HTTPServer
from tornado.testing import bind_unused_port
from tornado.web import Application, RequestHandler

from gateway.model.request import parse_session_request
from gateway.platform.client import PlatformClient
from gateway.platform.errors import PlatformError
from gateway.platform.wire import (
    InitiatedSession,
    PlatformConcurrency,
    conversation_id_from_url,
    platform_client_identifier,
)
from simulator.app import CONCURRENCY_LIMIT_CODE, INVALID_API_KEY_CODE, PlatformSimulator
from tests.harness.platform_client import CAMPAIGN, TOKEN, make_request, make_settings, port_whose_connect_hangs


@pytest.fixture
async def client(sim_port: tuple[PlatformSimulator, int]) -> AsyncIterator[PlatformClient]:
    platform = PlatformClient(make_settings(sim_port[1]))
    yield platform
    platform.close()


# -- pure helpers ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cid", "ip", "expected"),
    [("user-1", "1.2.3.4", "user-1_1.2.3.4"), (None, "1.2.3.4", "1.2.3.4"), ("", "::1", "::1"), (None, "", "Unknown")],
)
def test_platform_client_identifier(cid: str | None, ip: str, expected: str) -> None:
    assert platform_client_identifier(cid, ip) == expected


@pytest.mark.parametrize(
    ("code", "message", "expected"),
    [
        (CONCURRENCY_LIMIT_CODE, "x", True),
        (None, "Too Many concurrent calls", True),
        ("X:CALL_CONCURRENCY", "nope", True),
        ("InitiateWebSession:REGION_NOT_FOUND", "Region not found", False),
        (PlatformError.TIMEOUT, "did not answer", False),
    ],
)
def test_is_concurrency_limit(code: str | None, message: str, expected: bool) -> None:
    assert PlatformError(message, code=code).is_concurrency_limit is expected


def test_error_text_is_the_originals() -> None:
    assert str(PlatformError("Region not found", code="InitiateWebSession:REGION_NOT_FOUND")) == (
        "[InitiateWebSession:REGION_NOT_FOUND] Region not found"
    )
    assert str(PlatformError("plain")) == "plain"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("wss://n1.iqra.bot/ws/session/65f0a1b2c3d4e5f6a7b8c9d0/websocket/u_1.2.3.4/tok", "65f0a1b2c3d4e5f6a7b8c9d0"),
        ("ws://h:1/ws/session/abc/webrtc/c/t", "abc"),
        ("ws://h:1/other/abc", None),
        ("ws://h:1/ws/session/", None),
    ],
)
def test_conversation_id_from_url(url: str, expected: str | None) -> None:
    assert conversation_id_from_url(url) == expected


# -- against the simulator ------------------------------------------------------------------------


async def test_initiate_sends_the_originals_exact_request(
    sim_port: tuple[PlatformSimulator, int], client: PlatformClient
) -> None:
    sim, port = sim_port
    session = await client.initiate(CAMPAIGN, make_request(), "203.0.113.9")

    call = sim.calls[session.conversation_session_id]
    assert session == InitiatedSession(
        conversation_session_id=call.conversation_session_id,
        web_session_id=call.web_session_id,
        web_socket_url=session.web_socket_url,
    )
    assert len(session.conversation_session_id) == 24
    assert session.web_socket_url.startswith(
        f"ws://127.0.0.1:{port}/ws/session/{session.conversation_session_id}/websocket/user-1_203.0.113.9/"
    )
    [captured] = list(sim.requests)
    assert captured.method == "POST"
    assert captured.path == "/api/v1/business/42/websession/initiate"
    assert captured.headers["Authorization"] == f"Token {TOKEN}"
    assert captured.headers["Content-Type"] == "application/json"
    assert ujson.loads(captured.body) == {
        "TransportType": 0,
        "WebCampaignId": "wc-1",
        "RegionId": "eu",
        "ClientIdentifier": "user-1_203.0.113.9",
        "AudioInputConfiguration": {
            "SampleRate": 16000,
            "BitsPerSample": 16,
            "AudioEncodingType": 1,
            "AudioEncodingFallbackMode": 0,
        },
        "AudioOutputConfiguration": {
            "SampleRate": 24000,
            "BitsPerSample": 16,
            "AudioEncodingType": 1,
            "AudioEncodingFallbackMode": 0,
            "FrameDurationMs": 30,
        },
        "DynamicVariables": {"FirstName": "Ann"},
        "Metadata": {"source": "test"},
    }


async def test_initiate_with_a_parsed_widget_request(
    sim_port: tuple[PlatformSimulator, int], client: PlatformClient
) -> None:
    sim, _ = sim_port
    widget_body = {
        "campaignId": "Web",
        "regionId": "eu",
        "transportType": 0,
        "clientIdentifier": None,
        "dynamicVariables": {},
        "metadata": {},
        "audioConfiguration": {
            "inputEncodingType": 1,
            "inputSampleRate": 16000,
            "inputBitsPerSample": 16,
            "outputEncodingType": 1,
            "outputSampleRate": 16000,
            "outputBitsPerSample": 16,
        },
    }
    request = parse_session_request(ujson.dumps(widget_body).encode(), {"Web": CAMPAIGN})
    session = await client.initiate(CAMPAIGN, request, "2001:db8::1")
    body = ujson.loads(sim.requests[-1].body)
    assert body["ClientIdentifier"] == "2001:db8::1"
    assert body["AudioOutputConfiguration"]["AudioEncodingType"] == 1
    assert session.conversation_session_id in sim.calls


async def test_webrtc_transport_and_anonymous_client(
    sim_port: tuple[PlatformSimulator, int], client: PlatformClient
) -> None:
    sim, _ = sim_port
    session = await client.initiate(CAMPAIGN, make_request(transport=1, client_identifier=None), "198.51.100.7")
    assert f"/ws/session/{session.conversation_session_id}/webrtc/198.51.100.7/" in session.web_socket_url
    body = ujson.loads(sim.requests[-1].body)
    assert (body["TransportType"], body["ClientIdentifier"]) == (1, "198.51.100.7")


async def test_public_response_shape(sim_port: tuple[PlatformSimulator, int], client: PlatformClient) -> None:
    sim, _ = sim_port
    sim.response_shape = "public"
    session = await client.initiate(CAMPAIGN, make_request(), "203.0.113.9")
    [call] = sim.live_calls
    # The public shape has no conversationSessionId: it must come from the audio URL.
    assert session.conversation_session_id == call.conversation_session_id
    assert session.web_session_id == call.web_session_id


async def test_wrong_token_carries_the_platforms_code(sim_port: tuple[PlatformSimulator, int]) -> None:
    platform = PlatformClient(make_settings(sim_port[1], token="iqra_sk_wrong"))
    try:
        with pytest.raises(PlatformError) as caught:
            await platform.initiate(CAMPAIGN, make_request(), "203.0.113.9")
    finally:
        platform.close()
    assert (caught.value.code, caught.value.message, caught.value.status) == (
        INVALID_API_KEY_CODE,
        "Invalid API key.",
        200,
    )
    assert not caught.value.is_concurrency_limit


async def test_http_500(sim_port: tuple[PlatformSimulator, int], client: PlatformClient) -> None:
    sim_port[0].fail_next(1, "http500")
    with pytest.raises(PlatformError) as caught:
        await client.initiate(CAMPAIGN, make_request(), "203.0.113.9")
    assert caught.value.status == 500
    assert caught.value.code == PlatformError.HTTP_STATUS
    assert "status code 500" in caught.value.message
    # Only the next one failed.
    await client.initiate(CAMPAIGN, make_request(), "203.0.113.9")


async def test_success_false_error(sim_port: tuple[PlatformSimulator, int], client: PlatformClient) -> None:
    sim_port[0].fail_next(2, "error", code="InitiateWebSession:REGION_DISABLED", message="Region is disabled.")
    for _ in range(2):
        with pytest.raises(PlatformError) as caught:
            await client.initiate(CAMPAIGN, make_request(), "203.0.113.9")
        assert (caught.value.code, caught.value.message) == (
            "InitiateWebSession:REGION_DISABLED",
            "Region is disabled.",
        )
        assert not caught.value.is_concurrency_limit
    assert sim_port[0].live_calls == []


async def test_injected_concurrency_refusal(sim_port: tuple[PlatformSimulator, int], client: PlatformClient) -> None:
    sim_port[0].fail_next(1, "concurrency")
    with pytest.raises(PlatformError) as caught:
        await client.initiate(CAMPAIGN, make_request(), "203.0.113.9")
    assert caught.value.code == CONCURRENCY_LIMIT_CODE
    assert caught.value.is_concurrency_limit


async def test_real_concurrency_limit(sim_port: tuple[PlatformSimulator, int], client: PlatformClient) -> None:
    sim, _ = sim_port
    sim.concurrency_limit = 1
    first = await client.initiate(CAMPAIGN, make_request(), "203.0.113.9")
    with pytest.raises(PlatformError) as caught:
        await client.initiate(CAMPAIGN, make_request(), "203.0.113.9")
    assert caught.value.is_concurrency_limit
    assert sim.end_call(first.conversation_session_id, "test")
    await client.initiate(CAMPAIGN, make_request(), "203.0.113.9")


async def test_request_timeout(sim_port: tuple[PlatformSimulator, int]) -> None:
    sim, port = sim_port
    sim.fail_next(1, "timeout")
    platform = PlatformClient(make_settings(port, request=0.3))
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        with pytest.raises(PlatformError) as caught:
            await platform.initiate(CAMPAIGN, make_request(), "203.0.113.9")
    finally:
        platform.close()
    assert loop.time() - started < 3
    assert caught.value.code == PlatformError.TIMEOUT
    assert caught.value.status is None
    assert "did not answer within 0.3 s" in caught.value.message
    assert "RequestTimeoutSeconds" in caught.value.message


async def test_connect_timeout() -> None:
    with port_whose_connect_hangs() as port:
        platform = PlatformClient(make_settings(port, connect=0.3, request=5.0))
        try:
            with pytest.raises(PlatformError) as caught:
                await platform.initiate(CAMPAIGN, make_request(), "203.0.113.9")
        finally:
            platform.close()
    assert caught.value.code == PlatformError.TIMEOUT
    assert "could not connect to the Iqra platform within 0.3 s" in caught.value.message
    assert "ConnectTimeoutSeconds" in caught.value.message


async def test_unreachable() -> None:
    sock, port = bind_unused_port()
    sock.close()
    platform = PlatformClient(make_settings(port))
    try:
        with pytest.raises(PlatformError) as caught:
            await platform.concurrency()
    finally:
        platform.close()
    assert caught.value.code == PlatformError.UNREACHABLE


async def test_concurrency_reads_both_billing_endpoints(
    sim_port: tuple[PlatformSimulator, int], client: PlatformClient
) -> None:
    sim, _ = sim_port
    sim.concurrency_limit = 7
    for _ in range(3):
        await client.initiate(CAMPAIGN, make_request(), "203.0.113.9")
    sim.requests.clear()
    assert await client.concurrency() == PlatformConcurrency(current=3, limit=7)
    captured = sorted((r.method, r.path, r.headers["Authorization"]) for r in sim.requests)
    assert captured == [
        ("GET", "/api/v1/user/billing/featuresactivequantity", f"Token {TOKEN}"),
        ("GET", "/api/v1/user/billing/usage", f"Token {TOKEN}"),
    ]


async def test_concurrency_with_wrong_token(sim_port: tuple[PlatformSimulator, int]) -> None:
    platform = PlatformClient(make_settings(sim_port[1], token="iqra_sk_wrong"))
    try:
        with pytest.raises(PlatformError) as caught:
            await platform.concurrency()
    finally:
        platform.close()
    assert caught.value.code == INVALID_API_KEY_CODE


async def test_token_is_never_logged(
    sim_port: tuple[PlatformSimulator, int], client: PlatformClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    sim, _ = sim_port
    session = await client.initiate(CAMPAIGN, make_request(), "203.0.113.9")
    sim.fail_next(1, "error")
    with pytest.raises(PlatformError):
        await client.initiate(CAMPAIGN, make_request(), "203.0.113.9")
    await client.concurrency()
    platform_records = [r for r in caplog.records if r.name == "gateway.platform.client"]
    assert any(session.conversation_session_id in r.getMessage() for r in platform_records)
    assert any(r.levelno == logging.WARNING for r in platform_records)
    audio_token = session.web_socket_url.rsplit("/", 1)[1]
    for record in caplog.records:
        assert TOKEN not in record.getMessage()
        assert audio_token not in record.getMessage()


async def test_close_keeps_an_injected_client(sim_port: tuple[PlatformSimulator, int]) -> None:
    shared = AsyncHTTPClient(force_instance=True)
    try:
        platform = PlatformClient(make_settings(sim_port[1]), http_client=shared)
        await platform.concurrency()
        platform.close()
        # Still usable: the client did not own it.
        response = await shared.fetch(f"http://127.0.0.1:{sim_port[1]}/_sim/stats")
        assert response.code == 200
    finally:
        shared.close()


# -- malformed answers from a scripted server ------------------------------------------------------


class _Scripted(RequestHandler):
    def initialize(self, script: dict[str, tuple[int, bytes]]) -> None:
        self.script = script

    def _answer(self) -> None:
        status, body = self.script[self.request.path]
        self.set_status(status)
        self.finish(body)

    post = get = _answer


@pytest.fixture
async def scripted() -> AsyncIterator[tuple[dict[str, tuple[int, bytes]], PlatformClient]]:
    script: dict[str, tuple[int, bytes]] = {}
    sock, port = bind_unused_port()
    server = HTTPServer(Application([(r"/.*", _Scripted, {"script": script})]))
    server.add_sockets([sock])
    platform = PlatformClient(make_settings(port))
    yield script, platform
    platform.close()
    server.stop()
    await server.close_all_connections()


INITIATE_PATH = "/api/v1/business/42/websession/initiate"
CONV = "65f0a1b2c3d4e5f6a7b8c9d0"
URL = f"wss://node.example/ws/session/{CONV}/websocket/u/tok"


@pytest.mark.parametrize(
    ("status", "body", "code", "text"),
    [
        (200, b"<html>oops</html>", PlatformError.INVALID_RESPONSE, "not a JSON object"),
        (200, b"[1, 2]", PlatformError.INVALID_RESPONSE, "not a JSON object"),
        (200, b"", PlatformError.INVALID_RESPONSE, "not a JSON object"),
        (200, b'{"data": {}}', PlatformError.INVALID_RESPONSE, "no boolean 'success'"),
        (200, b'{"success": true, "data": null}', PlatformError.INVALID_RESPONSE, "no session data"),
        (200, b'{"success": true, "data": {"sessionId": "w"}}', PlatformError.INVALID_RESPONSE, "sessionWebSocketURL"),
        (
            200,
            b'{"success": true, "data": {"sessionWebSocketURL": "http://x/ws/session/a/b"}}',
            PlatformError.INVALID_RESPONSE,
            "ws://",
        ),
        (
            200,
            b'{"success": true, "data": {"sessionWebSocketURL": "wss://x/other/path"}}',
            PlatformError.INVALID_RESPONSE,
            "conversationSessionId",
        ),
        (200, b'{"success": false, "code": null, "message": null}', None, "refused the request"),
        (502, b"Bad gateway", PlatformError.HTTP_STATUS, "status code 502"),
        (
            503,
            b'{"success": false, "code": "X:MAINTENANCE", "message": "Down for maintenance"}',
            "X:MAINTENANCE",
            "Down for maintenance",
        ),
        (302, b"", PlatformError.HTTP_STATUS, "status code 302"),
    ],
)
async def test_malformed_initiate_answers(
    scripted: tuple[dict[str, tuple[int, bytes]], PlatformClient], status: int, body: bytes, code: str | None, text: str
) -> None:
    script, platform = scripted
    script[INITIATE_PATH] = (status, body)
    with pytest.raises(PlatformError) as caught:
        await platform.initiate(CAMPAIGN, make_request(), "203.0.113.9")
    assert caught.value.code == code
    assert text in caught.value.message
    assert caught.value.status == status


async def test_case_insensitive_answer_keys(scripted: tuple[dict[str, tuple[int, bytes]], PlatformClient]) -> None:
    script, platform = scripted
    answer = {
        "Success": True,
        "Data": {"WebSessionId": "w1", "ConversationSessionId": "c1", "SessionWebSocketUrl": URL},
    }
    script[INITIATE_PATH] = (200, ujson.dumps(answer).encode())
    session = await platform.initiate(CAMPAIGN, make_request(), "203.0.113.9")
    assert session == InitiatedSession(conversation_session_id="c1", web_session_id="w1", web_socket_url=URL)


@pytest.mark.parametrize(
    ("usage", "features", "expected"),
    [
        (
            {"currentUsage": {"Call_Concurrency": 4.0}},
            {"Call_Concurrency": 10.0},
            PlatformConcurrency(current=4, limit=10),
        ),
        ({"currentUsage": {}}, {}, PlatformConcurrency(current=0, limit=0)),
        ({"creditBalance": 3}, {"Other": 1}, PlatformConcurrency(current=0, limit=0)),
    ],
)
async def test_billing_quantities(
    scripted: tuple[dict[str, tuple[int, bytes]], PlatformClient],
    usage: dict,
    features: dict,
    expected: PlatformConcurrency,
) -> None:
    script, platform = scripted
    script["/api/v1/user/billing/usage"] = (200, ujson.dumps({"success": True, "data": usage}).encode())
    script["/api/v1/user/billing/featuresactivequantity"] = (
        200,
        ujson.dumps({"success": True, "data": features}).encode(),
    )
    assert await platform.concurrency() == expected


@pytest.mark.parametrize(
    ("usage_answer", "features_answer", "code"),
    [
        ((500, b""), (200, b'{"success": true, "data": {"Call_Concurrency": 1}}'), PlatformError.HTTP_STATUS),
        (
            (200, b'{"success": true, "data": {"currentUsage": {"Call_Concurrency": "x"}}}'),
            (200, b'{"success": true, "data": {}}'),
            PlatformError.INVALID_RESPONSE,
        ),
        (
            (200, b'{"success": true, "data": {"currentUsage": []}}'),
            (200, b'{"success": true, "data": {}}'),
            PlatformError.INVALID_RESPONSE,
        ),
        (
            (200, b'{"success": true, "data": {}}'),
            (200, b'{"success": false, "code": "Billing:NOT_CLOUD", "message": "n/a"}'),
            "Billing:NOT_CLOUD",
        ),
    ],
)
async def test_billing_failures(
    scripted: tuple[dict[str, tuple[int, bytes]], PlatformClient],
    usage_answer: tuple[int, bytes],
    features_answer: tuple[int, bytes],
    code: str,
) -> None:
    script, platform = scripted
    script["/api/v1/user/billing/usage"] = usage_answer
    script["/api/v1/user/billing/featuresactivequantity"] = features_answer
    with pytest.raises(PlatformError) as caught:
        await platform.concurrency()
    assert caught.value.code == code
