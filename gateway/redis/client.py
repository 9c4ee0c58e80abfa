"""Open the Redis the gateway's shared state lives in: a real server (or one behind Sentinel, found through
:mod:`gateway.redis.sentinel`, or the node of a Redis Cluster that owns the gateway's slot, found through
:mod:`gateway.redis.cluster`), or an embedded in-process one.

The embedded store is ``fakeredis`` with its Lua engine (lupa), so the admission scripts in
``gateway/lua`` run unchanged. It suits a single gateway process (development, a small deployment):
its state is lost on exit and is not shared with other processes.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.connection import AbstractConnection
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gateway.config.errors import ConfigError
from gateway.config.redis_cluster import is_cluster_url
from gateway.config.redis_sentinel import is_sentinel_url
from gateway.redis.gate import MIN_REDIS_VERSION, RedisGate, RedisTooOld  # noqa: F401  (the version, re-exported)
from gateway.redis.pool import (  # noqa: F401  (the timeouts, re-exported)
    COMMAND_TIMEOUT_SECONDS,
    CONNECT_TIMEOUT_SECONDS,
    POOL_SIZE,
    POOL_WAIT_SECONDS,
    _lean,
    _WaitingPool,
)
from gateway.redis.replication import ReplicaWait

log = logging.getLogger("gateway.redis.client")

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


def open_redis(url: str | None, *, pool_size: int = POOL_SIZE, hash_tag: str | None = None) -> aioredis.Redis:
    """Create the client for the shared store; no connection is made until first use.

    :param url: ``redis://``, ``rediss://`` or ``unix://`` URL of a real Redis, a ``redis+sentinel://`` URL of
        one that Sentinel watches (:mod:`gateway.redis.sentinel`), a ``redis+cluster://`` URL of a Redis Cluster
        (:mod:`gateway.redis.cluster`), or ``None`` for the embedded in-process store.
    :param pool_size: most connections to a real Redis (callers beyond it wait for a free one).
    :param hash_tag: on a Redis Cluster, the hash tag every key of the deployment carries: the client talks
        to the primary owning its slot (:attr:`gateway.admission.keys.KeySpace.hash_tag`).
    :raises ValueError: if the URL is malformed, or names a cluster without a ``hash_tag``.
    :raises RuntimeError: if the embedded store is asked for but its Lua engine is not installed.
    """
    if is_cluster_url(url):
        if not hash_tag:
            raise ValueError("a Redis Cluster needs the hash tag of the gateway's keys (their slot's owner serves them)")
        from gateway.redis.cluster import (
            open_cluster_redis,  # it builds on this module's pool
        )

        return open_cluster_redis(url, hash_tag=hash_tag, pool_size=pool_size)  # type: ignore[arg-type]
    if is_sentinel_url(url):
        from gateway.redis.sentinel import (
            open_sentinel_redis,  # it builds on this module's pool
        )

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
