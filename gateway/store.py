"""Open the Redis the gateway's shared state lives in: a real server, or an embedded in-process one.

The embedded store is ``fakeredis`` with its Lua engine (lupa), so the admission scripts in
``gateway/lua`` run unchanged. It suits a single gateway process (development, a small deployment):
its state is lost on exit and is not shared with other processes.
"""

from __future__ import annotations

import logging
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis

log = logging.getLogger("gateway.store")

#: Connections to a real Redis per gateway process; one EVALSHA per request keeps each busy briefly.
POOL_SIZE = 64
POOL_WAIT_SECONDS = 5.0
CONNECT_TIMEOUT_SECONDS = 2.0
COMMAND_TIMEOUT_SECONDS = 5.0


def redact_url(url: str) -> str:
    """Return ``url`` with any password replaced by ``***``, for logs.

    :param url: a ``redis://`` style URL.
    """
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, f"{user}:***@{host}", parts.path, parts.query, parts.fragment))


def open_redis(url: str | None) -> aioredis.Redis:
    """Create the client for the shared store; no connection is made until first use.

    :param url: ``redis://``, ``rediss://`` or ``unix://`` URL of a real Redis, or ``None`` for the
        embedded in-process store.
    :raises ValueError: if the URL is malformed.
    :raises RuntimeError: if the embedded store is asked for but its Lua engine is not installed.
    """
    if url:
        # A bounded pool that makes callers wait for a free connection instead of failing with "Too many
        # connections" under a burst; timeouts so that a hung Redis turns into a 503 rather than a hang.
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=POOL_SIZE,
            timeout=POOL_WAIT_SECONDS,
            socket_connect_timeout=CONNECT_TIMEOUT_SECONDS,
            socket_timeout=COMMAND_TIMEOUT_SECONDS,
            health_check_interval=30,
        )
        client = aioredis.Redis.from_pool(pool)  # the client owns the pool: aclose() closes its sockets
        log.info("shared store: Redis at %s", redact_url(url))
        return client
    try:
        import fakeredis
        import lupa  # noqa: F401  (fakeredis needs it to run EVALSHA; fail at start-up, not mid-request)
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise RuntimeError("the embedded store needs fakeredis[lua]; install it or set a Redis URL") from exc
    client = fakeredis.FakeAsyncRedis(
        server=fakeredis.FakeServer(),
        # Same waiting behaviour as the real pool: a burst queues for a connection rather than failing.
        connection_pool_class=aioredis.BlockingConnectionPool,
        max_connections=POOL_SIZE,
        timeout=POOL_WAIT_SECONDS,
    )
    log.info("shared store: EMBEDDED in-process store (fakeredis with Lua); "
             "state is not shared with other processes and is lost on exit")
    return client
