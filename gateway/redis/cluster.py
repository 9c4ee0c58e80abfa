"""The store on a Redis Cluster: the primary that owns the deployment's slot, found from the seed nodes, and
found again after a failover.

Every name of one deployment carries one hash tag (:data:`gateway.admission.keys.CLUSTER_PREFIX`), so all of
its state lives in one slot, and one primary serves all of it. So the gateway needs no cluster client that
routes each command: it asks the nodes which primary owns that slot (``CLUSTER SLOTS``) and talks to it as to
a plain Redis, through the same waiting pool and lean EVALSHA path (:func:`gateway.redis.client.run_script`).

It follows the owner as the Sentinel support follows the primary (:mod:`gateway.redis.sentinel`): each
connection asks for the owner when it connects, and when the owner has changed the pool drops its idle
connections and checks the Redis version again. A connection still open to a node that no longer owns the
slot gets ``MOVED`` (a demoted primary, a migrated slot), and a node that knows the cluster is broken answers
``CLUSTERDOWN``; both close the connection as a connection error, so the caller answers 503 and the next
connect asks again. Commands in flight at the switch fail; none is retried (the scripts are not idempotent).
A promoted replica may not have the scripts cached; ``run_script`` loads them again on ``NOSCRIPT``.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.connection import Connection, ConnectionPool, SSLConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.crc import key_slot
from redis.exceptions import (
    AskError,
    ClusterDownError,
    MovedError,
    ReadOnlyError,
    RedisError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError

from gateway.config.redis_cluster import ClusterTarget, parse_cluster_url
from gateway.redis.gate import RedisGate, reason_of
from gateway.redis.pool import (
    COMMAND_TIMEOUT_SECONDS,
    CONNECT_TIMEOUT_SECONDS,
    POOL_WAIT_SECONDS,
    _lean,
    _WaitingPool,
)

log = logging.getLogger("gateway.redis.client")

#: Nodes remembered for asking (the seeds first): a cluster is far smaller, and one whose nodes come and go
#: for months must not grow the list without end.
MAX_KNOWN_NODES = 128
#: Replies of a node that does not (or no longer, or not yet) serve the slot for us.
_NOT_THE_OWNER = (MovedError, AskError, ClusterDownError, TryAgainError, ReadOnlyError)


class SlotOwnerUnknown(RedisConnectionError):
    """No node answered with the primary of the slot; a connection error, so callers answer 503."""


class SlotDirectory:
    """Which primary owns one slot, asked of the cluster's nodes.

    The seed nodes come first; the nodes a reply names are tried after them, so the gateway still finds the
    owner when every seed it was given is down. Concurrent questions share one answer: after a failover every
    connection of the pool asks at once.

    :param target: the seed nodes and the login.
    :param slot: the slot of the deployment's hash tag.
    :param timeout: seconds for connecting to, and hearing from, one node.
    """

    def __init__(self, target: ClusterTarget, slot: int, *, timeout: float) -> None:
        self.target = target
        self.slot = slot
        self._timeout = timeout
        self._nodes: list[tuple[str, int]] = list(dict.fromkeys(target.nodes))
        self._asking: asyncio.Future[tuple[str, int]] | None = None

    async def owner(self) -> tuple[str, int]:
        """``(host, port)`` of the primary that owns :attr:`slot`.

        :raises SlotOwnerUnknown: no node answered, or none knows an owner.
        """
        if self._asking is None:
            self._asking = asyncio.ensure_future(self._ask_nodes())
            self._asking.add_done_callback(self._forget)
        return await asyncio.shield(self._asking)

    def _forget(self, future: asyncio.Future[tuple[str, int]]) -> None:
        if self._asking is future:
            self._asking = None
        if not future.cancelled():
            future.exception()  # retrieved: nobody may be left awaiting it

    async def _ask_nodes(self) -> tuple[str, int]:
        failures: list[str] = []
        for node in list(self._nodes):
            try:
                slots = await self._cluster_slots(node)
            except (RedisError, OSError) as exc:
                failures.append(f"{node[0]}:{node[1]} ({reason_of(exc)})")
                continue
            owner = self._learn(node, slots)
            if owner is not None:
                # The node that answered is asked first next time.
                self._nodes.remove(node)
                self._nodes.insert(0, node)
                return owner
            failures.append(f"{node[0]}:{node[1]} (no owner of slot {self.slot})")
        raise SlotOwnerUnknown(f"no node of the Redis Cluster named the owner of slot {self.slot}: "
                               + ", ".join(failures))

    async def _cluster_slots(self, node: tuple[str, int]) -> list[Any]:
        kwargs: dict[str, Any] = {"host": node[0], "port": node[1], "socket_connect_timeout": self._timeout,
                                  "socket_timeout": self._timeout, "retry": Retry(NoBackoff(), 0)}
        for name, value in (("username", self.target.username), ("password", self.target.password)):
            if value is not None:
                kwargs[name] = value
        connection = (SSLConnection if self.target.ssl else Connection)(**kwargs)
        try:
            await connection.connect()
            await connection.send_command("CLUSTER", "SLOTS")
            return await connection.read_response()
        finally:
            await connection.disconnect()

    def _learn(self, asked: tuple[str, int], slots: list[Any]) -> tuple[str, int] | None:
        """The owner of :attr:`slot` in a ``CLUSTER SLOTS`` reply; every node it names is remembered."""
        owner = None
        for start, end, *nodes in slots:
            for node in nodes:
                address = _address(node, asked)
                if address not in self._nodes and len(self._nodes) < MAX_KNOWN_NODES:
                    self._nodes.append(address)
            if int(start) <= self.slot <= int(end) and nodes:
                owner = _address(nodes[0], asked)
        return owner


def _address(node: list[Any], asked: tuple[str, int]) -> tuple[str, int]:
    """``(host, port)`` of a ``CLUSTER SLOTS`` node entry; an unknown endpoint (empty, or ``?``) is the
    address of the node that answered, as Redis documents."""
    host = node[0].decode() if isinstance(node[0], bytes) else str(node[0])
    return (asked[0] if host in ("", "?") else host), int(node[1])


class ClusterManagedConnection(Connection):
    """A connection to whichever primary owns the deployment's slot, asked of its pool on every connect."""

    def __init__(self, **kwargs: Any) -> None:
        self.connection_pool = kwargs.pop("connection_pool")
        super().__init__(**kwargs)

    async def connect_check_health(self, check_health: bool = True, retry_socket_connect: bool = True) -> None:
        if self.is_connected:
            return
        self.host, self.port = await self.connection_pool.get_owner_address()
        await super().connect_check_health(check_health=check_health, retry_socket_connect=retry_socket_connect)

    async def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().read_response(*args, **kwargs)
        except _NOT_THE_OWNER as exc:
            # This node does not serve the slot (any more): the next connect asks the cluster again.
            await self.disconnect()
            raise RedisConnectionError(f"the Redis Cluster node {self.host}:{self.port} does not serve the "
                                       f"gateway's slot now ({exc})") from exc


class ClusterManagedSSLConnection(ClusterManagedConnection, SSLConnection):
    pass


class _FollowsSlotOwner:
    """Pool mixin: connections reach the slot's owner; when it moved, idle connections are dropped."""

    directory: SlotDirectory
    owner_address: tuple[str, int] | None
    connection_kwargs: dict[str, Any]

    def _follow(self, directory: SlotDirectory) -> None:
        self.directory = directory
        self.owner_address = None
        self.connection_kwargs["connection_pool"] = weakref.proxy(self)

    async def get_owner_address(self) -> tuple[str, int]:
        address = await self.directory.owner()
        before, self.owner_address = self.owner_address, address
        if before is not None and address != before:
            self._moved(before, address)
            await self.disconnect(inuse_connections=False)  # type: ignore[attr-defined]
        return address

    def _moved(self, before: tuple[str, int], after: tuple[str, int]) -> None:
        """Called when the owner changed (before idle connections are dropped)."""


class ClusterPool(_FollowsSlotOwner, _WaitingPool):
    """The gateway's waiting pool (:class:`gateway.redis.pool._WaitingPool`) on the slot owner's connections.

    When the owner changes, the move is logged and the Redis version is checked again, on the next
    connection handed out.
    """

    def __init__(self, *, directory: SlotDirectory, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._follow(directory)

    def _moved(self, before: tuple[str, int], after: tuple[str, int]) -> None:
        log.warning("the primary owning the gateway's slot %d of the %s moved from %s:%s to %s:%s (a failover "
                    "or a migration); connections follow it", self.directory.slot, self.gate.where, *before, *after)
        self.gate.verified = False


class _BackplanePool(_FollowsSlotOwner, ConnectionPool):
    """redis-py's pool on the slot owner's connections (one per backplane client)."""

    def __init__(self, *, directory: SlotDirectory, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._follow(directory)


def _node_kwargs(target: ClusterTarget) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"connection_class": ClusterManagedSSLConnection if target.ssl else ClusterManagedConnection}
    for name, value in (("username", target.username), ("password", target.password),
                        ("client_name", target.client_name)):
        if value is not None:
            kwargs[name] = value
    return kwargs


def slot_of(hash_tag: str) -> int:
    """The cluster slot of every name carrying ``hash_tag``."""
    return key_slot(hash_tag.encode())


def open_cluster_redis(url: str, *, hash_tag: str, pool_size: int) -> aioredis.Redis:
    """The store's client on the primary owning ``hash_tag``'s slot, in the cluster of ``url`` (``redis+cluster://``).

    Same pool bounds and timeouts as for a plain Redis (:func:`gateway.redis.client.open_redis`); the nodes are
    asked with the connect timeout. No connection is made until first use.

    :raises ValueError: if the URL is malformed.
    """
    target = parse_cluster_url(url)
    kwargs = _node_kwargs(target)
    kwargs["connection_class"] = _lean(kwargs["connection_class"])
    pool = ClusterPool(
        directory=SlotDirectory(target, slot_of(hash_tag), timeout=CONNECT_TIMEOUT_SECONDS),
        max_connections=pool_size,
        timeout=POOL_WAIT_SECONDS,
        socket_connect_timeout=CONNECT_TIMEOUT_SECONDS,
        socket_timeout=COMMAND_TIMEOUT_SECONDS,
        health_check_interval=30,
        **kwargs,
    )
    pool.gate = RedisGate(target.where())
    log.info("shared store: Redis %s (slot %d, hash tag {%s})", target.where(), pool.directory.slot, hash_tag)
    return aioredis.Redis.from_pool(pool)


def backplane_factory(url: str, *, hash_tag: str, timeout: float) -> Callable[[], aioredis.Redis]:
    """Clients for the SignalR backplane on the primary owning ``hash_tag``'s slot (its sharded channels carry
    the same tag): its listener's reconnects ask the cluster again, so after a failover it subscribes on the
    new owner. Same options as the backplane's own clients."""
    target = parse_cluster_url(url)
    slot = slot_of(hash_tag)

    def factory() -> aioredis.Redis:
        pool = _BackplanePool(
            directory=SlotDirectory(target, slot, timeout=timeout),
            retry=Retry(NoBackoff(), 1),
            socket_connect_timeout=timeout,
            socket_timeout=timeout,
            socket_keepalive=True,
            **_node_kwargs(target),
        )
        return aioredis.Redis.from_pool(pool)

    return factory
