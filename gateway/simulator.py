"""A small fake of the Iqra platform for the demo and the tests.

It serves what the gateway uses of the real platform (see ``original-middleware.md`` §2):

* ``POST /api/v1/business/{businessId}/websession/initiate`` (``Authorization: Token <key>``), answering
  the ``{success, message, code, data}`` envelope in the newer shape (``webSessionId``,
  ``conversationSessionId``, ``sessionWebSocketURL``) or, switchable, the public one (``sessionId``,
  ``sessionWebSocketURL``);
* the audio WebSocket ``/ws/session/{id}/{websocket|webrtc}/{clientId}/{token}`` (echo plus a greeting
  tone, see :mod:`gateway.simulator_audio`);
* ``GET /api/v1/user/billing/usage`` and ``GET /api/v1/user/billing/featuresactivequantity``;
* when a call ends, the campaign's "conversation ended" action: ``POST webhook_url`` with
  ``{"ConversationSessionId": id}`` and ``X-Api-Token``, retried with backoff;
* a control API under ``/_sim/`` for tests and demos (end a call, inject failures, change the limit,
  switch the answer shape, list calls and captured requests).

Run it alone with ``iqra-gateway simulate-platform`` (see :mod:`gateway.cli`), or mount :func:`simulator_routes`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import ujson
from tornado.httpclient import AsyncHTTPClient, HTTPRequest
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets
from tornado.simple_httpclient import SimpleAsyncHTTPClient
from tornado.web import Application, RequestHandler, url

from gateway.simulator_audio import (
    TOKEN_LIFETIME_SECONDS,
    AudioSocketHandler,
    TokenError,
    sign_call_token,
    verify_call_token,
)

log = logging.getLogger("gateway.simulator")

CODE_PREFIX = "InitiateWebSession:"
CONCURRENCY_LIMIT_CODE = "InitiateWebSession:CONCURRENCY_LIMIT_REACHED"
INVALID_API_KEY_CODE = "ValidateUserAPIAndBusinessWithPermissions:ValidateUserAPIWithPermissions:API_KEY_INVALID"
FAIL_MODES = ("http500", "error", "concurrency", "timeout")
SHAPES = ("newer", "public")
MAX_CAPTURED_REQUESTS = 200


@dataclass(frozen=True, slots=True, kw_only=True)
class CapturedRequest:
    """A request the simulator's platform API received, for tests to check what the client sent."""

    method: str
    path: str
    headers: Mapping[str, str]
    body: bytes


@dataclass(slots=True, kw_only=True)
class SimCall:
    """One simulated conversation; mutable because it lives through initiated → connected → ended."""

    conversation_session_id: str
    web_session_id: str
    business_id: str
    web_campaign_id: str
    region_id: str
    client_identifier: str
    transport_type: int
    input_sample_rate: int
    output_sample_rate: int
    output_encoding_type: int
    output_bits_per_sample: int
    created_at: float
    state: str = "initiated"
    connected_at: float | None = None
    ended_at: float | None = None
    end_reason: str | None = None
    frames_received: int = 0
    bytes_received: int = 0
    frames_sent: int = 0
    bytes_sent: int = 0
    webhook: str = "pending"
    webhook_attempts: int = 0
    socket: AudioSocketHandler | None = field(default=None, repr=False)
    timer: asyncio.TimerHandle | None = field(default=None, repr=False)

    @property
    def live(self) -> bool:
        return self.state != "ended"

    def to_dict(self) -> dict[str, Any]:
        return {
            "conversationSessionId": self.conversation_session_id,
            "webSessionId": self.web_session_id,
            "businessId": self.business_id,
            "webCampaignId": self.web_campaign_id,
            "regionId": self.region_id,
            "clientIdentifier": self.client_identifier,
            "transportType": self.transport_type,
            "state": self.state,
            "createdAt": self.created_at,
            "connectedAt": self.connected_at,
            "endedAt": self.ended_at,
            "endReason": self.end_reason,
            "framesReceived": self.frames_received,
            "bytesReceived": self.bytes_received,
            "framesSent": self.frames_sent,
            "bytesSent": self.bytes_sent,
            "webhook": self.webhook,
            "webhookAttempts": self.webhook_attempts,
        }


def envelope(*, data: Any = None, code: str | None = None, message: str | None = None) -> dict[str, Any]:
    """The platform's ``FunctionReturnResult``, serialized camelCase."""
    return {"success": code is None, "message": message, "code": code, "data": data}


def _ci(body: Mapping[str, Any], name: str) -> Any:
    # The platform binds JSON case-insensitively, so the client's PascalCase must work, and camelCase too.
    lowered = name.lower()
    for key, value in body.items():
        if key.lower() == lowered:
            return value
    return None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class PlatformSimulator:
    """The simulated platform's state and behaviour; the Tornado handlers below are thin.

    :param api_token: the API key the initiate and billing endpoints accept.
    :param webhook_url: where to POST "conversation ended"; ``None`` disables the webhook.
    :param webhook_token: value of the ``X-Api-Token`` header of the webhook.
    :param call_seconds: call length from connect (and how long an unconnected call lives); ``None``
        or ``<= 0`` means calls last until hung up or ended through the control API (unconnected ones until the
        5-minute token expiry).
    :param public_host: ``host:port`` for audio URLs; ``None`` uses the Host the caller used.
    :param concurrency_limit: live calls at which initiate answers ``CONCURRENCY_LIMIT_REACHED``.
    :param clock: wall-clock seconds, for timestamps and token expiry.
    :param webhook_retry_delays: pauses between webhook attempts (one more attempt than entries).
    :param hang_seconds: how long a ``timeout`` failure holds the request before answering.
    """

    def __init__(
        self,
        *,
        api_token: str,
        webhook_url: str | None,
        webhook_token: str,
        call_seconds: float | None = 60.0,
        public_host: str | None = None,
        concurrency_limit: int = 1000,
        clock: Callable[[], float] = time.time,
        webhook_retry_delays: Sequence[float] = (0.5, 1.0, 2.0),
        hang_seconds: float = 60.0,
        token_secret: bytes | None = None,
    ) -> None:
        self.api_token = api_token
        self.webhook_url = webhook_url
        self.webhook_token = webhook_token
        # 0 or less reads as "no limit", so a CLI flag of 0 does not end every call at once.
        self.call_seconds = call_seconds if call_seconds is not None and call_seconds > 0 else None
        self.public_host = public_host
        self.concurrency_limit = concurrency_limit
        self.clock = clock
        self.webhook_retry_delays = tuple(webhook_retry_delays)
        self.hang_seconds = hang_seconds
        self.response_shape = "newer"
        self.calls: dict[str, SimCall] = {}
        self.requests: deque[CapturedRequest] = deque(maxlen=MAX_CAPTURED_REQUESTS)
        self._secret = token_secret or secrets.token_bytes(32)
        self._failures: deque[str] = deque()
        self._failure_code: str | None = None
        self._failure_message: str | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = asyncio.Event()
        self._http: AsyncHTTPClient | None = None
        self._counters = {"initiated": 0, "refused": 0, "ended": 0, "webhooksDelivered": 0, "webhooksFailed": 0}

    # -- platform API -------------------------------------------------------------------------------

    def authorized(self, authorization: str | None) -> bool:
        expected = f"Token {self.api_token}"
        return authorization is not None and secrets.compare_digest(authorization.encode(), expected.encode())

    def capture(self, request: CapturedRequest) -> None:
        self.requests.append(request)

    def take_failure(self) -> str | None:
        """The injected failure mode for this initiate, if any is left."""
        return self._failures.popleft() if self._failures else None

    def fail_next(self, count: int, mode: str, *, code: str | None = None, message: str | None = None) -> None:
        """Make the next ``count`` initiates fail with ``mode`` (one of :data:`FAIL_MODES`)."""
        if mode not in FAIL_MODES:
            raise ValueError(f"mode must be one of {', '.join(FAIL_MODES)}")
        if count < 0:
            raise ValueError("count must be >= 0")
        self._failures = deque([mode] * count)
        self._failure_code = code
        self._failure_message = message

    def failure_envelope(self, mode: str) -> dict[str, Any]:
        if mode == "concurrency":
            return envelope(code=CONCURRENCY_LIMIT_CODE, message="Concurrency limit reached for your plan.")
        return envelope(
            code=self._failure_code or f"{CODE_PREFIX}BACKEND_CALL_PROCESS_FAIL",
            message=self._failure_message or "Simulated platform failure.",
        )

    @property
    def live_calls(self) -> list[SimCall]:
        return [call for call in self.calls.values() if call.live]

    def initiate(self, business_id: str, body: Any, host: str) -> dict[str, Any]:
        """Validate like the platform, admit within the limit, create the call; returns the envelope."""
        problem = self._validate(body)
        if problem is not None:
            self._counters["refused"] += 1
            return envelope(code=CODE_PREFIX + problem[0], message=problem[1])
        if len(self.live_calls) >= self.concurrency_limit:
            self._counters["refused"] += 1
            return envelope(code=CONCURRENCY_LIMIT_CODE, message="Concurrency limit reached for your plan.")
        audio_in, audio_out = _ci(body, "AudioInputConfiguration"), _ci(body, "AudioOutputConfiguration")
        now = self.clock()
        call = SimCall(
            conversation_session_id=secrets.token_hex(12),
            web_session_id=secrets.token_hex(12),
            business_id=business_id,
            web_campaign_id=_ci(body, "WebCampaignId"),
            region_id=_ci(body, "RegionId"),
            client_identifier=_ci(body, "ClientIdentifier"),
            transport_type=_ci(body, "TransportType"),
            input_sample_rate=_ci(audio_in, "SampleRate"),
            output_sample_rate=_ci(audio_out, "SampleRate"),
            output_encoding_type=_ci(audio_out, "AudioEncodingType"),
            output_bits_per_sample=_ci(audio_out, "BitsPerSample"),
            created_at=now,
        )
        self.calls[call.conversation_session_id] = call
        self._counters["initiated"] += 1
        # A call nobody joins ends when the call would have, or when its token can no longer be used.
        waiting = (
            TOKEN_LIFETIME_SECONDS if self.call_seconds is None else min(self.call_seconds, TOKEN_LIFETIME_SECONDS)
        )
        self._schedule_end(call, waiting, "never connected")
        token = sign_call_token(
            self._secret,
            session_id=call.conversation_session_id,
            client_id=call.client_identifier,
            expires_unix=int(now) + TOKEN_LIFETIME_SECONDS,
        )
        kind = "webrtc" if call.transport_type == 1 else "websocket"
        audio_url = (
            f"ws://{self.public_host or host}/ws/session/{call.conversation_session_id}/{kind}/"
            f"{quote(call.client_identifier, safe='')}/{token}"
        )
        log.info("simulator initiated call %s for business %s", call.conversation_session_id, business_id)
        if self.response_shape == "public":
            return envelope(data={"sessionId": call.web_session_id, "sessionWebSocketURL": audio_url})
        return envelope(
            data={
                "webSessionId": call.web_session_id,
                "conversationSessionId": call.conversation_session_id,
                "sessionWebSocketURL": audio_url,
            }
        )

    @staticmethod
    def _validate(body: Any) -> tuple[str, str] | None:
        if not isinstance(body, Mapping):
            return "INVALID_REQUEST", "Request body must be a JSON object."
        if _ci(body, "TransportType") not in (0, 1) or isinstance(_ci(body, "TransportType"), bool):
            return "CONFIG_TRANSPORT_TYPE_INVALID", "Invalid transport type."
        for name, code in (("WebCampaignId", "CAMPAIGN_NOT_FOUND"), ("RegionId", "REGION_NOT_FOUND")):
            if not isinstance(_ci(body, name), str) or not _ci(body, name):
                return code, f"{name} is missing or not found."
        client = _ci(body, "ClientIdentifier")
        if not isinstance(client, str) or not client:
            return "CONFIG_CLIENT_IDENTIFIER_REQUIRED", "Client identifier is required."
        if len(client) > 256:
            return "CONFIG_CLIENT_IDENTIFIER_TOO_LONG", "Client identifier must be at most 256 characters."
        if "/" in client or "\\" in client:
            return "CONFIG_CLIENT_IDENTIFIER_INVALID", "Client identifier must not contain '/' or '\\'."
        for name, code in (("AudioInputConfiguration", "INPUT"), ("AudioOutputConfiguration", "OUTPUT")):
            config = _ci(body, name)
            fields = ("SampleRate", "BitsPerSample", "AudioEncodingType", "AudioEncodingFallbackMode")
            if not isinstance(config, Mapping) or any(_int(_ci(config, f)) is None for f in fields):
                return f"CONFIG_AUDIO_{code}_CONFIGURATION_INVALID", f"{name} is missing or incomplete."
        frame = _int(_ci(_ci(body, "AudioOutputConfiguration"), "FrameDurationMs"))
        if frame is None or not 20 <= frame <= 150:
            return "CONFIG_AUDIO_OUTPUT_CONFIGURATION_FRAME_DURATION_MS_INVALID", "Frame duration must be 20-150 ms."
        for name in ("DynamicVariables", "Metadata"):
            value = _ci(body, name)
            if value is not None and not (
                isinstance(value, Mapping) and all(isinstance(v, str) for v in value.values())
            ):
                return f"CONFIG_{name.upper()}_INVALID", f"{name} must map strings to strings."
        return None

    def billing_usage(self) -> dict[str, Any]:
        return envelope(
            data={
                "creditBalance": 100.0,
                "currentUsage": {"Call_Concurrency": len(self.live_calls)},
                "cycleLastResetAt": None,
            }
        )

    def billing_features(self) -> dict[str, Any]:
        return envelope(data={"Call_Concurrency": self.concurrency_limit})

    # -- audio socket -------------------------------------------------------------------------------

    def attach_socket(
        self, *, session_id: str, transport: str, client_id: str, token: str, socket: AudioSocketHandler
    ) -> SimCall:
        """Admit an audio socket to its call.

        :raises TokenError: when the token or the call does not allow it.
        """
        verify_call_token(self._secret, token, session_id=session_id, client_id=client_id, now=self.clock())
        call = self.calls.get(session_id)
        if call is None or not call.live:
            raise TokenError("SESSION_NOT_FOUND", "Session not found or already ended.")
        if (transport == "webrtc") != (call.transport_type == 1):
            raise TokenError("TRANSPORT_MISMATCH", "Transport does not match the session.")
        if call.socket is not None:
            raise TokenError("SESSION_ALREADY_CONNECTED", "Session already has a client.")
        call.socket = socket
        call.state = "connected"
        call.connected_at = self.clock()
        if self.call_seconds is None:
            self._cancel_timer(call)
        else:
            self._schedule_end(call, self.call_seconds, "max call duration reached")
        log.info("simulator call %s connected", session_id)
        return call

    def count_received(self, call_id: str, size: int) -> None:
        call = self.calls[call_id]
        call.frames_received += 1
        call.bytes_received += size

    def count_sent(self, call_id: str, size: int) -> None:
        call = self.calls[call_id]
        call.frames_sent += 1
        call.bytes_sent += size

    def socket_closed(self, call_id: str, socket: AudioSocketHandler) -> None:
        call = self.calls.get(call_id)
        if call is not None and call.socket is socket:
            call.socket = None
            self.end_call(call_id, "client hung up")

    # -- call end and webhook -----------------------------------------------------------------------

    def _cancel_timer(self, call: SimCall) -> None:
        if call.timer is not None:
            call.timer.cancel()
            call.timer = None

    def _schedule_end(self, call: SimCall, seconds: float, reason: str) -> None:
        self._cancel_timer(call)
        call.timer = asyncio.get_running_loop().call_later(seconds, self.end_call, call.conversation_session_id, reason)

    def end_call(self, call_id: str, reason: str) -> bool:
        """End a live call: close its socket (1000), then send the webhook. ``False`` if not live."""
        call = self.calls.get(call_id)
        if call is None or not call.live:
            return False
        self._cancel_timer(call)
        call.state = "ended"
        call.ended_at = self.clock()
        call.end_reason = reason
        self._counters["ended"] += 1
        socket, call.socket = call.socket, None
        if socket is not None:
            socket.end(reason)
        log.info("simulator call %s ended: %s", call_id, reason)
        if self.webhook_url is None or self._closed.is_set():
            call.webhook = "disabled"
        else:
            task = asyncio.get_running_loop().create_task(self._send_webhook(call))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return True

    async def _send_webhook(self, call: SimCall) -> None:
        assert self.webhook_url is not None
        if self._http is None:
            self._http = SimpleAsyncHTTPClient(force_instance=True)
        body = ujson.dumps({"ConversationSessionId": call.conversation_session_id})
        call.webhook = "sending"
        delays = (*self.webhook_retry_delays, None)
        for delay in delays:
            call.webhook_attempts += 1
            request = HTTPRequest(
                self.webhook_url,
                method="POST",
                body=body,
                headers={"Content-Type": "application/json", "X-Api-Token": self.webhook_token},
                # The platform's custom tools give up after 5 s.
                connect_timeout=5.0,
                request_timeout=5.0,
            )
            try:
                response = await self._http.fetch(request, raise_error=False)
                problem = None if 200 <= response.code < 300 else f"HTTP {response.code}"
            except Exception as exc:
                problem = f"{type(exc).__name__}: {exc}"
            if problem is None:
                call.webhook = "delivered"
                self._counters["webhooksDelivered"] += 1
                log.info(
                    "simulator webhook for %s delivered (attempt %d)",
                    call.conversation_session_id,
                    call.webhook_attempts,
                )
                return
            if delay is None:
                break
            log.warning(
                "simulator webhook for %s failed (%s), retrying in %.1f s", call.conversation_session_id, problem, delay
            )
            await asyncio.sleep(delay)
        call.webhook = "failed"
        self._counters["webhooksFailed"] += 1
        log.error(
            "simulator webhook for %s failed after %d attempts", call.conversation_session_id, call.webhook_attempts
        )

    async def drain_webhooks(self) -> None:
        """Wait until every webhook delivery started so far has succeeded or given up."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def hang(self) -> None:
        """Hold a ``timeout`` failure until ``hang_seconds`` pass or the simulator closes."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closed.wait(), self.hang_seconds)

    def stats(self) -> dict[str, Any]:
        return {
            **self._counters,
            "live": len(self.live_calls),
            "limit": self.concurrency_limit,
            "pendingFailures": len(self._failures),
            "responseShape": self.response_shape,
        }

    async def aclose(self) -> None:
        """Stop timers, release hanging requests, cancel webhook deliveries, close the HTTP client."""
        self._closed.set()
        for call in self.calls.values():
            self._cancel_timer(call)
            socket, call.socket = call.socket, None
            if socket is not None:
                # Detached first, so the close does not count as a hang-up that sends a webhook.
                socket.close(1001, "simulator stopping")
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._http is not None:
            self._http.close()
            self._http = None


# -- Tornado edge ----------------------------------------------------------------------------------


class _SimHandler(RequestHandler):
    def initialize(self, sim: PlatformSimulator) -> None:
        self.sim = sim

    def send_json(self, payload: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish(ujson.dumps(payload, escape_forward_slashes=False))

    def json_body(self) -> Any:
        try:
            return ujson.loads(self.request.body or b"{}")
        except ValueError:
            return None

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        self.send_json({"message": self._reason}, status_code)


class _PlatformHandler(_SimHandler):
    def prepare(self) -> None:
        self.sim.capture(
            CapturedRequest(
                method=self.request.method or "",
                path=self.request.path,
                headers=dict(self.request.headers.get_all()),
                body=self.request.body,
            )
        )

    def check_auth(self) -> bool:
        if self.sim.authorized(self.request.headers.get("Authorization")):
            return True
        self.send_json(envelope(code=INVALID_API_KEY_CODE, message="Invalid API key."))
        return False


class InitiateHandler(_PlatformHandler):
    async def post(self, business_id: str) -> None:
        if not self.check_auth():
            return
        mode = self.sim.take_failure()
        if mode == "http500":
            self.send_json({"title": "Internal Server Error", "status": 500}, 500)
            return
        if mode == "timeout":
            await self.sim.hang()
            if self.request.connection is not None and self.request.connection.stream.closed():  # type: ignore[attr-defined]
                return
            self.send_json(self.sim.failure_envelope("error"))
            return
        if mode is not None:
            self.send_json(self.sim.failure_envelope(mode))
            return
        body = self.json_body()
        if body is None:
            # ASP.NET's model binding rejects unreadable JSON before the controller runs.
            self.send_json({"title": "One or more validation errors occurred.", "status": 400}, 400)
            return
        self.send_json(self.sim.initiate(business_id, body, self.request.host))


class BillingUsageHandler(_PlatformHandler):
    def get(self) -> None:
        if self.check_auth():
            self.send_json(self.sim.billing_usage())


class BillingFeaturesHandler(_PlatformHandler):
    def get(self) -> None:
        if self.check_auth():
            self.send_json(self.sim.billing_features())


class EndCallHandler(_SimHandler):
    def post(self, call_id: str) -> None:
        if call_id not in self.sim.calls:
            self.send_json({"message": f"No call {call_id}."}, 404)
            return
        ended = self.sim.end_call(call_id, "ended by control API")
        self.send_json({"ended": ended, "call": self.sim.calls[call_id].to_dict()})


class FailHandler(_SimHandler):
    def post(self) -> None:
        body = self.json_body()
        count = _ci(body, "count") if isinstance(body, Mapping) else None
        mode = _ci(body, "mode") if isinstance(body, Mapping) else None
        code, message = (_ci(body, "code"), _ci(body, "message")) if isinstance(body, Mapping) else (None, None)
        if _int(count) is None or count < 0 or mode not in FAIL_MODES:
            self.send_json(
                {"message": f'Body must be {{"count": N >= 0, "mode": one of {", ".join(FAIL_MODES)}}}.'}, 400
            )
            return
        if not all(v is None or isinstance(v, str) for v in (code, message)):
            self.send_json({"message": "code and message must be strings."}, 400)
            return
        self.sim.fail_next(count, mode, code=code, message=message)
        self.send_json(self.sim.stats())


class LimitHandler(_SimHandler):
    def post(self) -> None:
        body = self.json_body()
        limit = _ci(body, "limit") if isinstance(body, Mapping) else None
        if _int(limit) is None or limit < 0:
            self.send_json({"message": 'Body must be {"limit": N >= 0}.'}, 400)
            return
        self.sim.concurrency_limit = limit
        self.send_json(self.sim.stats())


class ShapeHandler(_SimHandler):
    def post(self) -> None:
        body = self.json_body()
        shape = _ci(body, "shape") if isinstance(body, Mapping) else None
        if shape not in SHAPES:
            self.send_json({"message": f'Body must be {{"shape": one of {", ".join(SHAPES)}}}.'}, 400)
            return
        self.sim.response_shape = shape
        self.send_json(self.sim.stats())


class CallsHandler(_SimHandler):
    def get(self) -> None:
        every = self.get_query_argument("all", "0") == "1"
        calls = self.sim.calls.values() if every else self.sim.live_calls
        self.send_json({"calls": [call.to_dict() for call in calls]})


class StatsHandler(_SimHandler):
    def get(self) -> None:
        self.send_json(self.sim.stats())


class RequestsHandler(_SimHandler):
    def get(self) -> None:
        captured = [
            {"method": r.method, "path": r.path, "headers": dict(r.headers), "body": r.body.decode("utf-8", "replace")}
            for r in self.sim.requests
        ]
        self.send_json({"requests": captured})


def simulator_routes(sim: PlatformSimulator) -> list[Any]:
    """URLSpecs of the simulator, to mount in any Tornado application."""
    deps = {"sim": sim}
    return [
        url(r"/api/v1/business/([0-9]+)/websession/initiate", InitiateHandler, deps),
        url(r"/api/v1/user/billing/usage", BillingUsageHandler, deps),
        url(r"/api/v1/user/billing/featuresactivequantity", BillingFeaturesHandler, deps),
        url(
            r"/ws/session/(?P<session_id>[^/]+)/(?P<transport>websocket|webrtc)/(?P<client_id>[^/]+)/(?P<token>[^/]+)",
            AudioSocketHandler,
            deps,
        ),
        url(r"/_sim/calls/([^/]+)/end", EndCallHandler, deps),
        url(r"/_sim/calls", CallsHandler, deps),
        url(r"/_sim/fail", FailHandler, deps),
        url(r"/_sim/limit", LimitHandler, deps),
        url(r"/_sim/shape", ShapeHandler, deps),
        url(r"/_sim/stats", StatsHandler, deps),
        url(r"/_sim/requests", RequestsHandler, deps),
    ]


def make_simulator_app(sim: PlatformSimulator) -> Application:
    return Application(simulator_routes(sim))


@dataclass(frozen=True, slots=True, kw_only=True)
class RunningSimulator:
    """A simulator listening on ``port``; ``base_url`` is what ``VoiceAiPlatform.BaseUrl`` should be."""

    sim: PlatformSimulator
    server: HTTPServer
    port: int
    base_url: str

    async def stop(self) -> None:
        self.server.stop()
        await self.sim.aclose()
        await self.server.close_all_connections()


async def serve_simulator(
    *,
    port: int,
    webhook_url: str | None,
    webhook_token: str,
    call_seconds: float | None,
    host: str = "127.0.0.1",
    api_token: str = "iqra_sk_simulator",
    concurrency_limit: int = 1000,
) -> RunningSimulator:
    """Start a simulator on ``host:port`` (port 0 picks a free one) inside the running loop."""
    sockets = bind_sockets(port, host)
    actual_port = sockets[0].getsockname()[1]
    public = f"[{host}]:{actual_port}" if ":" in host else f"{host}:{actual_port}"
    sim = PlatformSimulator(
        api_token=api_token,
        webhook_url=webhook_url,
        webhook_token=webhook_token,
        call_seconds=call_seconds,
        # A wildcard address is no place for a browser to connect to: use the Host it reached us by.
        public_host=None if host in ("", "0.0.0.0", "::") else public,
        concurrency_limit=concurrency_limit,
    )
    server = HTTPServer(make_simulator_app(sim))
    server.add_sockets(sockets)
    log.info("platform simulator listening on http://%s/api/v1/", public)
    return RunningSimulator(sim=sim, server=server, port=actual_port, base_url=f"http://{public}/api/v1/")
