"""The admin API's routes: ``/api/admin/...``, behind ``Admin.ApiToken``.

Without a token configured the routes are not mounted at all, so the API answers 404 like any unknown
path and costs nothing. With one, every call must send ``Authorization: Bearer <token>`` (compared in
constant time); a wrong one is 401 and logged with the caller's address. The routes send no CORS headers:
the dashboard is served by the gateway itself, and no other site's page has any business here.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import tornado.web
from redis.exceptions import RedisError

from gateway.admin.service import AdminService, AdminView, RemoveResult
from gateway.admission.control import Controls, Operator
from gateway.admission.snapshot import MAX_SNAPSHOT_LIMIT
from gateway.admission.types import EndResult
from gateway.http.base import JsonHandler, LimitedBodyHandler
from gateway.http.bearer import bearer_matches
from gateway.http.cors import CorsPolicy
from gateway.model import jsonutil
from gateway.queue.answers import STORE_DOWN_MESSAGE, ServiceUnavailable
from geo.client_ip import TrustedProxies, resolve_client_address

log = logging.getLogger("gateway.admin")

ADMIN_PREFIX = "/api/admin"
TOKEN_MESSAGE = "Missing or invalid admin token: send the header \"Authorization: Bearer <Admin.ApiToken>\"."
#: Highest cap an operator may set (the platform-learned cap's "unknown" value is far above any real one).
MAX_CAP = 100_000
CAP_MESSAGE = ('Send a JSON object {"maxConcurrentSessions": N} with N a whole number from 0 to '
               f'{MAX_CAP}, or {{"maxConcurrentSessions": null}} to return to the configured cap.')
LIMIT_MESSAGE = f"limit must be a whole number from 0 to {MAX_SNAPSHOT_LIMIT}."
UNKNOWN_SESSION_MESSAGE = "No session with this conversationSessionId is known."
UNKNOWN_REQUEST_MESSAGE = "No request with this uniqueRequestId is known."
NOT_WAITING_MESSAGE = "This request is no longer waiting: it was served, failed or expired."
DEFAULT_LIMIT = 50
#: The admin API's bodies are one small object.
MAX_ADMIN_BODY_BYTES = 1024
_OPERATOR_NAME = re.compile(r"[^\w .@-]")


def _operator_name(header: str) -> str:
    """The ``X-Operator`` header, reduced to a short name safe to log."""
    return _OPERATOR_NAME.sub("", header)[:64].strip()


class AdminHandler(JsonHandler):
    """Checks the token before anything else; answers 503 when the store does not."""

    admin: AdminService
    token: str
    trusted_proxies: TrustedProxies
    on_store_error: Any  # () -> None: counts the failure (iqra_gateway_redis_errors_total{component="admin"})

    def prepare(self) -> None:
        super().prepare()
        if self._finished:
            return
        if not bearer_matches(self.request.headers.get("Authorization", ""), self.token):
            log.warning("admin: refused a call to %s %s from %s: wrong or missing token", self.request.method,
                        self.request.path, self.request.remote_ip)
            self.send_message(401, TOKEN_MESSAGE, headers={"WWW-Authenticate": 'Bearer realm="admin"'})

    @property
    def operator(self) -> Operator:
        """Who makes this change, for the log and the audit trail: the caller's address (behind trusted
        proxies, the one they report) and the name it gives in ``X-Operator``."""
        proxies = self.trusted_proxies
        forwarded = self.request.headers.get_list("X-Forwarded-For") if proxies.enabled else ()
        address = resolve_client_address(self.request.remote_ip or "", forwarded, (), proxies)
        return Operator(ip=address.ip or self.request.remote_ip or "",
                        name=_operator_name(self.request.headers.get("X-Operator", "")))

    def store_down(self, exc: Exception) -> None:
        self.on_store_error()
        log.warning("admin: %s %s: the store did not answer: %s", self.request.method, self.request.path, exc)
        message, retry = ((exc.message, exc.retry_after) if isinstance(exc, ServiceUnavailable)
                          else (STORE_DOWN_MESSAGE, 5))
        self.send_message(503, message, headers={"Retry-After": str(retry)})


def _view_json(view: AdminView) -> dict[str, Any]:
    snapshot = view.snapshot
    return {
        "time": snapshot.time,
        "queueLength": snapshot.queued,
        "paused": snapshot.controls.paused,
        "cap": {"maxConcurrentSessions": view.cap.sessions, "source": view.cap.source.value},
        "sessions": {"active": snapshot.active, "pending": snapshot.pending},
        "entries": [{"uniqueRequestId": e.request_id, "position": e.position, "ageSeconds": e.age_seconds,
                     "campaignId": e.campaign, "regionId": e.region, "registered": e.registered,
                     "dispatching": e.dispatching} for e in snapshot.entries],
        "activeSessions": [{"conversationSessionId": s.conversation_id, "campaignId": s.campaign,
                            "ageSeconds": s.age_seconds} for s in snapshot.sessions],
        "recentChanges": view.recent_changes,
    }


class QueueSnapshotHandler(AdminHandler):
    """``GET /api/admin/queue[?limit=N]``: the whole deployment, plus the totals the dashboard charts."""

    totals: Any  # () -> dict, :func:`gateway.metrics.totals.dashboard_totals` of this process's registry

    async def get(self) -> None:
        raw = self.get_query_argument("limit", str(DEFAULT_LIMIT))
        if not raw.isdigit() or not 0 <= int(raw) <= MAX_SNAPSHOT_LIMIT:
            self.send_message(400, LIMIT_MESSAGE)
            return
        try:
            view = await self.admin.view(int(raw))
        except RedisError as exc:
            self.store_down(exc)
            return
        self.set_header("Cache-Control", "no-store")
        self.send_json(200, {**_view_json(view), "totals": self.totals()})


def _paused_json(controls: Controls) -> dict[str, bool]:
    return {"paused": controls.paused}


class DispatchHandler(AdminHandler):
    """``POST /api/admin/dispatch/pause`` and ``/resume`` (``pause`` says which)."""

    pause: bool

    async def post(self) -> None:
        change = self.admin.pause if self.pause else self.admin.resume
        try:
            self.send_json(200, _paused_json(await change(self.operator)))
        except RedisError as exc:
            self.store_down(exc)


class CapacityHandler(LimitedBodyHandler, AdminHandler):
    """``PUT /api/admin/capacity`` ``{"maxConcurrentSessions": N | null}``."""

    max_body_bytes = MAX_ADMIN_BODY_BYTES

    async def put(self) -> None:
        if self.body_too_large():
            return
        cap = _cap_of(self.body)
        if cap is False:
            self.send_message(400, CAP_MESSAGE)
            return
        try:
            reading = await self.admin.set_cap(cap, self.operator)
        except RedisError as exc:
            self.store_down(exc)
            return
        self.send_json(200, {"maxConcurrentSessions": reading.sessions, "source": reading.source.value})


def _cap_of(body: bytes) -> int | None | bool:
    """The cap in a body, ``None`` for null, or ``False`` when the body is not what the route takes."""
    try:
        data = jsonutil.loads(body) if body else None
    except ValueError:
        return False
    if not isinstance(data, dict) or set(data) != {"maxConcurrentSessions"}:
        return False
    cap = data["maxConcurrentSessions"]
    if cap is None:
        return None
    if isinstance(cap, bool) or not isinstance(cap, int) or not 0 <= cap <= MAX_CAP:
        return False
    return cap


class EndSessionHandler(AdminHandler):
    """``POST /api/admin/sessions/{conversationSessionId}/end``: free a slot whose webhook never came."""

    async def post(self, raw_id: str) -> None:
        conversation_id = self.request_id_of_path(raw_id, name="conversationSessionId",
                                                  unknown=UNKNOWN_SESSION_MESSAGE)
        if conversation_id is None:
            return
        try:
            result = await self.admin.end_session(conversation_id, self.operator)
        except (ServiceUnavailable, RedisError) as exc:
            self.store_down(exc)
            return
        if result is EndResult.UNKNOWN:
            self.send_message(404, UNKNOWN_SESSION_MESSAGE)
            return
        self.send_json(200, {"result": str(result)})


class RemoveRequestHandler(AdminHandler):
    """``DELETE /api/admin/requests/{uniqueRequestId}``: take a waiting request out of the queue."""

    async def delete(self, raw_id: str) -> None:
        request_id = self.request_id_of_path(raw_id, unknown=UNKNOWN_REQUEST_MESSAGE)
        if request_id is None:
            return
        try:
            result = await self.admin.remove_request(request_id, self.operator)
        except (ServiceUnavailable, RedisError) as exc:
            self.store_down(exc)
            return
        if result == RemoveResult.UNKNOWN:
            self.send_message(404, UNKNOWN_REQUEST_MESSAGE)
        elif result == RemoveResult.NOT_WAITING:
            self.send_message(409, NOT_WAITING_MESSAGE)
        else:
            self.send_json(204, None)


def admin_routes(*, admin: AdminService, token: str, totals: Any, trusted_proxies: TrustedProxies,
                 on_store_error: Any = lambda: None) -> list[tornado.web.URLSpec]:
    """The admin API's routes, or none when ``token`` is empty (the API is disabled)."""
    if not token:
        return []
    # No CORS for any origin: only the gateway's own dashboard page calls these.
    common = {"cors": CorsPolicy(()), "admin": admin, "token": token, "trusted_proxies": trusted_proxies,
              "on_store_error": on_store_error}
    return [
        tornado.web.url(ADMIN_PREFIX + r"/queue", QueueSnapshotHandler, dict(common, totals=totals)),
        tornado.web.url(ADMIN_PREFIX + r"/dispatch/pause", DispatchHandler, dict(common, pause=True)),
        tornado.web.url(ADMIN_PREFIX + r"/dispatch/resume", DispatchHandler, dict(common, pause=False)),
        tornado.web.url(ADMIN_PREFIX + r"/capacity", CapacityHandler, common),
        tornado.web.url(ADMIN_PREFIX + r"/sessions/([^/]+)/end", EndSessionHandler, common),
        tornado.web.url(ADMIN_PREFIX + r"/requests/([^/]+)", RemoveRequestHandler, common),
    ]
