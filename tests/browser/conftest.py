"""Fixtures of the browser tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from gateway.redis.client import open_redis


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    """The gateway's own client (as ``serve`` builds it) on the flushed test database."""
    client = open_redis(redis_url)
    yield client
    await client.aclose()
