"""The store epoch: learned once, a reset (flush or empty restart) reported exactly once per process."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from gateway.epoch import EpochWatcher, StoreEpoch

pytestmark = pytest.mark.redis


@pytest.fixture
async def redis_client(redis_url: str):
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


async def test_first_check_learns_and_a_flush_is_reported_once_by_every_process(redis_client) -> None:
    calls: list[str] = []

    async def handler_a() -> None:
        calls.append("a")

    async def handler_b() -> None:
        calls.append("b")

    a = EpochWatcher(StoreEpoch(redis_client, key="t:epoch"), handlers=[handler_a])
    b = EpochWatcher(StoreEpoch(redis_client, key="t:epoch"), handlers=[handler_b])
    assert await a.check_once() is False
    assert await b.check_once() is False
    assert a.epoch.known == b.epoch.known is not None
    assert await a.check_once() is False

    await redis_client.flushall()
    assert await b.check_once() is True  # b notices first and writes the new epoch
    assert await a.check_once() is True  # a finds a token it does not know
    assert a.epoch.known == b.epoch.known
    assert await a.check_once() is False and await b.check_once() is False
    assert calls == ["b", "a"]


async def test_a_failing_handler_does_not_stop_the_others(redis_client) -> None:
    ran: list[str] = []

    async def broken() -> None:
        raise RuntimeError("bug")

    async def fine() -> None:
        ran.append("fine")

    watcher = EpochWatcher(StoreEpoch(redis_client, key="t:epoch"), handlers=[broken, fine])
    await watcher.check_once()
    await redis_client.delete("t:epoch")
    assert await watcher.check_once() is True
    assert ran == ["fine"]
