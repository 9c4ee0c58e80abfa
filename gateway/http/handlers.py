"""Tornado adapters for the REST endpoints: HTTP in, service call, HTTP out.

Everything here is translation. Validation lives in :mod:`gateway.model.request`, decisions in
:mod:`gateway.queue.service`; handlers only map their results and errors to status codes and JSON bodies.
No traceback ever reaches a client: unexpected errors become a 500 with a generic message and the
details go to the log under the request id.
"""

from __future__ import annotations

import hmac
import logging
from enum import StrEnum
from typing import Any, Protocol

from redis.exceptions import RedisError

from gateway.model import jsonutil
from gateway.admission.store import EndResult
from gateway.admission.types import RequestState
from gateway.model.errors import PayloadError
from gateway.http.base import (
    MAX_ID_LENGTH,
    ORIGIN_NOT_ALLOWED_MESSAGE,
    UNKNOWN_REQUEST_MESSAGE,
    JsonHandler,
    LimitedBodyHandler,
    request_id_of,
)
from gateway.model.request import parse_session_request
from gateway.queue.answers import Admitted, PlatformUnavailable, QueueFull, Queued, Refused, STORE_DOWN_MESSAGE, ServiceUnavailable
from gateway.queue.service import SessionService
from gateway.model.text import is_sendable, unsendable_message
from geo.client_ip import TrustedProxies, resolve_client_address

log = logging.getLogger("gateway.access")

NO_CLIENT_IP_MESSAGE = "Could not determine client IP address."
MISSING_SESSION_ID_MESSAGE = "Invalid or missing ConversationSessionId."
UNKNOWN_SESSION_MESSAGE = "No session found for ConversationSessionId."
BAD_TOKEN_MESSAGE = "Missing or invalid X-Api-Token header."
NOT_WAITING_MESSAGE = "The request is no longer waiting in the queue; nothing was changed."
NOT_JSON_MESSAGE = 'Send the session request as JSON, with the header "Content-Type: application/json".'


class SessionOutcome(StrEnum):
    """How a session request ended, as the metrics count it."""

    ADMITTED = "admitted"
    QUEUED = "queued"
    INVALID = "invalid"  # 400, 413, 415
    BLOCKED = "blocked"  # 403: IP security or the page's origin
    RATE_LIMITED = "rate_limited"  # 429
    QUEUE_FULL = "queue_full"  # 503
    STORE_UNAVAILABLE = "store_unavailable"  # 503
    PLATFORM_FAILURE = "platform_failure"  # 502
    ERROR = "error"  # 500: a bug


class WebhookResult(StrEnum):
    """How a session-ended webhook ended, as the metrics count it."""

    RELEASED = "released"
    ALREADY_ENDED = "already_ended"
    UNKNOWN_SESSION = "unknown_session"
    UNAUTHORIZED = "unauthorized"
    INVALID = "invalid"
    STORE_UNAVAILABLE = "store_unavailable"
    ERROR = "error"


class RequestObserver(Protocol):
    """What the handlers tell the metrics (:class:`gateway.metrics.registry.GatewayMetrics`)."""

    def session_request(self, outcome: str, detail: str | None, seconds: float) -> None:
        """A session request was answered; ``detail`` is the refusal text of a block or a rate limit."""

    def webhook(self, result: str) -> None: ...

    def store_error(self, component: str) -> None: ...


class _Observed(JsonHandler):
    """A handler whose answers the metrics count (when an observer is wired)."""

    observer: RequestObserver | None = None

    def store_unavailable(self, exc: ServiceUnavailable | None = None) -> None:
        """Answer 503 because the store did not answer (``exc`` carries the message and the wait)."""
        if self.observer is not None:
            self.observer.store_error("http")
        message, retry_after = (exc.message, exc.retry_after) if exc is not None else (STORE_DOWN_MESSAGE, 5)
        self.send_message(503, message, headers={"Retry-After": str(retry_after)})


class SessionRequestHandler(LimitedBodyHandler, _Observed):
    """``POST /api/session/request``."""

    service: SessionService
    campaigns: Any
    trusted_proxies: TrustedProxies
    origin_guarded = True
    #: How the request ended and the refusal text, when the handler decided it (see :meth:`on_finish`).
    _outcome: tuple[SessionOutcome, str | None] | None = None

    def on_finish(self) -> None:
        if self.observer is None or self.request.method != "POST":
            return
        # Refusals made before post() (the origin, the content type, the body size) and Tornado's own
        # errors are known by their status only.
        outcome = self._outcome or _outcome_of_status(self.get_status())
        self.observer.session_request(outcome[0], outcome[1], self.request.request_time())

    def check_request_head(self) -> None:
        # Only JSON: a foreign page's "simple" cross-site request (form or text/plain, sent without a
        # preflight) never reaches the service, even from a browser that sends no Origin.
        if self.request.method == "POST" and not _is_json(self.request.headers.get("Content-Type", "")):
            self.send_message(415, NOT_JSON_MESSAGE)

    async def post(self) -> None:
        if self.body_too_large():
            return
        try:
            request = parse_session_request(self.body, self.campaigns)
        except PayloadError as exc:
            self._outcome = _INVALID
            self.send_message(400, exc.message)
            return
        proxies = self.trusted_proxies
        headers = self.request.headers
        # Forwarded headers only count when proxies are configured; without any they are not even read.
        address = resolve_client_address(
            self.request.remote_ip or "",
            headers.get_list("X-Forwarded-For") if proxies.enabled else (),
            headers.get_list("X-Forwarded-Proto") if proxies.enabled else (),
            proxies,
        )
        if not address.ip:
            self._outcome = _INVALID
            self.send_message(400, NO_CLIENT_IP_MESSAGE)
            return
        try:
            outcome = await self.service.request_session(request, client_ip=address.ip)
        except QueueFull as exc:
            self._outcome = _QUEUE_FULL
            self.send_message(503, exc.message, headers={"Retry-After": str(exc.retry_after)})
            log.info("queue full; refused request [request %s]", request_id_of(self.request))
            return
        except ServiceUnavailable as exc:
            self._outcome = _STORE_UNAVAILABLE
            self.store_unavailable(exc)
            return
        except PlatformUnavailable as exc:
            self._outcome = _PLATFORM_FAILURE
            self.send_message(502, exc.message)
            return
        except Refused as exc:
            kind = SessionOutcome.BLOCKED if exc.status == 403 else SessionOutcome.RATE_LIMITED
            self._outcome = (kind, exc.message)
            self.send_message(exc.status, exc.message, headers=exc.headers)
            return
        if isinstance(outcome, Admitted):
            self._outcome = _ADMITTED
            self.send_json(200, {"webSocketUrl": outcome.web_socket_url}, headers=outcome.headers)
        else:
            assert isinstance(outcome, Queued)
            self._outcome = _QUEUED
            self.send_json(202, {"status": "queued", "uniqueRequestId": outcome.request_id,
                                 "queuePosition": outcome.position}, headers=outcome.headers)


class SessionStatusHandler(_Observed):
    """``GET /api/session/status/{uniqueRequestId}``: polling for clients that cannot use SignalR."""

    service: SessionService
    path_argument = "uniqueRequestId"

    #: async (request_id) -> :class:`gateway.live.presence.Registration`: the status, with the poll of a waiting
    #: request counted as its client being present (:meth:`PresenceStore.register`), in one round trip.
    poll_presence: Any = None

    async def get(self, raw_id: str) -> None:
        request_id = self.request_id_of_path(raw_id)
        if request_id is None:
            return
        try:
            if self.poll_presence is not None:
                # A client that polls instead of holding a hub connection is still waiting: without
                # this it would be abandoned after Queue.RegisterTimeoutSeconds.
                status = (await self.poll_presence(request_id)).status
            else:
                status = await self.service.status(request_id)
        except ServiceUnavailable as exc:
            self.store_unavailable(exc)
            return
        except RedisError:
            self.store_unavailable()
            return
        if status is None:
            self.send_message(404, UNKNOWN_REQUEST_MESSAGE)
            return
        public = status.status.public  # "dispatching" is internal: to the client it is still waiting, first
        position = (status.position or 1) if public is RequestState.QUEUED else None
        body: dict[str, Any] = {"status": public, "queuePosition": position}
        if status.web_socket_url:
            body["webSocketUrl"] = status.web_socket_url
        if status.message:
            body["message"] = status.message
        self.send_json(200, body)


class _LeaveQueueHandler(LimitedBodyHandler, _Observed):
    """Leaving the queue over plain HTTP, for a client without a live hub connection.

    The hub's ``Leave`` needs a hub connection; a page that is closing, or that has none yet, has only
    HTTP. The id is a random UUID that only its client was told, so knowing it is the permission to
    give the place up. From a browser, only an allowed origin may (a beacon from the widget's page is).
    Any body is read (up to the usual limit) and ignored.
    """

    service: SessionService
    origin_guarded = True
    path_argument = "uniqueRequestId"

    async def _leave(self, raw_id: str) -> None:
        request_id = self.request_id_of_path(raw_id)
        if request_id is None:
            return
        try:
            if await self.service.leave(request_id, reason="left"):
                self.send_json(204, None)
                return
            # Not removed: tell an id never seen (or forgotten) from one that is past waiting.
            status = await self.service.status(request_id)
        except ServiceUnavailable as exc:
            self.store_unavailable(exc)
            return
        if status is None:
            self.send_message(404, UNKNOWN_REQUEST_MESSAGE)
            return
        # Served, failed or already gone: a conflict with the request's state. The status says which; the
        # audio URL of a ready one is left out, since a client that leaves has no use for it.
        public = status.status.public
        self.send_json(409, {"status": public, "message": NOT_WAITING_MESSAGE})


class SessionLeaveHandler(_LeaveQueueHandler):
    """``POST /api/session/leave/{uniqueRequestId}``: the form ``navigator.sendBeacon`` can send (POST
    only, from a page being closed); any body it carries is ignored."""

    async def post(self, request_id: str) -> None:
        await self._leave(request_id)


class SessionRequestDeleteHandler(_LeaveQueueHandler):
    """``DELETE /api/session/request/{uniqueRequestId}``: the same for clients that can send DELETE."""

    async def delete(self, request_id: str) -> None:
        await self._leave(request_id)


class SessionEndedHandler(LimitedBodyHandler, _Observed):
    """``POST /api/webhook/session-ended``: the platform's end-of-call callback."""

    service: SessionService
    webhook_token: str
    _result: WebhookResult | None = None

    def on_finish(self) -> None:
        if self.observer is not None and self.request.method == "POST":
            self.observer.webhook(self._result or _webhook_result_of_status(self.get_status()))

    async def post(self) -> None:
        if self.body_too_large():
            return
        supplied = self.request.headers.get("X-Api-Token", "")
        # An empty setting refuses everyone, as the original does; compare in constant time.
        if not self.webhook_token or not hmac.compare_digest(supplied.encode(), self.webhook_token.encode()):
            self.send_message(401, BAD_TOKEN_MESSAGE)
            return
        self._result = WebhookResult.UNKNOWN_SESSION
        session_id = _conversation_session_id(self.body)
        if not session_id:
            self._result = WebhookResult.INVALID
            self.send_message(400, MISSING_SESSION_ID_MESSAGE)
            return
        if not is_sendable(session_id):  # "\ud800" in JSON: no store or platform call could carry it
            self._result = WebhookResult.INVALID
            self.send_message(400, unsendable_message("ConversationSessionId"))
            return
        if len(session_id) > MAX_ID_LENGTH:  # longer than any id the store accepts: never seen
            self.send_message(400, UNKNOWN_SESSION_MESSAGE)
            return
        try:
            result = await self.service.end_session(session_id)
        except ServiceUnavailable as exc:
            self._result = WebhookResult.STORE_UNAVAILABLE
            self.store_unavailable(exc)
            return
        if result is EndResult.UNKNOWN:
            self.send_message(400, UNKNOWN_SESSION_MESSAGE)
            return
        self._result = WebhookResult.RELEASED if result is EndResult.RELEASED else WebhookResult.ALREADY_ENDED
        self.send_json(200, None)


_ADMITTED = (SessionOutcome.ADMITTED, None)
_QUEUED = (SessionOutcome.QUEUED, None)
_INVALID = (SessionOutcome.INVALID, None)
_QUEUE_FULL = (SessionOutcome.QUEUE_FULL, None)
_STORE_UNAVAILABLE = (SessionOutcome.STORE_UNAVAILABLE, None)
_PLATFORM_FAILURE = (SessionOutcome.PLATFORM_FAILURE, None)


def _outcome_of_status(status: int) -> tuple[SessionOutcome, str | None]:
    if status == 403:  # the only 403 decided before post(): a browser page on a foreign origin
        return SessionOutcome.BLOCKED, ORIGIN_NOT_ALLOWED_MESSAGE
    return (SessionOutcome.ERROR, None) if status >= 500 else _INVALID


def _webhook_result_of_status(status: int) -> WebhookResult:
    if status == 401:
        return WebhookResult.UNAUTHORIZED
    return WebhookResult.ERROR if status >= 500 else WebhookResult.INVALID


def _is_json(content_type: str) -> bool:
    """``application/json``, with or without parameters (``; charset=utf-8``), in any letter case."""
    return content_type.split(";", 1)[0].strip().lower() == "application/json"


def _conversation_session_id(body: bytes) -> str | None:
    """``ConversationSessionId`` from the webhook body, any casing; None when absent or not a string."""
    try:
        data = jsonutil.loads(body) if body else None
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    for key, value in data.items():
        if isinstance(key, str) and key.lower() == "conversationsessionid" and isinstance(value, str):
            return value.strip() or None
    return None


class HealthHandler(JsonHandler):
    """``GET /healthz``: the process is alive and its loop answers."""

    def get(self) -> None:
        self.send_json(200, {"status": "alive"})


class ReadyHandler(JsonHandler):
    """``GET /readyz``: the store answers; a load balancer should route here only then."""

    store: Any

    async def get(self) -> None:
        try:
            await self.store.ping()
        except Exception as exc:  # any failure to reach the store means "not ready"
            log.warning("readiness check failed: %s", exc)
            self.send_json(503, {"status": "unavailable", "message": "The session store is unreachable."},
                           headers={"Retry-After": "5"})
            return
        self.send_json(200, {"status": "ready"})


class ForbiddenOriginHandler(JsonHandler):
    """403 for a request from a browser page on a foreign origin to a route served by another library
    (the SignalR negotiate): the application routes such requests here instead."""

    def prepare(self) -> None:
        super().prepare()
        self.send_message(403, ORIGIN_NOT_ALLOWED_MESSAGE)


class NotFoundHandler(JsonHandler):
    """JSON 404 for every unknown path."""

    def prepare(self) -> None:
        super().prepare()
        if self.request.method != "OPTIONS":
            self.send_message(404, "Not found.")
