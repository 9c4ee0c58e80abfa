"""A pure-Python ASP.NET Core SignalR server (hubs over WebSockets, SSE and Long Polling).

Write a :class:`Hub`, mount it with :func:`signalr.tornado.hub_routes`, and send from outside
hubs through :class:`HubContext`. See :mod:`signalr.example` for a complete, commented hub.
"""

from signalr.clients import ClientProxy, GroupManager, HubCallerClients, HubClients, HubContext
from signalr.connection import RequestInfo
from signalr.hub import Hub, HubCallerContext, HubError, hub_method
from signalr.options import HubOptions, TransportType

__all__ = [
    "ClientProxy",
    "GroupManager",
    "Hub",
    "HubCallerClients",
    "HubCallerContext",
    "HubClients",
    "HubContext",
    "HubError",
    "HubOptions",
    "RequestInfo",
    "TransportType",
    "hub_method",
]
