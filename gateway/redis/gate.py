"""No command of the gateway runs on a Redis whose version has not been checked.

The admission scripts need Redis 7.0 (``ZADD ... GT``, ``PEXPIRE ... GT``); an older one fails only for some
commands, under load, as 503s. So the version is read once, on the first connection that reaches Redis, before
that connection is used: at start-up normally (an old Redis is then a configuration error and ``serve``
refuses to start), or, when Redis was unreachable at start-up, whenever it first answers. The gateway starts
without the store in that case and says so once; requests get 503 meanwhile, and it says once when Redis
answers. A too-old Redis found while serving is refused like an unreachable one (503, not ready), said once
as an error, and checked again every :data:`RECHECK_SECONDS`, so that an upgrade in place is picked up.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

log = logging.getLogger("gateway.redis.client")

#: The oldest Redis the scripts run on (``ZADD ... GT`` needs 6.2, ``PEXPIRE ... GT`` 7.0).
MIN_REDIS_VERSION = (7, 0)
#: How often a Redis refused as too old is asked for its version again.
RECHECK_SECONDS = 30.0


class RedisTooOld(RedisConnectionError):
    """The Redis answers but is too old for the scripts; a connection error, so callers answer 503."""

    def __init__(self, where: str, version: str) -> None:
        self.version = version
        need = ".".join(map(str, MIN_REDIS_VERSION))
        super().__init__(f"the Redis at {where} is version {version}; the gateway needs Redis {need} or newer "
                         f"(its scripts use ZADD ... GT and PEXPIRE ... GT)")


class RedisGate:
    """The version check the store's connection pool applies until it has passed once.

    :param where: the Redis URL without its password, for messages.
    :param clock: monotonic seconds, for the re-check of a too-old Redis.
    """

    def __init__(self, where: str, *, clock: Callable[[], float] = time.monotonic,
                 recheck_seconds: float = RECHECK_SECONDS) -> None:
        self.where = where
        #: True once a new enough Redis answered; the pool then skips the gate entirely.
        self.verified = False
        self._clock = clock
        self._recheck_seconds = recheck_seconds
        self._refused: RedisTooOld | None = None
        self._refused_at = 0.0
        self._started_without = False

    def started_without_store(self, exc: BaseException) -> None:
        """Say, once, that the gateway starts although Redis cannot be reached, and what that means."""
        self._started_without = True
        log.warning("Redis at %s is unreachable (%s); starting without the store: requests get 503 until it "
                    "answers, and the gateway recovers by itself", self.where, reason_of(exc))

    async def verify(self, connection: Any, *, at_start: bool = False) -> None:
        """Check the Redis behind ``connection`` (connected, idle) unless that has been done.

        :param at_start: the start-up check, whose caller reports a refusal itself.
        :raises RedisTooOld: the Redis is too old (again, without asking it, until the re-check is due).
        :raises RedisError: Redis could not be asked; ``connection`` is then disconnected.
        """
        if self.verified:
            return
        if self._refused is not None and self._clock() < self._refused_at + self._recheck_seconds:
            raise self._refused
        try:
            version = await read_version(connection)
        except BaseException:
            await connection.disconnect()  # an unread reply must not go back to the pool
            raise
        if self.verified:  # another connection was checked meanwhile
            return
        if not new_enough(version):
            raise self._refuse(RedisTooOld(self.where, version), at_start)
        self.verified = True
        if self._started_without or self._refused is not None:
            log.info("Redis at %s answers now (version %s): the store is back, requests are served again",
                     self.where, version or "unknown")
        self._refused = None

    def _refuse(self, refusal: RedisTooOld, at_start: bool) -> RedisTooOld:
        if self._refused is None and not at_start:
            log.error("%s. Requests get 503 and /readyz reports not ready until Redis is upgraded (checked "
                      "again every %.0f s)", str(refusal)[0].upper() + str(refusal)[1:], self._recheck_seconds)
        self._refused = refusal
        self._refused_at = self._clock()
        return refusal


async def read_version(connection: Any) -> str:
    """The ``redis_version`` of ``INFO server``, read on ``connection``; empty when it does not say."""
    await connection.send_command("INFO", "server")
    reply = await connection.read_response()
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)
    for line in text.splitlines():
        if line.startswith("redis_version:"):
            return line.partition(":")[2].strip()
    return ""


def new_enough(version: str) -> bool:
    """False only for a version known to be older than :data:`MIN_REDIS_VERSION`."""
    try:
        found = tuple(int(part) for part in version.split(".")[:2])
    except ValueError:
        # A fork or a proxy with its own numbering: let it run, as the scripts will show soon enough.
        log.warning("unrecognised Redis version %r; the scripts need Redis %d.%d or newer", version,
                    *MIN_REDIS_VERSION)
        return True
    return found >= MIN_REDIS_VERSION


def reason_of(exc: BaseException) -> str:
    """Why Redis could not be reached, in a few words (``connection refused``, ``no answer in time``)."""
    cause = exc.__cause__ or exc.__context__
    if isinstance(cause, OSError) and cause.errno:
        return os.strerror(cause.errno).lower()
    if isinstance(exc, RedisTimeoutError) or isinstance(cause, TimeoutError):
        return "no answer in time"
    return str(exc).rstrip(".") or type(exc).__name__
