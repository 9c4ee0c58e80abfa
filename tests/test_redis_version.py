"""The gateway refuses, at start-up, a Redis older than its scripts need (7.0: ``PEXPIRE ... GT``).

No Redis 6 is installed here, so the old server is the real one with its ``INFO`` answer rewritten: the
check reads nothing else.
"""

from __future__ import annotations

import pytest

from gateway.errors import ConfigError
from gateway.store import MIN_REDIS_VERSION, check_redis_version, open_redis

pytestmark = pytest.mark.redis


@pytest.fixture
async def client(redis_url):
    made = open_redis(redis_url)
    yield made
    await made.aclose()


async def test_the_installed_redis_is_new_enough(client):
    info = await client.info("server")
    assert tuple(int(p) for p in info["redis_version"].split(".")[:2]) >= MIN_REDIS_VERSION
    await check_redis_version(client)


@pytest.mark.parametrize("version", ["6.2.14", "5.0.7"])
async def test_an_older_redis_is_a_configuration_error_that_says_what_is_needed(client, monkeypatch, version):
    real = client.info

    async def old_info(*args, **kwargs):
        answer = await real(*args, **kwargs)
        return {**answer, "redis_version": version}

    monkeypatch.setattr(client, "info", old_info)
    with pytest.raises(ConfigError) as caught:
        await check_redis_version(client)
    [problem] = caught.value.problems
    assert f"version {version}" in problem and "Redis 7.0 or newer" in problem


async def test_a_redis_that_cannot_be_reached_now_does_not_stop_the_start(caplog):
    unreachable = open_redis("redis://127.0.0.1:1/0")
    try:
        await check_redis_version(unreachable)
    finally:
        await unreachable.aclose()
    assert "could not read the Redis version" in caplog.text


async def test_the_embedded_store_is_not_asked():
    embedded = open_redis(None)
    try:
        await check_redis_version(embedded)  # fakeredis: nothing to refuse
    finally:
        await embedded.aclose()

