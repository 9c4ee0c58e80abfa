"""What every hub request shares: query parsing, the request info hubs see, CORS and 401s."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import tornado.web

from signalr.connections.connection import RequestInfo
from signalr.hubs.server import HubServer

_ALLOWED_HEADERS = "x-requested-with, x-signalr-user-agent, authorization, content-type"
_ALLOWED_METHODS = "GET, POST, DELETE, OPTIONS"


def query_arguments(handler: tornado.web.RequestHandler) -> dict[str, str]:
    # ASP.NET matches query keys case-insensitively; unknown keys (``_=``, ``hub=``) are ignored.
    return {k.lower(): v[-1].decode("utf-8", "replace") for k, v in handler.request.query_arguments.items() if v}


def request_info(handler: tornado.web.RequestHandler, query: Mapping[str, str]) -> RequestInfo:
    headers = {k.lower(): v for k, v in handler.request.headers.get_all()}
    token = query.get("access_token")
    authorization = headers.get("authorization", "")
    if token is None and authorization.lower().startswith("bearer "):
        token = authorization[7:].strip()
    return RequestInfo(headers=headers, remote_ip=handler.request.remote_ip, query=dict(query), access_token=token)


class HubRequestMixin(tornado.web.RequestHandler):
    """CORS on every response (errors included), preflights, and no XSRF for hub endpoints."""

    server: HubServer

    def initialize(self, server: HubServer) -> None:  # type: ignore[override]
        self.server = server
        # Tornado applies default headers before initialize() runs; redo them now that we know
        # the allowed origins (error responses call them again via clear()).
        self.set_default_headers()

    def set_default_headers(self) -> None:
        server = getattr(self, "server", None)
        if server is None:
            return
        origin = self.request.headers.get("Origin")
        self.set_header("Vary", "Origin")
        if origin and server.origin_allowed(origin):
            self.set_header("Access-Control-Allow-Origin", origin)
            self.set_header("Access-Control-Allow-Credentials", "true")

    def check_xsrf_cookie(self) -> None:
        """SignalR clients never send XSRF tokens."""

    def check_trusted_origin(self, origin: str) -> bool:
        return self.server.origin_allowed(origin)

    def options(self, *args: Any) -> None:
        origin = self.request.headers.get("Origin")
        if origin and self.server.origin_allowed(origin):
            self.set_header("Access-Control-Allow-Methods", _ALLOWED_METHODS)
            requested = self.request.headers.get("Access-Control-Request-Headers")
            self.set_header("Access-Control-Allow-Headers", requested or _ALLOWED_HEADERS)
            self.set_header("Access-Control-Max-Age", "600")
        self.set_status(204)

    def _text(self, status: int, text: str) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.finish(text)

    async def _user_or_401(self, info: RequestInfo) -> tuple[bool, Any]:
        try:
            return True, await self.server.authenticate(info)
        except PermissionError:
            self._text(401, "Unauthorized")
            return False, None
