"""gateway.logs: log throttling and request context."""
