"""signalr.connections: negotiate, the three transports, keep-alive, back-pressure, stateful reconnect."""
