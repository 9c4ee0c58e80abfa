"""A small fake of the Iqra platform for the demo and the tests.

It serves what the gateway uses of the real platform (see ``original-middleware.md`` §2):

* ``POST /api/v1/business/{businessId}/websession/initiate`` (``Authorization: Token <key>``), answering
  the ``{success, message, code, data}`` envelope in the newer shape (``webSessionId``,
  ``conversationSessionId``, ``sessionWebSocketURL``) or, switchable, the public one (``sessionId``,
  ``sessionWebSocketURL``);
* the audio WebSocket ``/ws/session/{id}/{websocket|webrtc}/{clientId}/{token}`` (echo plus a greeting
  tone, see :mod:`simulator.audio`);
* ``GET /api/v1/user/billing/usage`` and ``GET /api/v1/user/billing/featuresactivequantity``;
* when a call ends, the campaign's "conversation ended" action: ``POST webhook_url`` with
  ``{"ConversationSessionId": id}`` and ``X-Api-Token``, retried with backoff;
* a control API under ``/_sim/`` for tests and demos (end a call, inject failures, change the limit,
  switch the answer shape, list calls and captured requests).

Run it alone with ``iqra-gateway simulate-platform`` (see :mod:`gateway.cli.commands`), or mount :func:`simulator_routes`.

This module assembles the pieces and is the one to import from: the state and decisions live in
:mod:`simulator.platform` (records in :mod:`simulator.calls`, the API's envelope, codes and
initiate checks in :mod:`simulator.contract`), the webhook in :mod:`simulator.webhook`, and the
handlers in :mod:`simulator.api`, :mod:`simulator.control` and :mod:`simulator.audio`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets
from tornado.web import Application, url

from simulator.api import BillingFeaturesHandler, BillingUsageHandler, InitiateHandler
from simulator.audio import AudioSocketHandler
from simulator.calls import CapturedRequest, SimCall
from simulator.contract import CODE_PREFIX, CONCURRENCY_LIMIT_CODE, INVALID_API_KEY_CODE, envelope
from simulator.control import (
    CallsHandler,
    EndCallHandler,
    FailHandler,
    LimitHandler,
    RequestsHandler,
    ShapeHandler,
    StatsHandler,
)
from simulator.platform import FAIL_MODES, MAX_CAPTURED_REQUESTS, SHAPES, PlatformSimulator

__all__ = [
    "CODE_PREFIX",
    "CONCURRENCY_LIMIT_CODE",
    "FAIL_MODES",
    "INVALID_API_KEY_CODE",
    "MAX_CAPTURED_REQUESTS",
    "SHAPES",
    "BillingFeaturesHandler",
    "BillingUsageHandler",
    "CallsHandler",
    "CapturedRequest",
    "EndCallHandler",
    "FailHandler",
    "InitiateHandler",
    "LimitHandler",
    "PlatformSimulator",
    "RequestsHandler",
    "RunningSimulator",
    "ShapeHandler",
    "SimCall",
    "StatsHandler",
    "envelope",
    "make_simulator_app",
    "serve_simulator",
    "simulator_routes",
]

log = logging.getLogger("simulator.app")


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
