"""The connection layer (ASP.NET's ``Http.Connections``): negotiate, connection ids and tokens, each
connection's bounded inbox and outbox, the registry with its heartbeat, and the framework-neutral
transports (WebSockets, Server-Sent Events, Long Polling). It moves bytes and knows nothing of hubs.
"""
