"""Mounting a hub: its two URL specs, and a listener for programs with no other web surface."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import tornado.web
from tornado.routing import URLSpec

from signalr.hubs.hub import Hub
from signalr.hubs.lifetime import HubLifetimeManager
from signalr.hubs.server import HubServer, UserProvider
from signalr.options import HubOptions
from signalr.tornado.hub_handler import HubHandler
from signalr.tornado.negotiate import NegotiateHandler


def hub_routes(
    path: str,
    hub_class: type[Hub],
    *,
    options: HubOptions | None = None,
    lifetime_manager: HubLifetimeManager | None = None,
    user_provider: UserProvider | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> tuple[list[URLSpec], HubServer]:
    """URL specs for ``{path}/negotiate`` and ``{path}``, plus the :class:`HubServer` behind them.

    Call ``await server.start()`` once the loop runs and ``await server.shutdown()`` on exit.
    """
    server = HubServer(
        hub_class, options=options, lifetime_manager=lifetime_manager, user_provider=user_provider, clock=clock
    )
    path = path.rstrip("/")
    routes = [
        URLSpec(f"{path}/negotiate", NegotiateHandler, {"server": server}),
        URLSpec(path, HubHandler, {"server": server}),
    ]
    return routes, server


def listen(routes: list[Any], port: int, *, address: str = "127.0.0.1") -> Callable[[], None]:
    """Serve ``routes`` (from :func:`hub_routes`, plus any of the caller's) on ``address:port``.

    For programs whose only web surface is a hub (the example): they get a server without importing
    Tornado themselves. Returns a function that stops listening.
    """
    server = tornado.web.Application(routes).listen(port, address=address)
    return server.stop
