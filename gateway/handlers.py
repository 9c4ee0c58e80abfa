"""Tornado adapters for the REST endpoints: HTTP in, service call, HTTP out.

Everything here is translation. Validation lives in :mod:`gateway.payload`, decisions in
:mod:`gateway.sessions`; handlers only map their results and errors to status codes and JSON bodies.
No traceback ever reaches a client: unexpected errors become a 500 with a generic message and the
details go to the log under the request id.
"""

from __future__ import annotations

import hmac
import logging
import os
import re
from typing import Any

import tornado.web
from redis.exceptions import RedisError
from tornado.httputil import HTTPServerRequest

from gateway import jsonutil
from gateway.admission import EndResult
from gateway.cors import CorsPolicy
from gateway.errors import PayloadError
from gateway.logcontext import current_request_id
from gateway.payload import MAX_BODY_BYTES, parse_session_request
from gateway.sessions import (
    STORE_DOWN_MESSAGE,
    Admitted,
    PlatformUnavailable,
    QueueFull,
    Queued,
    Refused,
    ServiceUnavailable,
    SessionService,
)
from geo.client_ip import TrustedProxies, resolve_client_address

log = logging.getLogger("gateway.access")

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")

BODY_TOO_LARGE_MESSAGE = f"The request body is larger than {MAX_BODY_BYTES // 1024} KiB."
NO_CLIENT_IP_MESSAGE = "Could not determine client IP address."
MISSING_SESSION_ID_MESSAGE = "Invalid or missing ConversationSessionId."
UNKNOWN_SESSION_MESSAGE = "No session found for ConversationSessionId."
BAD_TOKEN_MESSAGE = "Missing or invalid X-Api-Token header."
UNKNOWN_REQUEST_MESSAGE = "No queued request with this uniqueRequestId."
NOT_WAITING_MESSAGE = "The request is no longer waiting in the queue; nothing was changed."
#: The longest request or conversation id the admission store accepts.
MAX_ID_LENGTH = 256


def request_id_of(request: HTTPServerRequest) -> str:
    """The caller's ``X-Request-Id`` when it is sane, else a fresh one (kept on the request)."""
    existing = getattr(request, "_iqra_request_id", None)
    if existing:
        return existing
    supplied = request.headers.get("X-Request-Id", "")
    rid = supplied if _REQUEST_ID.match(supplied) else os.urandom(8).hex()
    request._iqra_request_id = rid  # type: ignore[attr-defined]
    return rid


class JsonHandler(tornado.web.RequestHandler):
    """JSON responses, CORS, request ids, and error bodies a person can act on."""

    cors: CorsPolicy

    def initialize(self, *, cors: CorsPolicy, **deps: Any) -> None:
        self.cors = cors
        for name, value in deps.items():
            setattr(self, name, value)

    def set_default_headers(self) -> None:
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        self.set_header("X-Request-Id", request_id_of(self.request))
        # Tornado clears all headers before an error page (send_error): putting CORS here too keeps a
        # 500 readable by the page that asked. On the very first call initialize() has not run yet.
        if getattr(self, "cors", None) is not None:
            self._apply_cors()

    def prepare(self) -> None:
        # Set for each request before anything else runs: everything the request awaits, and the tasks
        # it starts (a dispatch it triggers), log under its id.
        current_request_id.set(request_id_of(self.request))
        self._apply_cors()

    def _apply_cors(self) -> None:
        origin = self.request.headers.get("Origin")
        if origin:
            self.set_header("Vary", "Origin")
            if self.request.method != "OPTIONS":
                for name, value in self.cors.response_headers(origin).items():
                    self.set_header(name, value)

    def options(self, *args: Any) -> None:
        headers = self.cors.preflight_headers(
            self.request.headers.get("Origin"),
            self.request.headers.get("Access-Control-Request-Method"),
            self.request.headers.get("Access-Control-Request-Headers"),
        )
        for name, value in headers.items():
            self.set_header(name, value)
        self.clear_header("Content-Type")
        self.set_status(204)
        self.finish()

    def send_json(self, status: int, body: Any | None, *, headers: dict[str, str] | None = None) -> None:
        self.set_status(status)
        for name, value in (headers or {}).items():
            self.set_header(name, value)
        if body is None:
            self.clear_header("Content-Type")
            self.finish()
        else:
            self.finish(jsonutil.dumps(body))

    def send_message(self, status: int, message: str, *, headers: dict[str, str] | None = None) -> None:
        self.send_json(status, {"message": message}, headers=headers)

    def request_id_of_path(self, raw_id: str) -> str | None:
        """The request id in a path, lower-cased (ids are UUIDs, case-insensitive); None after answering
        404 when it is longer than any id can be (as for any unknown one)."""
        if len(raw_id) > MAX_ID_LENGTH:
            self.send_message(404, UNKNOWN_REQUEST_MESSAGE)
            return None
        return raw_id.lower()

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        # Tornado's default page includes a traceback in debug mode and HTML otherwise; clients get JSON.
        messages = {
            400: "The request could not be understood.",
            404: "Not found.",
            405: "This method is not allowed here.",
            413: BODY_TOO_LARGE_MESSAGE,
        }
        message = messages.get(status_code, "An unexpected error occurred. Please try again.")
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish(jsonutil.dumps({"message": message}))

    def log_exception(self, typ, value, tb) -> None:  # type: ignore[no-untyped-def]
        if isinstance(value, tornado.web.HTTPError):
            super().log_exception(typ, value, tb)
        else:
            log.error("unhandled error in %s %s [request %s]", self.request.method, self.request.path,
                      request_id_of(self.request), exc_info=(typ, value, tb))


@tornado.web.stream_request_body
class LimitedBodyHandler(JsonHandler):
    """Reads the body itself so that an oversize one is refused with 413 before it is buffered."""

    max_body_bytes = MAX_BODY_BYTES

    def prepare(self) -> None:
        super().prepare()
        self._chunks: list[bytes] = []
        self._size = 0
        self._too_large = False
        if self.request.method in ("POST", "PUT", "PATCH"):
            declared = self.request.headers.get("Content-Length")
            if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
                self._too_large = True
                # Tornado closes the connection after this response because the body was not read.
                self.send_message(413, BODY_TOO_LARGE_MESSAGE)

    def data_received(self, chunk: bytes) -> None:
        if self._too_large:
            return
        self._size += len(chunk)
        if self._size > self.max_body_bytes:
            self._too_large = True
            self._chunks.clear()
            return
        self._chunks.append(chunk)

    @property
    def body(self) -> bytes:
        return b"".join(self._chunks)

    def body_too_large(self) -> bool:
        """True when a chunked body went over the limit (the declared case answered in ``prepare``)."""
        if self._too_large and not self._finished:
            self.send_message(413, BODY_TOO_LARGE_MESSAGE)
        return self._too_large


class SessionRequestHandler(LimitedBodyHandler):
    """``POST /api/session/request``."""

    service: SessionService
    campaigns: Any
    trusted_proxies: TrustedProxies

    async def post(self) -> None:
        if self.body_too_large():
            return
        try:
            request = parse_session_request(self.body, self.campaigns)
        except PayloadError as exc:
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
            self.send_message(400, NO_CLIENT_IP_MESSAGE)
            return
        try:
            outcome = await self.service.request_session(request, client_ip=address.ip)
        except ServiceUnavailable as exc:  # QueueFull included
            status = 503
            self.send_message(status, exc.message, headers={"Retry-After": str(exc.retry_after)})
            if isinstance(exc, QueueFull):
                log.info("queue full; refused request [request %s]", request_id_of(self.request))
            return
        except PlatformUnavailable as exc:
            self.send_message(502, exc.message)
            return
        except Refused as exc:
            self.send_message(exc.status, exc.message, headers=exc.headers)
            return
        if isinstance(outcome, Admitted):
            self.send_json(200, {"webSocketUrl": outcome.web_socket_url}, headers=outcome.headers)
        else:
            assert isinstance(outcome, Queued)
            self.send_json(202, {"status": "queued", "uniqueRequestId": outcome.request_id,
                                 "queuePosition": outcome.position}, headers=outcome.headers)


class SessionStatusHandler(JsonHandler):
    """``GET /api/session/status/{uniqueRequestId}``: polling for clients that cannot use SignalR."""

    service: SessionService

    poll_presence: Any = None  # async (request_id) -> None: a poll counts as the client being present

    async def get(self, raw_id: str) -> None:
        request_id = self.request_id_of_path(raw_id)
        if request_id is None:
            return
        try:
            status = await self.service.status(request_id)
            if status is not None and status.status in ("queued", "dispatching") and self.poll_presence:
                # A client that polls instead of holding a hub connection is still waiting: without
                # this it would be abandoned after Queue.RegisterTimeoutSeconds.
                await self.poll_presence(request_id)
        except ServiceUnavailable as exc:
            self.send_message(503, exc.message, headers={"Retry-After": str(exc.retry_after)})
            return
        except RedisError:
            self.send_message(503, STORE_DOWN_MESSAGE, headers={"Retry-After": "5"})
            return
        if status is None:
            self.send_message(404, UNKNOWN_REQUEST_MESSAGE)
            return
        # "dispatching" is an internal state: to the client it is still waiting, at the front.
        public = "queued" if status.status == "dispatching" else status.status
        position = (status.position or 1) if public == "queued" else None
        body: dict[str, Any] = {"status": public, "queuePosition": position}
        if status.web_socket_url:
            body["webSocketUrl"] = status.web_socket_url
        if status.message:
            body["message"] = status.message
        self.send_json(200, body)


class _LeaveQueueHandler(JsonHandler):
    """Leaving the queue over plain HTTP, for a client without a live hub connection.

    The hub's ``Leave`` needs a hub connection; a page that is closing, or that has none yet, has only
    HTTP. The id is a random UUID that only its client was told, so knowing it is the permission to
    give the place up.
    """

    service: SessionService

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
            self.send_message(503, exc.message, headers={"Retry-After": str(exc.retry_after)})
            return
        if status is None:
            self.send_message(404, UNKNOWN_REQUEST_MESSAGE)
            return
        # Served, failed or already gone: a conflict with the request's state. The status says which; the
        # audio URL of a ready one is left out, since a client that leaves has no use for it.
        public = "queued" if status.status == "dispatching" else status.status
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


class SessionEndedHandler(LimitedBodyHandler):
    """``POST /api/webhook/session-ended``: the platform's end-of-call callback."""

    service: SessionService
    webhook_token: str

    async def post(self) -> None:
        if self.body_too_large():
            return
        supplied = self.request.headers.get("X-Api-Token", "")
        # An empty setting refuses everyone, as the original does; compare in constant time.
        if not self.webhook_token or not hmac.compare_digest(supplied.encode(), self.webhook_token.encode()):
            self.send_message(401, BAD_TOKEN_MESSAGE)
            return
        session_id = _conversation_session_id(self.body)
        if not session_id:
            self.send_message(400, MISSING_SESSION_ID_MESSAGE)
            return
        if len(session_id) > MAX_ID_LENGTH:  # longer than any id the store accepts: never seen
            self.send_message(400, UNKNOWN_SESSION_MESSAGE)
            return
        try:
            result = await self.service.end_session(session_id)
        except ServiceUnavailable as exc:
            self.send_message(503, exc.message, headers={"Retry-After": str(exc.retry_after)})
            return
        if result is EndResult.UNKNOWN:
            self.send_message(400, UNKNOWN_SESSION_MESSAGE)
            return
        self.send_json(200, None)


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


class NotFoundHandler(JsonHandler):
    """JSON 404 for every unknown path."""

    def prepare(self) -> None:
        super().prepare()
        if self.request.method != "OPTIONS":
            self.send_message(404, "Not found.")
