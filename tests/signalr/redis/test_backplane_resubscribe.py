"""The backplane says when it is subscribed again after losing its connection: messages published in the
gap are gone (pub/sub delivers at most once), so a hub resends what it promised from its own state.

Both ways a subscription comes back are covered: the listener sees the failure and reconnects (Redis was
down), and redis-py reconnects by itself inside its one retry, which the listener only notices from
subscribe confirmations nobody asked for.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
import redis.asyncio as aioredis

from signalr.redis.lifetime import RedisHubLifetimeManager
from tests.harness.redis_process import RedisProcess

pytestmark = pytest.mark.redis

TIMEOUT = 10.0


@pytest.fixture
def own_redis() -> Iterator[RedisProcess]:
    server = RedisProcess()  # its own: these tests cut and restart it
    server.start()
    try:
        yield server
    finally:
        server.close()


class Resubscriptions:
    def __init__(self, manager: RedisHubLifetimeManager) -> None:
        self.count = 0
        self.happened = asyncio.Event()
        manager.on_resubscribed(self._called)

    def _called(self) -> None:
        self.count += 1
        self.happened.set()


async def _manager(server: RedisProcess) -> tuple[RedisHubLifetimeManager, Resubscriptions]:
    manager = RedisHubLifetimeManager(server.url, prefix="test:signalr", hub_name="resub", ack_timeout=2.0,
                                      reconnect_initial_delay=0.05, reconnect_max_delay=0.2)
    seen = Resubscriptions(manager)
    await manager.start()
    await manager.wait_online(TIMEOUT)
    return manager, seen


async def test_the_first_subscription_is_not_a_resubscription(own_redis: RedisProcess) -> None:
    manager, seen = await _manager(own_redis)
    try:
        # A group subscribed later is confirmed too, asked for: no resync either.
        await manager._subscriptions.sync((manager.channels.group("g"),))
        assert seen.count == 0
    finally:
        await manager.close()


async def test_a_connection_made_again_by_redis_py_itself_is_reported(own_redis: RedisProcess) -> None:
    manager, seen = await _manager(own_redis)
    killer = aioredis.Redis.from_url(own_redis.url)
    try:
        await manager._subscriptions.sync((manager.channels.group("g"),))  # several channels: one report
        assert await killer.execute_command("CLIENT", "KILL", "TYPE", "pubsub") == 1
        await asyncio.wait_for(seen.happened.wait(), TIMEOUT)
        assert manager.online
        assert seen.count == 1
    finally:
        await killer.aclose()
        await manager.close()


async def test_a_subscription_back_after_redis_was_down_is_reported(own_redis: RedisProcess) -> None:
    manager, seen = await _manager(own_redis)
    try:
        own_redis.kill()
        await manager.wait_offline(TIMEOUT)
        assert seen.count == 0
        own_redis.start()  # the same port, empty
        await asyncio.wait_for(seen.happened.wait(), TIMEOUT)
        assert manager.online
        assert seen.count == 1
    finally:
        await manager.close()
