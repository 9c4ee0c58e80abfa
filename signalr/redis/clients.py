"""The backplane's Redis clients: how they are made by default, and how their URL may be logged."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlsplit, urlunsplit

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

#: Builds one client; the lifetime manager calls it twice (publishing, and the pub/sub connection).
RedisFactory = Callable[[], Redis]


def without_credentials(url: str) -> str:
    """``url`` as it may be logged: a password (or user name) in it is left out."""
    parts = urlsplit(url)
    if parts.password is None and parts.username is None:
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port is not None else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def default_factory(redis_url: str, timeout: float) -> RedisFactory:
    def factory() -> Redis:
        # One quick retry rides over a connection the server closed while idle; anything longer is
        # the listener's job (capped backoff), and callers of publish must never wait seconds on it.
        return Redis.from_url(
            redis_url,
            retry=Retry(NoBackoff(), 1),
            socket_connect_timeout=timeout,
            socket_timeout=timeout,
            socket_keepalive=True,
        )

    return factory
