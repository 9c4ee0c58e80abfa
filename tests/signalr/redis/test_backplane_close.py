"""Closing the Redis backplane while a publish is under way: the publish finishes, then the clients close.

Cut off by the clients closing, a publish would retry once on its own (the publisher's retry policy) on a
fresh connection that nobody closes any more: a socket leaked at every shutdown that met a send, seen as an
"unclosed Connection" warning after a Sentinel failover test.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from signalr.redis.lifetime import RedisHubLifetimeManager
from tests.harness.redis_process import RedisProcess

pytestmark = pytest.mark.redis


@pytest.fixture
def own_redis() -> Iterator[RedisProcess]:
    server = RedisProcess()  # its own: this test freezes it
    server.start()
    try:
        yield server
    finally:
        server.close()


async def _until(condition, what: str) -> None:  # type: ignore[no-untyped-def]
    for _ in range(400):
        if condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"{what} did not happen")


async def test_close_waits_for_a_publish_under_way_and_leaves_no_connection_open(own_redis: RedisProcess) -> None:
    manager = RedisHubLifetimeManager(own_redis.url, prefix="test:signalr", hub_name="close", ack_timeout=3.0)
    await manager.start()
    publisher = manager._publisher
    assert publisher is not None
    own_redis.pause()  # the publish below is sent and waits for its reply
    try:
        sending = asyncio.create_task(manager.send_group("g", "Hello", ("world",)))
        await _until(lambda: manager._publishing == 1, "the publish under way")
        closing = asyncio.create_task(manager.close())
        done, _ = await asyncio.wait({closing}, timeout=0.3)
        assert not done, "close() did not wait for the publish under way"
    finally:
        own_redis.resume()
    await asyncio.wait_for(sending, 5)
    await asyncio.wait_for(closing, 5)
    pool = publisher.connection_pool
    assert not any(c.is_connected for c in (*pool._available_connections, *pool._in_use_connections))


async def test_a_send_after_close_began_reaches_local_connections_only(own_redis: RedisProcess) -> None:
    manager = RedisHubLifetimeManager(own_redis.url, prefix="test:signalr", hub_name="close", ack_timeout=3.0)
    await manager.start()
    await manager.close()
    # No error for a hub whose background delivery runs into the shutdown, and nothing sent to Redis.
    await manager.send_group("g", "Hello", ("world",))
    assert manager._publisher is None
