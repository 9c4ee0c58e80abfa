"""Tornado adapter: the only package of :mod:`signalr` that imports Tornado.

It turns Tornado requests into calls on the framework-neutral layers (negotiate, connection
manager, transports) and maps outcomes to the status codes of the reference §1::

    routes, server = hub_routes("/chat", ChatHub, options=HubOptions(allowed_origins=(...)))
    app = tornado.web.Application(routes)
    await server.start()
    ...
    await server.shutdown()   # Close with allowReconnect to every client

Modules: :mod:`.routes` (mounting), :mod:`.base` (CORS, query, 401), :mod:`.negotiate`,
:mod:`.hub_handler` (the three transports, POST and DELETE), :mod:`.ws_reader` and
:mod:`.ws_writer` (WebSocket frames on the hot path), :mod:`.flow` (outgoing byte limit and
stall timeout).
"""

from signalr.hubs.server import HubServer, UserProvider
from signalr.tornado.hub_handler import HubHandler
from signalr.tornado.negotiate import NegotiateHandler
from signalr.tornado.routes import hub_routes, listen
# Kept under its old name for tests that build client frames with it.
from signalr.tornado.ws_writer import TEXT_FIN as _TEXT_FIN  # noqa: F401

__all__ = ["HubHandler", "HubServer", "NegotiateHandler", "UserProvider", "hub_routes", "listen"]
