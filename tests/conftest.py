"""Fixtures shared by every test package.

``redis_server`` is one real ``redis-server`` for the whole run; ``redis_url`` hands each test a
flushed database on it. Tests that need to stop Redis mid-run make their own ``RedisProcess``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import redis

sys.path.insert(0, str(Path(__file__).resolve().parent))

from redis_process import RedisProcess  # noqa: E402


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
