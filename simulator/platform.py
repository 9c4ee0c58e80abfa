"""The simulated platform itself, without I/O of its own: calls, the concurrency limit, injected failures.

:class:`PlatformSimulator` decides every answer; :mod:`simulator.api`, :mod:`simulator.control`
and :mod:`simulator.audio` only translate HTTP and WebSocket traffic into its method calls. Its timers end
calls, and :class:`~simulator.webhook.WebhookSender` reports the ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import quote

from simulator.tokens import TOKEN_LIFETIME_SECONDS, TokenError, sign_call_token, verify_call_token
from simulator.calls import CallSocket, CapturedRequest, SimCall
from simulator.contract import (
    CODE_PREFIX,
    CONCURRENCY_LIMIT_CODE,
    ci_get,
    envelope,
    validate_initiate,
)
from simulator.webhook import WebhookSender

log = logging.getLogger("simulator.app")

#: Injectable initiate failures: ``http500`` and ``http400`` answer that status; ``error`` a
#: ``success: false`` envelope; ``concurrency`` the platform's concurrency refusal; ``timeout`` holds the
#: request (creating nothing) for ``hang_seconds``; ``slow`` creates the call, then holds the answer as
#: long (a client that times out never learns of the call); ``hangup`` closes the connection without an
#: answer after reading the request.
FAIL_MODES = ("http500", "http400", "error", "concurrency", "timeout", "slow", "hangup")
SHAPES = ("newer", "public")
MAX_CAPTURED_REQUESTS = 200


class PlatformSimulator:
    """The simulated platform's state and behaviour; the Tornado handlers in front of it are thin.

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
        self._closed = asyncio.Event()
        self._webhooks = WebhookSender()
        self._counters = {"initiated": 0, "refused": 0, "ended": 0}

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
        problem = validate_initiate(body)
        if problem is not None:
            self._counters["refused"] += 1
            return envelope(code=CODE_PREFIX + problem[0], message=problem[1])
        if len(self.live_calls) >= self.concurrency_limit:
            self._counters["refused"] += 1
            return envelope(code=CONCURRENCY_LIMIT_CODE, message="Concurrency limit reached for your plan.")
        audio_in, audio_out = ci_get(body, "AudioInputConfiguration"), ci_get(body, "AudioOutputConfiguration")
        now = self.clock()
        call = SimCall(
            conversation_session_id=secrets.token_hex(12),
            web_session_id=secrets.token_hex(12),
            business_id=business_id,
            web_campaign_id=ci_get(body, "WebCampaignId"),
            region_id=ci_get(body, "RegionId"),
            client_identifier=ci_get(body, "ClientIdentifier"),
            transport_type=ci_get(body, "TransportType"),
            input_sample_rate=ci_get(audio_in, "SampleRate"),
            output_sample_rate=ci_get(audio_out, "SampleRate"),
            output_encoding_type=ci_get(audio_out, "AudioEncodingType"),
            output_bits_per_sample=ci_get(audio_out, "BitsPerSample"),
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
        self, *, session_id: str, transport: str, client_id: str, token: str, socket: CallSocket
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

    def socket_closed(self, call_id: str, socket: CallSocket) -> None:
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
            self._webhooks.start(
                call, url=self.webhook_url, token=self.webhook_token, retry_delays=self.webhook_retry_delays
            )
        return True

    async def drain_webhooks(self) -> None:
        """Wait until every webhook delivery started so far has succeeded or given up."""
        await self._webhooks.drain()

    async def hang(self) -> None:
        """Hold a ``timeout`` or ``slow`` answer until ``hang_seconds`` pass or the simulator closes."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closed.wait(), self.hang_seconds)

    def stats(self) -> dict[str, Any]:
        return {
            **self._counters,
            "webhooksDelivered": self._webhooks.delivered,
            "webhooksFailed": self._webhooks.failed,
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
        await self._webhooks.aclose()
