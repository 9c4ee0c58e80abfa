"""Noticing that the store was reset: Redis restarted empty, was flushed, or failed over to an empty copy.

A reset loses every queue entry, lease and presence record at once, and nothing in Redis says so: the keys
are simply gone. The gateway would carry on, its waiting clients holding open connections for requests
that no longer exist, and (with a fixed cap) admitting as many new sessions as the cap allows while the
lost ones still run on the platform. So each deployment writes an *epoch*: a random token under one key,
set once by whichever process starts first. Every process remembers the token it saw and checks it every
``interval`` seconds; a missing or different token means the store it knew is gone. The process then says
so once (an ERROR), adopts the new epoch (creating it if nobody has yet) and runs its reset handlers: the
hub tells its registered clients whose requests are gone, and the capacity sync reads the platform's usage
again at once. With Redis persistence (``appendonly yes``) a restart keeps the epoch and nothing is lost.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from gateway.background import Periodic

log = logging.getLogger("gateway.admission.epoch")

#: Seconds between two checks; clients whose requests were lost hear it within about this long.
CHECK_INTERVAL_SECONDS = 1.0

ResetHandler = Callable[[], Awaitable[None]]


def _text(value: bytes | str | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


class StoreEpoch:
    """The deployment's epoch token in the store, and whether it is still the one this process knew.

    :param redis: the gateway's store client.
    :param key: the epoch's key (under the gateway's key prefix).
    """

    def __init__(self, redis: aioredis.Redis, *, key: str) -> None:
        self._redis = redis
        self.key = key
        #: The token this process knows, or None until the store first answered.
        self.known: str | None = None

    async def _adopt(self) -> str:
        # SET NX then GET: whichever process writes first, every process ends up with the same token.
        await self._redis.set(self.key, secrets.token_hex(16), nx=True)
        token = _text(await self._redis.get(self.key))
        if token is None:  # flushed again between the two commands: take the next check's word for it
            raise RedisError("the store epoch vanished while it was being set")
        return token

    async def check(self) -> bool:
        """Compare the store's epoch with the known one; True when the store was reset since.

        The first successful check only learns the epoch (or creates it). A reset is adopted before this
        returns, so it is reported once.

        :raises RedisError: when the store cannot be reached (nothing is concluded then).
        """
        current = _text(await self._redis.get(self.key))
        if current is not None and current == self.known:
            return False
        if current is None:
            current = await self._adopt()
        first, self.known = self.known is None, current
        return not first


class EpochWatcher:
    """Checks the epoch on a timer and runs the reset handlers when it changed.

    :param epoch: the store's epoch.
    :param handlers: awaited in order after a reset; one failing does not stop the others.
    :param interval: seconds between checks.
    :param on_store_error: told when a timed check could not reach the store (counted as a Redis error).
    """

    def __init__(self, epoch: StoreEpoch, *, handlers: list[ResetHandler] | None = None,
                 interval: float = CHECK_INTERVAL_SECONDS, on_store_error: Callable[[], None] = lambda: None) -> None:
        self.epoch = epoch
        self._on_store_error = on_store_error
        self.handlers: list[ResetHandler] = list(handlers or [])
        self._loop = Periodic(self._check_quietly, interval=interval, name="store epoch check", log=log)
        self._check: asyncio.Future[bool] | None = None

    def on_reset(self, handler: ResetHandler) -> None:
        self.handlers.append(handler)

    async def start(self) -> None:
        """Learn the epoch (when the store answers) before anything is admitted, then watch it."""
        try:
            await self.check_once()
        except RedisError:
            pass  # the store is down at start-up: the first check that reaches it learns the epoch
        self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()

    async def check_now(self) -> None:
        """Check at once, because a call was refused for an epoch it did not know; callers that ask
        while a check runs share it, so a burst of refused calls costs one check.

        :raises RedisError: when the store cannot be reached.
        """
        if self._check is None or self._check.done():
            self._check = asyncio.ensure_future(self.check_once())
        # Shielded: one caller giving up (its request was cancelled) must not cancel the others' check.
        await asyncio.shield(self._check)

    async def check_once(self) -> bool:
        """One check; runs the handlers and returns True when the store was reset."""
        if not await self.epoch.check():
            return False
        log.error("the store (Redis at its configured address) was reset: every queue entry, slot and "
                  "presence record it held is gone. Waiting clients of this process whose requests were "
                  "lost are told so; admission carries on with the sessions the store knows of. Enable "
                  "Redis persistence (appendonly yes) to keep the queue across restarts.")
        for handler in self.handlers:
            try:
                await handler()
            except Exception:  # noqa: BLE001 - the other handlers must still run
                log.exception("a store-reset handler failed")
        return True

    async def _check_quietly(self) -> None:
        try:
            await self.check_once()
        except RedisError:
            # Unreachable: nothing to conclude; outages are logged by the calls that need the store.
            self._on_store_error()
