"""gateway.redis: the direct script path, the Redis version gate, Redis outages seen over HTTP."""
