"""A pure-Python ASP.NET Core SignalR server (hubs over WebSockets, SSE and Long Polling).

Write a :class:`Hub`, mount it with :func:`signalr.tornado.hub_routes`, and send from outside
hubs through :class:`HubContext`. See ``examples/chat.py`` in the repository for a complete,
commented hub.
"""

from signalr.connections.connection import RequestInfo
from signalr.hubs.clients import ClientProxy, GroupManager, HubCallerClients, HubClients, HubContext
from signalr.hubs.hub import Hub, HubCallerContext, HubError, hub_method
from signalr.options import HttpTransportType, HubOptions
from signalr.options import HttpTransportType as TransportType  # its earlier name, still importable from here

__all__ = [
    "ClientProxy",
    "GroupManager",
    "HttpTransportType",
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
