"""Open the Redis the gateway's shared state lives in: a real server (or one behind Sentinel, found through
:mod:`gateway.redis.sentinel`), or an embedded in-process one.

The embedded store is ``fakeredis`` with its Lua engine (lupa), so the admission scripts in
``gateway/lua`` run unchanged. It suits a single gateway process (development, a small deployment):
its state is lost on exit and is not shared with other processes.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.connection import AbstractConnection, ConnectionPool
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import MaxConnectionsError, NoScriptError, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gateway.config.errors import ConfigError
from gateway.config.redis_sentinel import is_sentinel_url
from gateway.redis.replication import ReplicaWait
from gateway.redis.gate import MIN_REDIS_VERSION, RedisGate, RedisTooOld  # noqa: F401  (the version, re-exported)

try:
    import hiredis
except ImportError:  # pragma: no cover - redis[hiredis] is a dependency; stay correct without it
    hiredis = None

log = logging.getLogger("gateway.redis.client")

#: Connections to a real Redis per gateway process; one EVALSHA per request keeps each busy briefly.
POOL_SIZE = 64
POOL_WAIT_SECONDS = 5.0
CONNECT_TIMEOUT_SECONDS = 2.0
COMMAND_TIMEOUT_SECONDS = 5.0


def redact_url(url: str) -> str:
    """Return ``url`` with any password replaced by ``***``, for logs.

    :param url: a ``redis://`` style URL, or a ``redis+sentinel://`` one (whose several hosts a URL parser
        would not take).
    """
    url = re.sub(r"([?&]sentinel_password=)[^&#]*", r"\1***", url)
    scheme, sep, rest = url.partition("://")
    netloc, slash, tail = rest.partition("/")
    credentials, at, hosts = netloc.rpartition("@")
    if not sep or not at or ":" not in credentials:
        return url
    user = credentials.partition(":")[0]
    return f"{scheme}://{user}:***@{hosts}{slash}{tail}"


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


async def run_script(client: aioredis.Redis, script: AsyncScript, keys: tuple[str, ...] | list[str],
                     args: tuple[Any, ...] | list[Any], *, wait: ReplicaWait | None = None) -> Any:
    """Run a registered script with EVALSHA, as ``script(keys=keys, args=args)`` does, for less CPU.

    On the gateway's own pool (a real Redis) this checks out a connection, sends, reads and gives it back
    directly. redis-py's ``execute_command`` wraps the same steps in a retry object (with no retries
    configured), command-name bookkeeping and metrics hooks, which together cost about a fifth of the
    admission path's CPU in the client. The behaviour kept: a health check before using a connection
    idle for long (in ``send_command``), a connection that failed mid-command is disconnected before it
    goes back to the pool, a reply error is raised (the connection stays usable), and after a SCRIPT FLUSH
    or a Redis restart the script is loaded again once. Like redis-py with the retries we configure (none),
    a failed command is not repeated: the scripts are not idempotent and the caller answers 503.
    Any other client (the embedded store) takes redis-py's path.

    :param wait: after the script, ``WAIT`` on the same connection for its replicas (a real Redis only;
        :mod:`gateway.redis.replication`); a script that raised is not waited for.
    """
    pool = client.connection_pool
    if not isinstance(pool, _WaitingPool):
        return await script(keys=keys, args=args)
    connection = pool.take_idle()
    if connection is None:
        connection = await pool.get_connection()
    elif not connection.is_connected:
        try:
            await connection.connect()
            if not pool.gate.verified:  # the connect found a new primary (Sentinel): check it first
                await pool.gate.verify(connection)
        except BaseException:
            await pool.release(connection)
            raise
    try:
        try:
            reply = await _evalsha(connection, script, keys, args)
            if wait is not None:
                await connection.send_command("WAIT", wait.replicas, wait.timeout_ms)
                wait.acknowledged(int(await connection.read_response()))
            return reply
        except (RedisConnectionError, RedisTimeoutError) as exc:
            await connection.disconnect(error=exc)
            raise
    finally:
        if not pool.give_back(connection):
            await pool.release(connection)


async def _evalsha(connection: AbstractConnection, script: AsyncScript, keys: tuple[str, ...] | list[str],
                   args: tuple[Any, ...] | list[Any]) -> Any:
    """The script's reply; loaded again once when Redis does not have it (a restart, a promoted replica)."""
    try:
        await connection.send_command("EVALSHA", script.sha, len(keys), *keys, *args)
        return await connection.read_response()
    except NoScriptError:
        await connection.send_command("SCRIPT", "LOAD", script.script)
        loaded = await connection.read_response()
        script.sha = loaded.decode() if isinstance(loaded, bytes) else loaded
        await connection.send_command("EVALSHA", script.sha, len(keys), *keys, *args)
        return await connection.read_response()


async def check_redis_version(client: aioredis.Redis) -> None:
    """Refuse a Redis too old for the scripts, at start-up rather than as 503s under load (an old Redis
    answers ``PEXPIRE ... GT`` with a syntax error, and only for a client's second concurrent request).

    A Redis that cannot be reached now is not an error here: the gateway says so once and starts without
    the store (503s, not ready); the version is checked when Redis first answers (:mod:`gateway.redis.gate`).
    :raises ConfigError: when the Redis is older than :data:`MIN_REDIS_VERSION`.
    """
    pool = client.connection_pool
    if not isinstance(pool, _WaitingPool):
        return  # the embedded store runs whatever the installed fakeredis emulates
    try:
        connection = await pool.checkout()
    except RedisError as exc:
        pool.gate.started_without_store(exc)
        return
    try:
        await pool.gate.verify(connection, at_start=True)
    except RedisTooOld as exc:
        raise ConfigError([f"RedisConnectionString: {exc}"]) from None
    except RedisError as exc:
        pool.gate.started_without_store(exc)
    finally:
        await pool.release(connection)


def open_redis(url: str | None, *, pool_size: int = POOL_SIZE) -> aioredis.Redis:
    """Create the client for the shared store; no connection is made until first use.

    :param url: ``redis://``, ``rediss://`` or ``unix://`` URL of a real Redis, a ``redis+sentinel://`` URL of
        one that Sentinel watches (:mod:`gateway.redis.sentinel`), or ``None`` for the embedded in-process store.
    :param pool_size: most connections to a real Redis (callers beyond it wait for a free one).
    :raises ValueError: if the URL is malformed.
    :raises RuntimeError: if the embedded store is asked for but its Lua engine is not installed.
    """
    if is_sentinel_url(url):
        from gateway.redis.sentinel import open_sentinel_redis  # it builds on this module's pool

        return open_sentinel_redis(url, pool_size=pool_size)  # type: ignore[arg-type]
    if url:
        # A bounded pool that makes callers wait for a free connection instead of failing with "Too many
        # connections" under a burst; timeouts so that a hung Redis turns into a 503 rather than a hang.
        pool = _WaitingPool.from_url(
            url,
            max_connections=pool_size,
            timeout=POOL_WAIT_SECONDS,
            socket_connect_timeout=CONNECT_TIMEOUT_SECONDS,
            socket_timeout=COMMAND_TIMEOUT_SECONDS,
            health_check_interval=30,
        )
        pool.connection_class = _lean(pool.connection_class)  # no connection exists yet
        pool.gate = RedisGate(redact_url(url))
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
