"""Fixtures of the gateway's tests: gateway stacks on the test's store, a plain client on the shared test
Redis, and a Redis of a test's own."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from tests.harness.redis_process import RedisProcess
from tests.harness.stack import Stack, start_stack


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


@pytest.fixture
async def stack_factory(store_client) -> AsyncIterator[Callable[..., Awaitable[Stack]]]:
    """Starts gateway stacks (``start_stack`` arguments) on the test's store, on each backend; all are
    closed after the test."""
    stacks: list[Stack] = []

    async def make(**kwargs: Any) -> Stack:
        stack = await start_stack(store_client, **kwargs)
        stacks.append(stack)
        return stack

    yield make
    for stack in stacks:
        await stack.close()
