"""The store behind Redis Sentinel: the primary is found through the sentinels, and found again after a failover.

redis-py's Sentinel support does the finding: each connection of a sentinel-managed pool asks the sentinels for
the primary's address when it connects, and when that address has changed the pool drops its idle
connections, so they reconnect to the new primary. A connection still open to a demoted primary gets
``READONLY`` and is closed as a connection error. So after a failover every command reaches the new primary at
its next connect; commands in flight at the switch fail and the caller answers 503 (nothing is retried: the
admission scripts are not idempotent).

The gateway's own pool keeps its tuning here: :class:`SentinelPool` is the waiting pool of
:mod:`gateway.redis.client` on sentinel-managed connections, so :func:`~gateway.redis.client.run_script` takes
its fast EVALSHA path on it too, reconnecting through the sentinels like redis-py's path does. A promoted
replica may not have the scripts cached (``SCRIPT LOAD`` is not replicated); ``run_script`` loads a script again
on ``NOSCRIPT``. The Redis version is checked again on a new primary (it may be another build).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import (
    Sentinel,
    SentinelConnectionPool,
    SentinelManagedConnection,
    SentinelManagedSSLConnection,
)
from redis.backoff import NoBackoff

from gateway.config.redis_sentinel import SentinelTarget, parse_sentinel_url
from gateway.redis.client import (
    CONNECT_TIMEOUT_SECONDS,
    COMMAND_TIMEOUT_SECONDS,
    POOL_WAIT_SECONDS,
    RedisGate,
    _lean,
    _WaitingPool,
)

log = logging.getLogger("gateway.redis.client")


class _Sentinels(Sentinel):
    """redis-py's :class:`Sentinel`, keeping every sentinel in its list when several connections ask at once.

    ``discover_master`` moves the sentinel that answered to the front by swapping it with the first one, by
    the index it had when asked; when other tasks reordered the list during that ``await`` (after a failover
    every connection of the pool asks at the same time), the swap can duplicate one sentinel and drop another,
    which would then never be asked again nor closed. The list is made whole again after each discovery.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._every = tuple(self.sentinels)

    async def discover_master(self, service_name: str) -> Any:
        try:
            return await super().discover_master(service_name)
        finally:
            if len(set(map(id, self.sentinels))) != len(self._every):
                first = self.sentinels[0]
                self.sentinels = [first, *(s for s in self._every if s is not first)]

    async def aclose(self) -> None:
        self.sentinels = list(self._every)
        await super().aclose()


class _ClosesSentinels:
    """Pool mixin: closing the pool also closes the connections to the sentinels it asked (its manager)."""

    sentinel_manager: Sentinel

    async def aclose(self) -> None:
        try:
            await super().aclose()  # type: ignore[misc]
        finally:
            await self.sentinel_manager.aclose()


class SentinelPool(_ClosesSentinels, _WaitingPool, SentinelConnectionPool):
    """The gateway's waiting pool (:class:`gateway.redis.client._WaitingPool`) on the primary Sentinel names.

    When a connection finds the primary moved, the move is logged and the Redis version is checked again, on
    the next connection handed out.
    """

    async def get_master_address(self) -> Any:
        before = self.master_address
        address = await super().get_master_address()
        if before is not None and address != before:
            log.warning("Redis primary of %s moved from %s:%s to %s:%s (a Sentinel failover); connections "
                        "follow it", self.gate.where, *before, *address)
            self.gate.verified = False
        return address


class _BackplanePool(_ClosesSentinels, SentinelConnectionPool):
    """redis-py's sentinel-managed pool, owning its sentinel clients (one per backplane client)."""


def _sentinel(target: SentinelTarget, timeout: float) -> _Sentinels:
    sentinel_kwargs: dict[str, Any] = {"socket_connect_timeout": timeout, "socket_timeout": timeout}
    if target.sentinel_password is not None:
        sentinel_kwargs["password"] = target.sentinel_password
    if target.ssl:
        sentinel_kwargs["ssl"] = True
    return _Sentinels(target.sentinels, sentinel_kwargs=sentinel_kwargs)


def _data_node_kwargs(target: SentinelTarget) -> dict[str, Any]:
    """Login and database on the primary; the connection class (TLS or not) chosen from ``target``."""
    kwargs: dict[str, Any] = {"db": target.db,
                              "connection_class": SentinelManagedSSLConnection if target.ssl else SentinelManagedConnection}
    for name, value in (("username", target.username), ("password", target.password),
                        ("client_name", target.client_name)):
        if value is not None:
            kwargs[name] = value
    return kwargs


def open_sentinel_redis(url: str, *, pool_size: int) -> aioredis.Redis:
    """The store's client on the primary the sentinels of ``url`` (``redis+sentinel://``) name.

    Same pool bounds and timeouts as for a plain Redis (:func:`gateway.redis.client.open_redis`); the
    sentinels are asked with the connect timeout. No connection is made until first use.

    :raises ValueError: if the URL is malformed.
    """
    target = parse_sentinel_url(url)
    kwargs = _data_node_kwargs(target)
    kwargs["connection_class"] = _lean(kwargs["connection_class"])
    pool = SentinelPool(
        service_name=target.service,
        sentinel_manager=_sentinel(target, CONNECT_TIMEOUT_SECONDS),
        max_connections=pool_size,
        timeout=POOL_WAIT_SECONDS,
        socket_connect_timeout=CONNECT_TIMEOUT_SECONDS,
        socket_timeout=COMMAND_TIMEOUT_SECONDS,
        health_check_interval=30,
        **kwargs,
    )
    pool.gate = RedisGate(target.where())
    log.info("shared store: Redis %s", target.where())
    return aioredis.Redis.from_pool(pool)


def backplane_factory(url: str, *, timeout: float) -> Callable[[], aioredis.Redis]:
    """Clients for the SignalR backplane (:class:`signalr.redis.lifetime.RedisHubLifetimeManager`) on the
    primary the sentinels of ``url`` name: its listener's reconnects ask the sentinels again, so after a
    failover it subscribes on the new primary. Same options as the backplane's own clients."""
    target = parse_sentinel_url(url)

    def factory() -> aioredis.Redis:
        pool = _BackplanePool(
            target.service,
            _sentinel(target, timeout),
            retry=Retry(NoBackoff(), 1),
            socket_connect_timeout=timeout,
            socket_timeout=timeout,
            socket_keepalive=True,
            **_data_node_kwargs(target),
        )
        return aioredis.Redis.from_pool(pool)

    return factory
