"""The hub layer: the :class:`~signalr.hubs.hub.Hub` base class and its method table, client proxies,
lifetime managers, each connection's hub session (handshake, receiving, invocations, output,
heartbeat) and :class:`~signalr.hubs.server.HubServer`, the endpoint that ties them together.
"""
