"""The connection pool of a real Redis: connections that send a command straight out and a pool whose
callers wait their turn (used for a plain Redis and for one found through Sentinel alike).

:mod:`gateway.redis.client` opens clients on it; :mod:`gateway.redis.sentinel` puts it under redis-py's
Sentinel pool. Kept apart from both so that neither has to import the other.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.connection import AbstractConnection, ConnectionPool
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import MaxConnectionsError

from gateway.redis.gate import RedisGate

try:
    import hiredis
except ImportError:  # pragma: no cover - redis[hiredis] is a dependency; stay correct without it
    hiredis = None

#: Connections to a real Redis per gateway process; one EVALSHA per request keeps each busy briefly.
POOL_SIZE = 64
POOL_WAIT_SECONDS = 5.0
CONNECT_TIMEOUT_SECONDS = 2.0
COMMAND_TIMEOUT_SECONDS = 5.0


class _LeanCommands:
    """Connection mixin: the same commands on the wire, for less CPU per command.

    redis-py's asyncio connection packs commands in Python (about 1 µs per argument; an admission
    EVALSHA has 28) and bounds every write with ``asyncio.wait_for``, which on Python 3.11 runs the
    write in a new Task one loop turn later. Here hiredis packs in C, and a write that cannot block is
    made directly: with the transport's buffer empty and the command below its high-water mark, the
    protocol is never paused, so ``drain()`` returns at once and there is nothing for a timeout to
    bound. A write that could wait for Redis to read still gets ``socket_timeout``, and every read
    keeps it, so a hung Redis turns into the same ``TimeoutError`` as before.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        encoder = self.encoder  # type: ignore[attr-defined]
        # hiredis encodes text as strict UTF-8, which is the client's default: otherwise keep redis-py's.
        self._hiredis_packs = (hiredis is not None and encoder.encoding.lower().replace("-", "") == "utf8"
                               and encoder.encoding_errors == "strict")

    def pack_command(self, *args: Any) -> list[bytes]:
        first = args[0] if args else None
        # A multi-word command name ("CONFIG GET") is split by redis-py's packer; leave those to it.
        if self._hiredis_packs and isinstance(first, str) and " " not in first:
            try:
                return [hiredis.pack_command(args)]
            except TypeError:
                pass  # a type hiredis does not take: redis-py's packer accepts it or raises DataError
        return super().pack_command(*args)  # type: ignore[misc]

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        if check_health and self.is_connected:  # type: ignore[attr-defined]
            await self.check_health()  # type: ignore[attr-defined]
            check_health = False
        writer = self._writer  # type: ignore[attr-defined]
        if not (isinstance(command, list) and self.is_connected and writer is not None  # type: ignore[attr-defined]
                and _cannot_block(writer.transport, command)):
            await super().send_packed_command(command, check_health)  # type: ignore[misc]
            return
        try:
            writer.writelines(command)
            await writer.drain()
        except OSError as exc:
            await self.disconnect(nowait=True)  # type: ignore[attr-defined]
            raise RedisConnectionError(f"Error {exc.errno or 'UNKNOWN'} while writing to socket. "
                                       f"{exc.strerror or exc}.") from exc
        except BaseException:
            # Same as redis-py: a write interrupted half-way leaves the connection unusable.
            await self.disconnect(nowait=True)  # type: ignore[attr-defined]
            raise


def _cannot_block(transport: Any, command: list[bytes]) -> bool:
    """True when writing ``command`` cannot pause the transport, so ``drain()`` will not wait."""
    try:
        if transport.get_write_buffer_size():
            return False
        return sum(map(len, command)) <= transport.get_write_buffer_limits()[1]
    except (AttributeError, NotImplementedError):  # a transport without flow-control introspection
        return False


_LEAN_CLASSES: dict[type, type] = {}


def _lean(connection_class: type[AbstractConnection]) -> type[AbstractConnection]:
    """``connection_class`` (plain, TLS or Unix socket, as the URL chose) with :class:`_LeanCommands`."""
    lean = _LEAN_CLASSES.get(connection_class)
    if lean is None:
        lean = type(f"Lean{connection_class.__name__}", (_LeanCommands, connection_class), {})
        _LEAN_CLASSES[connection_class] = lean
    return lean


class _WaitingPool(aioredis.BlockingConnectionPool):
    """A bounded pool whose callers wait for a free connection (up to ``timeout``), as
    :class:`~redis.asyncio.BlockingConnectionPool`, without its per-command cost when nobody waits.

    The blocking pool takes a condition lock and arms a timer on every checkout and release. Here a
    checkout that a connection is free for goes through the plain pool; only when the pool is
    exhausted does a caller take the blocking path, and while anyone waits there every release
    notifies, so no waiter is overtaken or left asleep.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._waiters = 0
        #: Checks the Redis version on the first connection that reaches it (:mod:`gateway.redis.gate`).
        self.gate = RedisGate("the configured Redis")

    async def get_connection(self, *args: Any, **kwargs: Any) -> AbstractConnection:
        connection = await self.checkout()
        if not self.gate.verified:
            try:
                await self.gate.verify(connection)
            except BaseException:
                await self.release(connection)
                raise
        return connection

    async def checkout(self) -> AbstractConnection:
        """A connected connection, without the version check (:meth:`get_connection` adds it)."""
        if not self._waiters and self.can_get_connection():
            try:
                return await ConnectionPool.get_connection(self)
            except MaxConnectionsError:
                pass  # taken while we waited for the pool's lock: wait like everyone else
        self._waiters += 1
        try:
            return await super().get_connection()
        finally:
            self._waiters -= 1

    def take_idle(self) -> AbstractConnection | None:
        """An idle connection for a caller that sends and reads at once (:func:`run_script`), or None.

        The plain checkout also takes a lock, publishes connection-count metrics, and polls the socket
        for unread data. Without an ``await`` between taking and marking the connection no lock is
        needed; we publish no metrics; and no connection comes back with an unread reply: redis-py
        disconnects a connection whose read failed, and so does :func:`run_script`. None when nothing is
        idle or someone already waits, so that waiters keep their turn, or while the Redis version has not
        been checked (:meth:`get_connection` does that).
        """
        if self._waiters or not self._available_connections or not self.gate.verified:
            return None
        connection = self._available_connections.pop()
        self._in_use_connections.add(connection)
        return connection

    def give_back(self, connection: AbstractConnection) -> bool:
        """Return a connection taken with :meth:`take_idle` (or checked out) without the release's metrics
        and events; False when somebody waits, and then the caller must use :meth:`release`."""
        if self._waiters or connection.should_reconnect():
            return False
        self._in_use_connections.discard(connection)
        self._available_connections.append(connection)
        return True

    async def release(self, connection: AbstractConnection) -> None:
        if self._waiters:
            await super().release(connection)
            return
        await ConnectionPool.release(self, connection)
        if self._waiters:  # someone started waiting while the release was under way
            async with self._condition:
                self._condition.notify()
