"""Fixtures of the gateway's tests: a plain client on the shared test Redis, and a Redis of a test's own."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio as aioredis

from tests.harness.redis_process import RedisProcess


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    """A plain redis-py client on the flushed test database (not the gateway's tuned one)."""
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
def redis_proc() -> Iterator[RedisProcess]:
    """A ``redis-server`` of the test's own, which it may stop, freeze or restart; nothing persisted."""
    server = RedisProcess()
    server.start()
    yield server
    server.close()
