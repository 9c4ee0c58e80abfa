"""Fixtures shared by every test package.

``redis_server`` is one real ``redis-server`` for the whole run; ``redis_url`` hands each test a
flushed database on it. Tests that need to stop Redis mid-run make their own ``RedisProcess``.
"""

from __future__ import annotations

import fakeredis
import pytest
import redis

from gateway.redis.client import open_redis
from tests.harness.fake_clock import FakeClock
from tests.harness.redis_process import RedisProcess


@pytest.fixture(scope="session")
def redis_server():
    server = RedisProcess()
    server.start()
    yield server
    server.close()


@pytest.fixture
def redis_url(redis_server: RedisProcess) -> str:
    client = redis.Redis.from_url(redis_server.url)
    try:
        client.flushall()
    finally:
        client.close()
    return redis_server.url


@pytest.fixture(params=[pytest.param("redis", marks=pytest.mark.redis), "embedded"])
async def make_client(request):
    """Factory of store clients that all see one store: the real server, or one embedded store.

    Tests that run once per backend use it; several clients play several gateway processes.
    """
    url = request.getfixturevalue("redis_url") if request.param == "redis" else None
    clients = []

    def make():
        if url is not None or not clients:
            client = open_redis(url)
        else:
            server = clients[0].connection_pool.connection_kwargs["server"]
            client = fakeredis.FakeAsyncRedis(server=server)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()


@pytest.fixture
def store_client(make_client):
    """One store client, on each backend."""
    return make_client()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()
